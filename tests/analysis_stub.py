"""A stand-in for a trained run in the analyses' tests: what AnalysisContext reads of one, around a
hand-built model and fixed images (normalised with mean 0.5, std 0.25)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from omegaconf import OmegaConf
from torch import nn


class FakeRun:
    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        self.model, self.images = model, images
        self.labels = labels if labels is not None else torch.zeros(len(images), dtype=torch.long)
        self.cfg = OmegaConf.create({"data": {"mean": [0.5], "std": [0.25]}})
        self.datamodule = SimpleNamespace(test_set=True, val_set=None, test_dataloader=None)

    def class_names(self) -> list[str]:
        return ["a", "b", "c"]

    def prepare_split(self, split: str) -> None:
        pass

    def test_images(self, limit: int | None = None, split: str = "test"):
        shown = self.images[:limit]
        return shown, (shown * 0.25 + 0.5).clamp(0, 1), self.labels[:limit]
