"""Two sweep processes ("workers") running the same command share one study on SQLite: together they run
exactly n_trials trials with unique numbers and run folders, and the trial of a worker that dies is
marked failed by the other, which goes on.

Trials wait at a gate (``sweep_callbacks.WaitForFile``, only while CNN_TEST_WAIT_FOR is set) until
the test opens it, so both workers are certainly running at once, whatever the machine's load.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
from tests.conftest import TESTS, TINY

optuna.logging.set_verbosity(optuna.logging.WARNING)

GATED = ["-m", "hparams_search=random_log", *TINY, "trainer.max_epochs=1", "hydra.sweeper.study_name=shared",
         "+callbacks.die._target_=crash_callbacks.DieAtEpochStart", "+callbacks.die.epoch=0",
         "+callbacks.gate._target_=sweep_callbacks.WaitForFile"]


def _worker(cwd: Path, n_trials: int, **env: str) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(TESTS / "helpers"), **env}
    return subprocess.Popen([sys.executable, "-m", "experiments.train", *GATED, f"hydra.sweeper.n_trials={n_trials}"],
                            cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _running(db: Path) -> int:
    """How many trials are RUNNING now (0 before the study exists). Read-only SQL: opening an Optuna
    storage here would create its tables, racing the worker that is creating them."""
    if not db.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as connection:
            return connection.execute("select count(*) from trials where state = 'RUNNING'").fetchone()[0]
    except sqlite3.OperationalError:  # no tables yet, or busy
        return 0


def _wait_until(condition, timeout_s: float, what: str, *workers: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        finished = [w for w in workers if w.poll() is not None]
        assert not finished, f"a worker ended early while waiting for {what}:\n{finished[0].stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _finish(worker: subprocess.Popen, timeout_s: float = 240) -> tuple[int, str]:
    try:
        output, _ = worker.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        worker.kill()
        output, _ = worker.communicate()
    return worker.returncode, output


def _sweep(workdir: Path) -> tuple[Path, optuna.Study]:
    sweep = workdir / "outputs" / "sweeps" / "shared"
    return sweep, optuna.load_study(study_name="shared", storage=f"sqlite:///{sweep / 'optuna.db'}")


def _trial_folders(sweep: Path) -> list[str]:
    return sorted((p.name for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()),
                  key=lambda name: int(name.split("_")[0]))


def test_two_workers_share_one_study_and_run_exactly_n_trials(tmp_path):
    gate = tmp_path / "go"
    db = tmp_path / "outputs" / "sweeps" / "shared" / "optuna.db"
    first = _worker(tmp_path, 6, CNN_TEST_WAIT_FOR=str(gate))
    second = _worker(tmp_path, 6, CNN_TEST_WAIT_FOR=str(gate))
    try:
        _wait_until(lambda: _running(db) == 2, 180, "one gated trial from each worker", first, second)
    finally:
        gate.touch()
    results = [_finish(first), _finish(second)]
    for code, output in results:
        assert code == 0, output[-3000:]
    sweep, study = _sweep(tmp_path)
    trials = study.trials
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    owners = {t.user_attrs["worker"]["pid"] for t in trials}
    assert owners == {first.pid, second.pid}, "both workers ran trials"
    assert _trial_folders(sweep) == [f"{n}_lenet5-synthetic" for n in range(6)], "one folder per trial"
    assert all(t.user_attrs["run_dir"].endswith(f"/{t.number}_lenet5-synthetic") for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6


def test_the_trial_of_a_dead_worker_is_failed_and_the_other_goes_on(tmp_path):
    gate = tmp_path / "go"
    db = tmp_path / "outputs" / "sweeps" / "shared" / "optuna.db"
    survivor = _worker(tmp_path, 4, CNN_TEST_WAIT_FOR=str(gate))
    try:
        _wait_until(lambda: _running(db) == 1, 180, "the survivor's first trial", survivor)
        doomed = _worker(tmp_path, 4, CNN_TEST_DIE="1")  # dies (os._exit) when its first trial starts training
        code, output = _finish(doomed, 180)
        assert code == 17, output[-3000:]
        assert _running(db) == 2, "the dead worker's trial is still RUNNING until someone notices"
    finally:
        gate.touch()
    code, output = _finish(survivor)
    assert code == 0, output[-3000:]
    sweep, study = _sweep(tmp_path)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                      optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.COMPLETE]
    dead = study.trials[1]
    assert dead.user_attrs["worker"]["pid"] == doomed.pid
    assert dead.user_attrs["failure"].startswith("interrupted: its worker") and "died" in dead.user_attrs["failure"]
    assert {t.user_attrs["worker"]["pid"] for t in study.trials if t.number != 1} == {survivor.pid}
    assert _trial_folders(sweep) == [f"{n}_lenet5-synthetic" for n in range(4)]
    assert "Trial 1 marked failed" in output
