"""The sweeper's pieces without training: settings refused before writing, the search-space syntax, the
trial link through Hydra's override grammar, and how orphaned trials of dead workers are recognised."""

from __future__ import annotations

import math
import os
import time

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from tests.conftest import TINY, assert_refused, run_cli

from experiments.core.errors import UserError
from experiments.sweeps import space, workers
from experiments.sweeps.trial_link import TrialLink

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("n_trials", ["0", "-3"])
def test_non_positive_n_trials_is_refused_before_anything_is_written(tmp_path, n_trials):
    result = run_cli("experiments.train", "-m", "hparams_search=random_log", *TINY, f"hydra.sweeper.n_trials={n_trials}",
                     cwd=tmp_path, timeout=120)
    assert_refused(result, ["hydra.sweeper.n_trials", "at least 1"])
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 4, "one paragraph"
    assert list(tmp_path.rglob("*")) == [], "no sweep folder, no optuna.db"


@pytest.mark.parametrize(("args", "words"), [
    (["hydra.sweeper.storage=null", "hydra/sweeper/pruner=median", "hydra/launcher=joblib"],
     ["hydra.sweeper.storage", "JoblibLauncher", "cannot report", "pruner=none"]),
    (["+hydra.sweeper.params.optimizer.no_such_key='interval(0.1, 1)'"],
     ["do not compose", "optimizer.no_such_key", "'+'"]),
    (["hydra/sweeper/sampler=grid"], ["continuous range", "choice(a, b, c)"]),
    (["hydra.sweeper.direction=upward"], ["hydra.sweeper.direction", "minimize or maximize"]),
], ids=["pruning-in-memory-joblib", "unknown-key", "grid-over-interval", "direction"])
def test_sweeps_that_cannot_work_are_refused_before_writing(tmp_path, args, words):
    result = run_cli("experiments.train", "-m", "hparams_search=random_log", *TINY, "hydra.sweeper.n_trials=1", *args,
                     cwd=tmp_path, timeout=120)
    assert_refused(result, words)
    assert list(tmp_path.rglob("*")) == []


def test_the_override_syntax_maps_to_optuna_distributions():
    parsed = space.parse(["a=tag(log, interval(1e-4, 1.0))", "b=interval(0, 1)", "c=choice(x, 'y z')",
                          "d=range(1, 5)", "e=range(0.1, 0.5, 0.1)", "f=3,1,2", "g=shuffle(range(3))",
                          "+h=7", "~i"])
    d = parsed.distributions
    assert d["a"] == FloatDistribution(1e-4, 1.0, log=True) and d["b"] == FloatDistribution(0.0, 1.0)
    assert d["c"] == CategoricalDistribution(["x", "y z"])
    assert d["d"] == IntDistribution(1, 4), "Hydra's range excludes its stop"
    assert d["e"] == FloatDistribution(0.1, 0.4, step=0.1)
    assert d["f"] == CategoricalDistribution([3, 1, 2]) and isinstance(d["g"], CategoricalDistribution)
    assert parsed.fixed == {"+h": "7", "~i": None}
    overrides = parsed.overrides_for({"a": 1e-3, "b": 0.5, "c": "y z", "d": 2, "e": 0.2, "f": 3, "g": 0})
    assert overrides[:3] == ["a=0.001", "b=0.5", "c='y z'"] and overrides[-2:] == ["+h=7", "~i"]
    back = OverridesParser.create().parse_overrides(overrides)
    assert [o.value() for o in back][:3] == [0.001, 0.5, "y z"], "values parse back to what was drawn"


def test_a_later_declaration_of_a_key_wins():
    parsed = space.parse(["optimizer.lr=tag(log, interval(1e-4, 1.0))", "optimizer.lr=0.1"])
    assert parsed.distributions == {} and parsed.fixed == {"optimizer.lr": "0.1"}


def test_grid_values_and_refusals():
    grid = space.parse(["a=choice(1, 2)", "b=range(0.1, 0.35, 0.1)", "c=range(0, 10, 5)"])
    assert grid.grid() == {"a": [1, 2], "b": [0.1, 0.2, 0.3], "c": [0, 5]} and grid.grid_size() == 12
    with pytest.raises(UserError, match="continuous range"):
        space.parse(["a=interval(0, 1)"]).grid()
    with pytest.raises(UserError, match="0 < a < b"):
        space.parse(["a=tag(log, interval(0, 1))"])
    with pytest.raises(UserError, match="not valid override syntax"):
        space.parse(["a=interval(0, 1"])


def test_the_trial_link_survives_hydras_override_grammar():
    link = TrialLink("lenet5-synthetic-random_log-abc123", "sqlite:////tmp/a b/it's,here=1/optuna.db", 7, 3)
    parsed = OverridesParser.create().parse_overrides(link.env_overrides())
    values = {o.key_or_group.rsplit(".", 1)[-1]: o.value() for o in parsed}
    assert values == {"CNN_SWEEP_STUDY": link.study, "CNN_SWEEP_STORAGE": link.storage, "CNN_SWEEP_TRIAL_ID": 7,
                      "CNN_SWEEP_TRIAL": 3}
    in_memory = OverridesParser.create().parse_overrides(TrialLink("s", None, 0, 0).env_overrides())
    assert [o.value() for o in in_memory][1] == ""


def _running_trial(study: optuna.Study, owner: dict | None, heartbeat: float | None):
    trial = study.ask()
    if owner is not None:
        trial.set_user_attr(workers.WORKER_ATTR, owner)
    if heartbeat is not None:
        trial.set_user_attr(workers.HEARTBEAT_ATTR, heartbeat)
    return trial


def test_orphans_are_trials_of_dead_workers_only(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    now = time.time()
    me = workers.me()
    dead_here = {**me, "pid": 2**22 + 12345}  # beyond Linux's pid_max: never a live process
    reused_pid = {**me, "started": (me["started"] or 0) + 1}  # our pid, but another process's start time
    elsewhere = {"host": "node-17", "pid": 4242, "started": 1}
    trials = [_running_trial(study, me, now), _running_trial(study, dead_here, now),
              _running_trial(study, reused_pid, now), _running_trial(study, elsewhere, now - 10),
              _running_trial(study, elsewhere, now - 600), _running_trial(study, None, None)]
    done = study.ask()
    study.tell(done, 1.0)
    failed = workers.recover_orphans(study, grace_s=120)
    expected = [1, 2, 4, 5] if me["started"] is not None else [1, 4, 5]
    assert failed == expected
    states = {t.number: t.state for t in study.trials}
    assert states[0] == states[trials[3].number] == optuna.trial.TrialState.RUNNING
    assert states[done.number] == optuna.trial.TrialState.COMPLETE
    reasons = {t.number: t.user_attrs.get("failure", "") for t in study.trials}
    assert "died" in reasons[1] and "no heartbeat" in reasons[4] and "node-17:4242" in reasons[4]
    assert "no owner recorded" in reasons[5]
    assert workers.recover_orphans(study, grace_s=120) == [], "nothing twice"


def test_asking_lock_is_exclusive_across_processes(tmp_path):
    lock = tmp_path / "optuna.db.lock"
    read_fd, write_fd = os.pipe()
    with workers.asking_lock(lock):
        pid = os.fork()
        if pid == 0:  # the child waits for the lock, then reports when it got it
            with workers.asking_lock(lock):
                os.write(write_fd, str(time.monotonic()).encode())
            os._exit(0)
        time.sleep(0.5)
        released = time.monotonic()
    os.waitpid(pid, 0)
    got = float(os.read(read_fd, 64).decode())
    assert got >= released and not math.isnan(got)


def test_a_database_of_an_older_optuna_is_refused_with_the_upgrade_command(tmp_path):
    import sqlite3

    from experiments.sweeps.storage import open_storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.storages.RDBStorage(url)
    with sqlite3.connect(tmp_path / "optuna.db") as db:  # as Optuna 2.x left its schema
        db.execute("update alembic_version set version_num='v2.6.0.a'")
    with pytest.raises(UserError, match="older Optuna") as refused:
        open_storage(url)
    assert f"optuna storage upgrade --storage {url}" in str(refused.value)
