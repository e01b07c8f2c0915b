"""Pruning through the real command line: a trial reports its objective every validation epoch, the
pruner stops a hopeless one cleanly, its run folder and Optuna both say PRUNED, and sweep_report shows it;
with the basic launcher (trial in the sweeper's process) and with joblib's (trial in another process).

The grid over lr = 0.05 (learns) and 1e-7 (does not), with sampler seed 1, runs the good trial first;
the median pruner with one startup trial then stops the second one after its first epoch.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from tests.conftest import TINY, run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)

PRUNING = ["-m", "hparams_search=random_log", *TINY, "trainer.max_epochs=3", "hydra.sweeper.n_trials=2",
           "hydra/sweeper/sampler=grid", "hydra.sweeper.sampler.seed=1",
           "hydra.sweeper.params.optimizer.lr='choice(0.05, 0.0000001)'", "~hydra.sweeper.params.optimizer.weight_decay",
           "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1"]
LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def _study(sweep: Path) -> optuna.Study:
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(scope="module", params=list(LAUNCHERS))
def pruned_sweep(request, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp(f"pruning-{request.param}")
    run_cli("experiments.train", *PRUNING, *LAUNCHERS[request.param], cwd=workdir, check=True, timeout=300)
    (sweep,) = (workdir / "outputs" / "sweeps").iterdir()
    return sweep


def test_a_hopeless_trial_is_pruned_in_optuna_and_in_its_run_folder(pruned_sweep):
    study = _study(pruned_sweep)
    good, hopeless = study.trials
    assert good.params == {"optimizer.lr": 0.05} and good.state == optuna.trial.TrialState.COMPLETE
    assert sorted(good.intermediate_values) == [1, 2, 3], "one report per validation epoch"
    assert hopeless.params == {"optimizer.lr": 1e-7} and hopeless.state == optuna.trial.TrialState.PRUNED
    assert list(hopeless.intermediate_values) == [1]
    assert hopeless.value == hopeless.intermediate_values[1], "Optuna keeps the value it was pruned at"
    assert hopeless.user_attrs["pruned"]["epoch"] == 1 and hopeless.user_attrs["run_dir"].endswith("1_lenet5-synthetic")

    folder = pruned_sweep / "1_lenet5-synthetic"
    record = json.loads((folder / "pruned.json").read_text())
    assert record["status"] == "pruned" and record["epoch"] == 1 and record["pruner"] == "MedianPruner"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["pruned"]["epoch"] == 1 and summary["epochs"] == 1
    assert not (folder / "failure.json").exists()
    good_summary = json.loads((pruned_sweep / "0_lenet5-synthetic" / "summary.json").read_text())
    assert good_summary["status"] == "finished" and good_summary["epochs"] == 3
    assert not (pruned_sweep / "0_lenet5-synthetic" / "pruned.json").exists()
    assert "sweep_pruning" in (folder / "config.yaml").read_text(), "the callback is recorded with the trial"


def test_sweep_report_shows_the_pruned_trial(pruned_sweep):
    result = run_cli("experiments.sweep_report", str(pruned_sweep), "--no-plots", cwd=pruned_sweep, check=True)
    with (pruned_sweep / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["trial"], r["status"]) for r in rows] == [("0", "finished"), ("1", "pruned")]
    assert rows[1]["reason"].startswith("pruned after epoch 1 (val/err_best = ") and rows[1]["epochs"] == "1"
    assert "1 finished, 1 pruned, 0 failed" in " ".join(result.stdout.split())


@pytest.mark.slow  # ~20-40 s: two DDP trainings of 2 CPU processes each
def test_ddp_processes_of_a_pruned_trial_stop_together(tmp_path):
    run_cli("experiments.train", *PRUNING, "data.batch_size=32", "trainer=ddp_cpu", cwd=tmp_path, check=True, timeout=400)
    (sweep,) = (tmp_path / "outputs" / "sweeps").iterdir()
    assert [t.state for t in _study(sweep).trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert json.loads((sweep / "1_lenet5-synthetic" / "summary.json").read_text())["status"] == "pruned"
    assert not (tmp_path / "outputs" / "train").exists(), "a DDP process made a run folder of its own"
