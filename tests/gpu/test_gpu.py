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


def _probe_on_gpu(callbacks: str) -> dict:
    """The benchmark's sync probe on the GPU: steps 10..69 of a near-zero-compute run (a logging step, 49,
    inside), method reads and torch's own report of synchronizing CUDA calls, step by step."""
    from experiments.bench.steps import Contenders, StepCase, probe

    case = StepCase(overrides=["model=linear", "data=synthetic", "data.native_size=8"], callbacks=[callbacks],
                    batch_size=128, short_steps=2, long_steps=4, rounds=1, breakdown_steps=0, probe_window=60,
                    gpu=True, clock="wall")
    return probe(Contenders(case), f"callbacks={callbacks}", case.probe_window, log=lambda _: None)


def test_no_device_sync_between_logging_steps_on_the_gpu():
    report = _probe_on_gpu("diagnostics")
    assert report["scheduled_steps"] == [49]
    assert report["reads_per_step_outside_scheduled"] == 0, report["by_step"]
    assert report["cuda_syncs_outside_scheduled"] == 0, (report["cuda_syncs_by_step"], report["top_sites"])


def test_auto_puts_an_in_memory_dataset_on_the_gpu_once(compose, tmp_path):
    import pytorch_lightning as pl

    from experiments.training.build import build_datamodule, build_module

    cfg = compose(["data=synthetic", "data.native_size=8", "model=linear", "trainer=gpu", "callbacks=none",
                   f"paths.run_dir={tmp_path}"])
    assert cfg.data.device_resident == "auto"
    datamodule = build_datamodule(cfg)
    devices = []

    class BatchDevice(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            devices.append(batch[0].device.type)

    trainer = pl.Trainer(accelerator="gpu", devices=1, max_steps=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[BatchDevice()], default_root_dir=tmp_path)
    trainer.fit(build_module(cfg), datamodule=datamodule)
    (placed,) = [d for d in datamodule._placed.values() if len(d) == len(datamodule.train_set)]
    assert placed.images.is_cuda and placed.images.dtype == torch.uint8  # stored compact, on the device
    assert devices == ["cuda"] * 3
