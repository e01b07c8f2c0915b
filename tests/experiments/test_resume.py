"""A run that dies after an epoch and is resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from tests.conftest import TINY, last_weights, run_cli, run_folders

COMMAND = [*TINY, "trainer.max_epochs=4", "data.augment.hflip=true", "data.augment.crop_padding=2",
           "model.dropout=0.2", "scheduler=multistep",
           "+callbacks.die._target_=crash_callbacks.DieAtEpochStart", "+callbacks.die.epoch=2"]




@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("whole")
    run_cli("experiments.train", *COMMAND, cwd=workdir, check=True)
    return run_folders(workdir / "outputs")[0]


def test_resume_true_continues_the_crashed_run_exactly(uninterrupted, tmp_path):
    crashed = run_cli("experiments.train", *COMMAND, cwd=tmp_path, env={"CNN_TEST_DIE": "1"})
    assert crashed.returncode == 17
    (run,) = run_folders(tmp_path / "outputs")
    assert json.loads((run / "summary.json").read_text())["status"] == "running"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1

    resumed = run_cli("experiments.train", *COMMAND, "resume=true", cwd=tmp_path, check=True)
    assert run_folders(tmp_path / "outputs") == [run], "resume must continue in the original run folder"
    assert str(run) in resumed.stdout + resumed.stderr

    summary = json.loads((run / "summary.json").read_text())
    expected = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 4
    for key in ("test/acc", "test/loss", "val/err_best", "train/loss", "val/loss"):
        assert summary["metrics"][key] == pytest.approx(expected["metrics"][key], rel=1e-5, abs=1e-6), key
    ours, theirs = last_weights(run), last_weights(uninterrupted)
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in theirs)

    with (run / "metrics.csv").open() as handle:
        val_epochs = [int(r["epoch"]) for r in csv.DictReader(handle) if r.get("val/err")]
    assert val_epochs == [0, 1, 2, 3], "history kept once per epoch across the resume"


def test_resume_without_a_resumable_run_is_a_clear_error(tmp_path):
    result = run_cli("experiments.train", *TINY, "trainer.max_epochs=1", "resume=true", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "resume=True" in result.stderr and "found no unfinished run" in result.stderr
    assert not list(tmp_path.glob("outputs/train/*/*"))
