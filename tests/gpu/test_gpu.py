"""What only a GPU can check (``scripts/gpu_check.sh`` runs these first when a GPU is lent): mixed
precision, device-resident data, channels_last, torch.compile and resume, through the real command.

Marked ``gpu`` and skipped without a CUDA device, so the default suite collects them everywhere
(``scripts/gpu_check.sh`` checks that they are collected) and CI never depends on a GPU.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import TINY, last_weights, run_cli, run_folders

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")]

ON_GPU = [*TINY, "trainer=gpu", "trainer.max_epochs=2"]


def _finished(workdir) -> dict:
    (run,) = run_folders(workdir / "outputs")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 2, summary
    assert all(torch.isfinite(t).all() for t in last_weights(run).values() if t.is_floating_point())
    return summary


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_and_learns(tmp_path, precision):
    run_cli("experiments.train", *ON_GPU, f"trainer.precision={precision}", cwd=tmp_path, check=True)
    assert _finished(tmp_path)["test_acc"] > 20  # synthetic data with signal: well above chance (10%)


def test_device_resident_data_and_channels_last(tmp_path):
    run_cli("experiments.train", *ON_GPU, "data.device_resident=true", "model=resnet20", "model.depth=8",
            "model.channels_last=true", cwd=tmp_path, check=True)
    _finished(tmp_path)


def test_compiled_model_keeps_plain_state_dict_keys(tmp_path):
    run_cli("experiments.train", *ON_GPU, "compile=true", cwd=tmp_path, check=True, timeout=600)
    (run,) = run_folders(tmp_path / "outputs")
    _finished(tmp_path)
    assert not any("_orig_mod" in key for key in last_weights(run))


def test_resume_on_the_gpu_continues_exactly(tmp_path):
    die = ["+callbacks.die._target_=crash_callbacks.DieAtEpochStart", "+callbacks.die.epoch=1"]
    crashed = run_cli("experiments.train", *ON_GPU, *die, cwd=tmp_path, env={"CNN_TEST_DIE": "1"})
    assert crashed.returncode == 17
    (run,) = run_folders(tmp_path / "outputs")
    run_cli("experiments.train", f"resume={run}", cwd=tmp_path, check=True)
    _finished(tmp_path)
