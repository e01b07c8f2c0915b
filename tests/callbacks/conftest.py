"""Helpers for the diagnostics-callback tests: tiny synthetic data, tiny nets, a real Trainer.

Everything is sized to train in well under a second per epoch on one CPU core.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn

from data.synthetic import SyntheticDataModule
from experiments.training.module import ClassificationModule


def tiny_data(in_channels: int = 3, size: int = 16, num_classes: int = 4, num_train: int = 320,
              val_size: int = 64, batch_size: int = 32, signal: float = 0.6) -> SyntheticDataModule:
    return SyntheticDataModule(num_train=num_train, num_test=64, signal=signal, seed=0, in_channels=in_channels,
                               num_classes=num_classes, native_size=size, mean=[0.5] * in_channels,
                               std=[0.25] * in_channels, val_size=val_size, batch_size=batch_size,
                               eval_batch_size=64, download=False)


def module_for(model: nn.Module, num_classes: int = 4, lr: float = 0.05, optimizer: str = "torch.optim.SGD",
               **optimizer_args) -> ClassificationModule:
    cfg = {"_target_": optimizer, "_partial_": True, "lr": lr, **optimizer_args}
    if optimizer == "torch.optim.SGD":
        cfg.setdefault("momentum", 0.9)
    return ClassificationModule(model=model, num_classes=num_classes, optimizer=OmegaConf.create(cfg))


def trainer_for(run_dir: Path, callbacks: list, loggers: list | bool = False, max_epochs: int = 2,
                **kwargs) -> pl.Trainer:
    settings = {"accelerator": "cpu", "devices": 1, "max_epochs": max_epochs, "num_sanity_val_steps": 0,
                "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1,
                "default_root_dir": str(run_dir), "enable_checkpointing": any(
                    isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks)}
    settings.update(kwargs)
    return pl.Trainer(callbacks=callbacks, logger=loggers, **settings)


def csv_logger(run_dir: Path):
    from experiments.training.loggers import RunCSVLogger

    return RunCSVLogger(save_dir=str(run_dir))


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key)]


class SmallConvNet(nn.Module):
    """conv-BN-ReLU x2 (3x3), pool, linear-ReLU, linear: every kind of layer the callbacks look at."""

    def __init__(self, in_channels: int = 3, num_classes: int = 4, width: int = 8, dead_bias: float | None = None):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.hidden = nn.Linear(4 * width, 32)
        self.act = nn.ReLU()
        self.out = nn.Linear(32, num_classes)
        if dead_bias is not None:  # every hidden unit's pre-activation far below zero: all ReLUs dead
            with torch.no_grad():
                self.hidden.bias.fill_(dead_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.hidden(self.features(x))))


@pytest.fixture
def offline_wandb(monkeypatch):
    """W&B offline, and no run left open before or after (a leftover run would be reused by the next test)."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb.finish()
    yield
    wandb.finish()
