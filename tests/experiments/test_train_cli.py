"""End to end through the real command line: train writes a complete run folder, eval reproduces it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from tests.conftest import TINY, run_cli, run_folders


def _only_run(outputs: Path) -> Path:
    runs = [p.parent for p in outputs.glob("train/*/*/config.yaml")]
    assert len(runs) == 1, runs
    return runs[0]


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, object]:
    workdir = tmp_path_factory.mktemp("train")
    result = run_cli("experiments.train", *TINY, "trainer.max_epochs=3", "trainer.log_every_n_steps=1", "logger=tensorboard",
                     cwd=workdir, check=True)
    return _only_run(workdir / "outputs"), result


def test_run_folder_holds_everything(trained_run):
    run, result = trained_run
    for name in ("config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.csv",
                 "summary.json", "train.log", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert list((run / "checkpoints").glob("best-epoch*.ckpt"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["params"] == 61_706
    assert summary["seed"] == 42 and summary["epochs"] == 3
    assert summary["versions"]["torch"] == torch.__version__.split("+")[0] or summary["versions"]["torch"]
    assert 0 <= summary["test_err"] <= 100 and summary["test_acc"] == pytest.approx(100 - summary["test_err"])
    assert summary["best_val_err"] == pytest.approx(min(
        float(r["val/err"]) for r in _rows(run) if r.get("val/err")))
    assert "run folder:" in result.stderr + result.stdout


def test_metrics_csv_has_the_promised_series(trained_run):
    run, _ = trained_run
    rows = _rows(run)
    epochs = sorted({int(r["epoch"]) for r in rows if r.get("val/err")})
    assert epochs == [0, 1, 2]
    for key in ("train/loss", "train/err", "val/loss", "val/err", "val/acc", "val/err_best", "lr-SGD"):
        assert any(r.get(key) for r in rows), key
    assert sum(1 for r in rows if r.get("train/loss_step")) >= 3
    best = [float(r["val/err_best"]) for r in rows if r.get("val/err_best")]
    assert best == sorted(best, reverse=True)  # the best error so far never rises
    test = [r for r in rows if r.get("test/acc")]
    assert len(test) == 1 and 0 <= float(test[0]["test/err"]) <= 100


def test_eval_reproduces_the_runs_test_metrics(trained_run):
    run, _ = trained_run
    summary = json.loads((run / "summary.json").read_text())
    result = run_cli("experiments.eval", f"run={run}", cwd=run.parent, check=True)
    assert "test accuracy" in result.stdout
    records = list((run / "eval").glob("*.json"))
    assert len(records) == 1
    metrics = json.loads(records[0].read_text())["metrics"]
    assert metrics["test/acc"] == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(summary["metrics"]["test/loss"], rel=1e-5)


def test_eval_uses_the_runs_own_config_not_todays_defaults(trained_run, tmp_path):
    run, _ = trained_run
    # From another folder, with no overrides: the model and data must come from the run itself.
    result = run_cli("experiments.eval", f"run={run / 'checkpoints' / 'last.ckpt'}", cwd=tmp_path, check=True)
    assert "test/acc" in result.stdout


def test_help_and_cfg_are_instant_and_list_groups(tmp_path):
    result = run_cli("experiments.train", "--help", cwd=tmp_path, check=True)
    for group in ("model:", "data:", "optimizer:", "scheduler:", "trainer:", "logger:", "callbacks:", "debug:"):
        assert group in result.stdout
    result = run_cli("experiments.train", "--cfg", "job", "optimizer=adam", cwd=tmp_path, check=True)
    assert "torch.optim.Adam" in result.stdout
    assert not (tmp_path / "outputs").exists()


def test_multirun_gives_each_job_its_own_folder(tmp_path):
    run_cli("experiments.train", "-m", *TINY, "trainer.max_epochs=1", "optimizer.lr=0.01,0.05", cwd=tmp_path,
            check=True)
    summaries = sorted(tmp_path.glob("outputs/multirun/*/*/*/summary.json"))
    assert len(summaries) == 2
    lrs = {json.loads(p.read_text())["command"].split("optimizer.lr=")[1].split()[0] for p in summaries}
    assert lrs == {"0.01", "0.05"}
    assert all(json.loads(p.read_text())["status"] == "finished" for p in summaries)


def test_every_logger_writes_its_files_offline(tmp_path):
    run_cli("experiments.train", *TINY, "trainer.max_epochs=1", "logger=many", cwd=tmp_path, check=True,
            env={"WANDB_API_KEY": "", "WANDB_MODE": ""})
    run = _only_run(tmp_path / "outputs")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert {"val/err", "train/loss", "test/acc"} <= set(events.Tags()["scalars"])
    offline = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(offline) == 1 and offline[0].stat().st_size > 0
    assert (run / "metrics.csv").is_file()


def test_early_stopping_stops_a_run_that_stalls(tmp_path):
    # lr 1e-9: the validation error never improves, so with patience 1 the run stops after 2 epochs of 10.
    run_cli("experiments.train", *TINY, "trainer.max_epochs=10", "optimizer.lr=1e-9", "scheduler=none",
            "early_stopping=val_err", "callbacks.early_stopping.patience=1", cwd=tmp_path, check=True)
    (run,) = run_folders(tmp_path / "outputs")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 2, summary["epochs"]
