"""Real sweeps of tiny trials through the real command line: failures, resume, report, coarse-to-fine.

Every trial is LeNet-5 on a few hundred synthetic images for one or two epochs (``TINY``), so a trial
takes a second or two after the sweep process has imported torch once.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from tests.conftest import TINY, run_cli, tree_hashes

optuna.logging.set_verbosity(optuna.logging.WARNING)

SWEEP = ["-m", "hparams_search=random_log", *TINY, "trainer.max_epochs=1"]


def _only_sweep(workdir: Path, under: str = "outputs/sweeps") -> Path:
    sweeps = [p.parent for p in (workdir / under).glob("*/optuna.db")]
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def _trial_dirs(sweep: Path) -> list[str]:
    return sorted((p.name for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()),
                  key=lambda name: int(name.split("_")[0]))


def _study(sweep: Path) -> optuna.Study:
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory) -> tuple[Path, object]:
    """Three trials on Optuna's grid: one good, one invalid value (user error), one that diverges."""
    workdir = tmp_path_factory.mktemp("failing")
    result = run_cli("experiments.train", *SWEEP, "hydra/sweeper/sampler=grid",
                     "hydra.sweeper.params.optimizer.lr='choice(0.05, -1.0, 1e30)'",
                     "~hydra.sweeper.params.optimizer.weight_decay", "hydra.sweeper.n_trials=3",
                     "logger=tensorboard", cwd=workdir, check=True, timeout=300)
    return _only_sweep(workdir), result


def test_failed_trials_are_recorded_and_the_sweep_goes_on(failing_sweep):
    sweep, _ = failing_sweep
    assert len(_trial_dirs(sweep)) == 3
    failures = {}
    for name in _trial_dirs(sweep):
        lr = next(o for o in json.loads((sweep / name / "summary.json").read_text())["command"].split()
                  if o.startswith("optimizer.lr="))
        summary = json.loads((sweep / name / "summary.json").read_text())
        failure_file = sweep / name / "failure.json"
        failures[lr] = json.loads(failure_file.read_text()) if failure_file.is_file() else None
        assert summary["status"] == ("failed" if failures[lr] else "finished")
    assert failures["optimizer.lr=0.05"] is None
    assert failures["optimizer.lr=-1.0"]["kind"] == "user_error"
    assert "must be > 0" in failures["optimizer.lr=-1.0"]["reason"]
    assert failures["optimizer.lr=1e+30"]["kind"] == "diverged"
    assert "nan" in failures["optimizer.lr=1e+30"]["reason"].lower()

    study = _study(sweep)
    states = {t.params["optimizer.lr"]: t.state for t in study.trials}
    assert states == {0.05: optuna.trial.TrialState.COMPLETE, -1.0: optuna.trial.TrialState.FAIL,
                      1e30: optuna.trial.TrialState.FAIL}
    assert study.best_trial.params == {"optimizer.lr": 0.05}, "a failed trial is never the best"
    assert all("failure" in t.user_attrs for t in study.trials if t.state == optuna.trial.TrialState.FAIL)


def test_report_lists_every_trial_best_first_with_failure_reasons(failing_sweep):
    sweep, _ = failing_sweep
    result = run_cli("experiments.sweep_report", str(sweep), cwd=sweep.parent, check=True, timeout=120)
    with (sweep / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["status"] for r in rows] == ["finished", "failed", "failed"]
    assert float(rows[0]["optimizer.lr"]) == 0.05
    assert float(rows[0]["best val acc %"]) + float(rows[0]["best val err %"]) == pytest.approx(100)
    assert rows[0]["epochs"] == "1" and float(rows[0]["wall time s"]) > 0
    reasons = {float(r["optimizer.lr"]): r["reason"] for r in rows[1:]}
    assert reasons[-1.0].startswith("user_error") and "must be > 0" in reasons[-1.0]
    assert reasons[1e30].startswith("diverged")
    markdown = (sweep / "trials.md").read_text()
    assert markdown.count("\n") == 2 + 3 and "must be > 0" in markdown
    assert (sweep / "plots" / "val_err_best_vs_optimizer.lr.png").stat().st_size > 1000
    best = (sweep / "best_command.txt").read_text()
    assert best.startswith("python -m experiments.train optimizer.lr=0.05 ") and "hparams_search" not in best
    assert "optimizer.lr=0.05" in result.stdout
    assert "user_error" in result.stdout and "diverged" in result.stdout


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    args = [*SWEEP, "+callbacks.die._target_=crash_callbacks.DieAtEpochStart", "+callbacks.die.epoch=0"]
    # 1. The sweep process is killed in the middle of trial 0 (os._exit, like SIGKILL).
    killed = run_cli("experiments.train", *args, "hydra.sweeper.n_trials=3", cwd=tmp_path,
                     env={"CNN_TEST_DIE": "1"}, timeout=300)
    assert killed.returncode == 17
    sweep = _only_sweep(tmp_path)
    assert _trial_dirs(sweep) == ["0_lenet5-synthetic"]
    # 2. The same command again: trial 0 is marked failed, trials 1 and 2 run in their own folders.
    run_cli("experiments.train", *args, "hydra.sweeper.n_trials=3", cwd=tmp_path, check=True, timeout=300)
    assert _trial_dirs(sweep) == ["0_lenet5-synthetic", "1_lenet5-synthetic", "2_lenet5-synthetic"]
    states = [t.state for t in _study(sweep).trials]
    assert states == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2
    before = tree_hashes(sweep / "1_lenet5-synthetic")
    # 3. Once more: everything is done, nothing runs, no folder is touched.
    again = run_cli("experiments.train", *args, "hydra.sweeper.n_trials=3", cwd=tmp_path, check=True, timeout=300)
    assert "0 to run" in again.stdout + again.stderr
    assert len(_study(sweep).trials) == 3 and len(_trial_dirs(sweep)) == 3
    assert tree_hashes(sweep / "1_lenet5-synthetic") == before
    # 4. A larger n_trials adds only the missing trials, numbered on.
    run_cli("experiments.train", *args, "hydra.sweeper.n_trials=4", cwd=tmp_path, check=True, timeout=300)
    assert [t.number for t in _study(sweep).trials] == [0, 1, 2, 3]
    assert _trial_dirs(sweep)[-1] == "3_lenet5-synthetic"
    assert tree_hashes(sweep / "1_lenet5-synthetic") == before


def test_coarse_to_fine_narrows_inside_the_coarse_ranges(tmp_path):
    # --widen 0: the fine range is exactly the top-2 span, so it is narrower than the coarse one whatever
    # the draws (with widening, two draws near both ends of a range can legitimately give it all back).
    run_cli("experiments.coarse_to_fine", *TINY, "--coarse-trials", "3", "--coarse-epochs", "1",
            "--fine-trials", "1", "--fine-epochs", "2", "--top-k", "2", "--widen", "0", "--name", "c2f",
            cwd=tmp_path, check=True, timeout=400)
    parent = tmp_path / "outputs" / "sweeps" / "coarse_to_fine" / "c2f"
    record = json.loads((parent / "coarse_to_fine.json").read_text())
    coarse, fine = record["stages"]["coarse"], record["stages"]["fine"]
    assert (coarse["trials"], fine["trials"]) == (3, 1)
    best_coarse = coarse["best"]["params"]
    assert set(record["ranges"]) == {"optimizer.lr", "optimizer.weight_decay"}
    for key, ranges in record["ranges"].items():
        (c_lo, c_hi), (f_lo, f_hi) = ranges["coarse"], ranges["fine"]
        assert ranges["log"] is True
        assert c_lo <= f_lo < f_hi <= c_hi and (f_lo, f_hi) != (c_lo, c_hi)
        assert f_lo <= best_coarse[key] <= f_hi
        assert all(f_lo <= v <= f_hi for v in ranges["top_k_values"])
    # The fine trials really ran with longer training, inside the fine ranges.
    fine_trial = json.loads(next((parent / "fine").glob("0_*/summary.json")).read_text())
    assert fine_trial["epochs"] == 2
    for key, ranges in record["ranges"].items():
        value = float(next(o.split("=", 1)[1] for o in fine_trial["command"].split() if o.startswith(f"{key}=")))
        assert ranges["fine"][0] <= value <= ranges["fine"][1]
    assert (parent / "coarse" / "trials.csv").is_file() and (parent / "fine" / "trials.csv").is_file()
    # Refused before anything is written, and the finished search's record and trials are kept.
    before = tree_hashes(tmp_path / "outputs")
    for args, words in ((["--name", "c2f", "optimizer.momentum=0.5"], "holds the record of another search"),
                        (["--name", "c2f", "model=nosuch"], "no such model"),
                        (["--name", "../../x"], "plain folder name"), (["--preset", "nosuch"], "hparams_search preset"),
                        (["optimizer.lr=-1"], "optimizer.lr=-1"), (["--widen", "-1"], "--widen")):
        result = run_cli("experiments.coarse_to_fine", *TINY, "--coarse-trials", "3", "--coarse-epochs", "1",
                         "--fine-trials", "1", "--fine-epochs", "2", "--top-k", "2", "--widen", "0", *args, cwd=tmp_path)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert words in " ".join(result.stderr.split()), result.stderr[-2000:]
    assert tree_hashes(tmp_path / "outputs") == before


@pytest.mark.slow  # ~1 min on 2 shared cores: each submitit job is a fresh Python process importing torch
def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    run_cli("experiments.train", *SWEEP, "hydra/launcher=submitit_local", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2", cwd=tmp_path, check=True, timeout=400)
    sweep = _only_sweep(tmp_path)
    assert len(_trial_dirs(sweep)) == 2 and (sweep / ".submitit").is_dir()
    assert [t.state for t in _study(sweep).trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for name in _trial_dirs(sweep):
        assert json.loads((sweep / name / "summary.json").read_text())["status"] == "finished"


@pytest.mark.slow  # ~30-60 s: two DDP trainings of 2 CPU processes each
def test_ddp_trials_do_not_fork_the_sweep(tmp_path):
    result = run_cli("experiments.train", *SWEEP, "data.batch_size=32", "trainer=ddp_cpu", "hydra.sweeper.n_trials=2",
                     cwd=tmp_path, check=True, timeout=400)
    sweep = _only_sweep(tmp_path)
    assert _trial_dirs(sweep) == ["0_lenet5-synthetic", "1_lenet5-synthetic"]
    assert not (tmp_path / "outputs" / "train").exists(), "a DDP process made a run folder of its own"
    assert [t.state for t in _study(sweep).trials] == [optuna.trial.TrialState.COMPLETE] * 2
    log = result.stdout + result.stderr + "".join((sweep / n / "train.log").read_text() for n in _trial_dirs(sweep))
    assert log.count("Study ") <= 2, "a DDP process started a sweep of its own"
    for name in _trial_dirs(sweep):
        summary = json.loads((sweep / name / "summary.json").read_text())
        # 256 training images, batch 32: 4 steps per process when 2 processes share an epoch.
        assert summary["status"] == "finished" and summary["steps"] == 4


def test_report_sends_the_table_to_tensorboard_hparams(failing_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    sweep, _ = failing_sweep
    run_cli("experiments.sweep_report", str(sweep), "--no-plots", cwd=sweep.parent, check=True, timeout=120)
    sessions = {}
    for folder in sorted((sweep / "tensorboard").iterdir()):
        events = EventAccumulator(str(folder)).Reload()
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        sessions[info.hparams["optimizer.lr"].number_value] = info.hparams["status"].string_value
    assert sessions == {0.05: "finished", -1.0: "failed", 1e30: "failed"}


def test_a_sweep_whose_every_trial_failed_exits_non_zero_with_the_reasons(tmp_path):
    result = run_cli("experiments.train", *SWEEP, "hydra/sweeper/sampler=grid",
                     "hydra.sweeper.params.optimizer.lr='choice(-1.0, -2.0)'", "~hydra.sweeper.params.optimizer.weight_decay",
                     "hydra.sweeper.n_trials=2", cwd=tmp_path, timeout=300)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "every trial of study" in message and "failed (2 of 2)" in message
    assert "2 x user_error:" in message and "must be > 0" in message and "experiments.sweep_report" in message
    sweep = _only_sweep(tmp_path)
    assert [t.state for t in _study(sweep).trials] == [optuna.trial.TrialState.FAIL] * 2
    assert "best_value: null" in (sweep / "optimization_results.yaml").read_text()


def test_coarse_to_fine_prunes_in_the_coarse_stage_only(tmp_path):
    run_cli("experiments.coarse_to_fine", *TINY, "--coarse-trials", "2", "--coarse-epochs", "2", "--coarse-pruner",
            "median", "--fine-trials", "1", "--fine-epochs", "1", "--top-k", "2", "--name", "c2f", cwd=tmp_path,
            check=True, timeout=400)
    parent = tmp_path / "outputs" / "sweeps" / "coarse_to_fine" / "c2f"
    record = json.loads((parent / "coarse_to_fine.json").read_text())
    assert "hydra/sweeper/pruner=median" in record["stages"]["coarse"]["command"]
    assert "pruner" not in record["stages"]["fine"]["command"]
    assert record["settings"]["coarse_pruner"] == "median" and "pruned" in record["stages"]["coarse"]
    coarse, fine = _study(parent / "coarse").trials, _study(parent / "fine").trials
    assert all(sorted(t.intermediate_values) == [1, 2] for t in coarse if t.state.is_finished()), \
        "coarse trials report every epoch to the pruner"
    assert all(not t.intermediate_values for t in fine), "the fine stage does not prune"
