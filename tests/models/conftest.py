"""Helpers shared by the model tests: build on the meta device, count, profile."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(factory, *args, **kwargs) -> nn.Module:
    """Build a model on PyTorch's meta device: real shapes, no memory, no arithmetic."""
    with torch.device("meta"):
        return factory(*args, **kwargs)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
