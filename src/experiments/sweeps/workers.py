"""Many sweep processes ("workers") on one study: who runs which trial, and what happens when one dies.

Any number of processes may run the same sweep command against the same storage; together they run
exactly ``n_trials`` trials. Three pieces make that safe:

* **one asker at a time:** counting the study's trials and asking Optuna for new ones happens under
  an exclusive ``flock`` on a lock file (beside a SQLite database, or in the sweep folder for a
  database server), so two workers never both take the last trial; the lock is held for
  milliseconds, never while a trial trains;
* **an owner per trial:** every trial a worker asks for carries ``worker`` = host, pid and the pid's
  start time (user attributes, so the dashboard shows them), and a ``heartbeat`` time that the
  worker refreshes while the trial runs;
* **orphans are failed:** before asking, a worker marks FAIL every RUNNING trial whose owner is gone:
  on this host, a pid that no longer exists (or was reused); elsewhere, a heartbeat older than the
  grace period. The trial's ``failure`` attribute says so, and the next trials go on. A trial from a
  study written before owners were recorded counts as orphaned when a sweep starts, as it always did.

Kept small and free of Hydra: the sweeper calls :func:`recover_orphans`, :func:`claim` and uses
:class:`Heartbeat` and :func:`asking_lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

log = logging.getLogger(__name__)

WORKER_ATTR = "worker"
HEARTBEAT_ATTR = "heartbeat"
FAILURE_ATTR = "failure"
LOCK_FILE = "optuna.lock"


def me() -> dict[str, Any]:
    """This process as a trial's owner: host, pid and the pid's start time (so a reused pid is not us)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _process_start(os.getpid())}


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in parentheses may hold spaces


def is_alive(owner: dict[str, Any]) -> bool:
    """Whether the owner process (on this host) still runs."""
    pid = int(owner.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    started = owner.get("started")
    return started is None or _process_start(pid) in (None, started)


def claim(study: optuna.Study, trial_id: int) -> None:
    """Mark a trial as this worker's (call under :func:`asking_lock`, right after asking)."""
    study._storage.set_trial_user_attr(trial_id, WORKER_ATTR, me())
    study._storage.set_trial_user_attr(trial_id, HEARTBEAT_ATTR, round(time.time(), 1))


def orphan_reason(trial: optuna.trial.FrozenTrial, grace_s: float, now: float | None = None,
                  host: str | None = None) -> str | None:
    """Why a RUNNING trial has no live owner any more, else None."""
    owner = trial.user_attrs.get(WORKER_ATTR)
    if not isinstance(owner, dict):
        return "interrupted: still running when the sweep was restarted (no owner recorded)"
    where = f"{owner.get('host')}:{owner.get('pid')}"
    if owner.get("host") == (host or socket.gethostname()):
        return None if is_alive(owner) else f"interrupted: its worker {where} died while the trial was running"
    beat = trial.user_attrs.get(HEARTBEAT_ATTR)
    age = (now or time.time()) - float(beat) if isinstance(beat, (int, float)) else float("inf")
    if age > grace_s:
        return f"interrupted: no heartbeat from its worker {where} for {age:.0f} s (grace {grace_s:.0f} s)"
    return None


def recover_orphans(study: optuna.Study, grace_s: float) -> list[int]:
    """Mark every orphaned RUNNING trial FAIL with its reason; returns their numbers."""
    storage = study._storage
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = orphan_reason(trial, grace_s)
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, FAILURE_ATTR, reason)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its owner finished it after all
        log.warning(f"Trial {trial.number} marked failed: {reason}")
        failed.append(trial.number)
    return failed


@contextlib.contextmanager
def asking_lock(lock_file: Path | None) -> Iterator[None]:
    """Exclusive across processes (and hosts sharing the folder over NFS); a no-op for ``None``."""
    if lock_file is None:
        yield
        return
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Heartbeat:
    """A daemon thread refreshing the ``heartbeat`` of the trials this worker is running."""

    def __init__(self, study: optuna.Study, interval_s: float) -> None:
        self._storage = study._storage
        self._interval = interval_s
        self._trial_ids: set[int] = set()
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweep-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + 5)

    def track(self, trial_ids: list[int]) -> None:
        with self._guard:
            self._trial_ids = set(trial_ids)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._guard:
                trial_ids = sorted(self._trial_ids)
            for trial_id in trial_ids:
                try:
                    self._storage.set_trial_user_attr(trial_id, HEARTBEAT_ATTR, round(time.time(), 1))
                except optuna.exceptions.UpdateFinishedTrialError:
                    pass  # finished (or failed by another worker) meanwhile
                except Exception as error:  # a busy database must not kill the worker
                    log.warning(f"Could not record the heartbeat of trial id {trial_id}: {error}")
