"""The non-finite loss guard: a diverging run stops cleanly and last.ckpt stays loadable and finite."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from callbacks.gradient_flow import GradientFlow
from experiments.training.module import ClassificationModule
from models.lenet import LeNet5

from .conftest import SmallConvNet, module_for, tiny_data, trainer_for


def checkpoints(run_dir: Path) -> list[ModelCheckpoint]:
    """The two checkpoint callbacks of conf/callbacks/default.yaml: best by val/err, and last every epoch."""
    folder = str(run_dir / "checkpoints")
    return [ModelCheckpoint(dirpath=folder, filename="best-epoch{epoch:03d}", auto_insert_metric_name=False,
                            monitor="val/err", mode="min", save_top_k=1, save_last=False),
            ModelCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1,
                            enable_version_counter=False)]


def finite_weights(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_huge_learning_rate_stops_the_run_with_a_clear_message(tmp_path: Path, caplog):
    caplog.set_level(logging.ERROR, logger="callbacks")
    flow = GradientFlow(every_n_steps=1)
    trainer = trainer_for(tmp_path, [flow, *checkpoints(tmp_path)], max_epochs=3, limit_train_batches=6,
                          limit_val_batches=1)
    # LeNet-5 has no BatchNorm to renormalise exploding weights: at lr 1e6 the loss overflows in a few steps.
    module = module_for(LeNet5(in_channels=3, num_classes=4, input_size=16, activation="relu"), lr=1e6)
    trainer.fit(module, datamodule=tiny_data())

    assert flow.guard.stopped_at is not None
    assert trainer.should_stop and not trainer.interrupted
    assert trainer.global_step < 3 * 6  # stopped early, not at max_epochs
    assert flow.guard.stopped_at < 6 and "epoch 0" in flow.guard.message  # within the first epoch
    messages = [r.getMessage() for r in caplog.records if "Non-finite" in r.getMessage()]
    assert len(messages) == 1 and "learning rate" in messages[0] and f"step {flow.guard.stopped_at}" in messages[0]
    # The weights in memory never became NaN: the bad update was skipped.
    assert all(torch.isfinite(p).all() for p in module.parameters())
    record = json.loads((tmp_path / "diagnostics/nonfinite_stop.json").read_text())
    assert record["step"] == flow.guard.stopped_at and "Non-finite" in record["message"]
    last = tmp_path / "checkpoints/last.ckpt"
    assert last.is_file() and finite_weights(last)
    module.load_state_dict(torch.load(last, map_location="cpu", weights_only=False)["state_dict"])


class NaNAfter(ClassificationModule):
    """Trains normally, then returns a NaN loss from optimizer step ``nan_step`` on."""

    def __init__(self, *args, nan_step: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_step = nan_step

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * math.nan if self.global_step >= self.nan_step else loss


def test_last_checkpoint_stays_the_last_good_one(tmp_path: Path, caplog):
    caplog.set_level(logging.ERROR, logger="callbacks")
    flow = GradientFlow(every_n_steps=100)
    base = module_for(SmallConvNet())
    module = NaNAfter(base.model, num_classes=4, optimizer=base.optimizer_cfg, nan_step=6)  # epoch 2, 2nd step
    trainer = trainer_for(tmp_path, [flow, *checkpoints(tmp_path)], max_epochs=4, limit_train_batches=4,
                          limit_val_batches=1)
    trainer.fit(module, datamodule=tiny_data())

    # Stopped at the first NaN step (Lightning still counts the cancelled step), weights finite.
    assert flow.guard.stopped_at == 6 and trainer.global_step == 7
    assert all(torch.isfinite(p).all() for p in module.parameters())
    last = torch.load(tmp_path / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 4 and last["epoch"] == 0  # end of epoch 1, before the divergence
    assert finite_weights(tmp_path / "checkpoints/last.ckpt")
    assert not list((tmp_path / "checkpoints").glob("*.good"))
    assert any("Last good checkpoint kept" in r.getMessage() and "last.ckpt" in r.getMessage()
               for r in caplog.records)


def test_a_finite_run_is_left_alone(tmp_path: Path):
    flow = GradientFlow(every_n_steps=2)
    trainer = trainer_for(tmp_path, [flow], max_epochs=1, limit_train_batches=4, limit_val_batches=1)
    trainer.fit(module_for(SmallConvNet()), datamodule=tiny_data())
    assert flow.guard.stopped_at is None and trainer.global_step == 4
    assert not (tmp_path / "diagnostics/nonfinite_stop.json").exists()
