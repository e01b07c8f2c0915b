"""ActivationStats: right numbers in the right place, dead ReLUs detected, sparsity that moves."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from callbacks import probe
from callbacks.activation_stats import ActivationStats

from .conftest import SmallConvNet, column, csv_logger, module_for, read_metrics, tiny_data, trainer_for


def fit(tmp_path: Path, model: nn.Module, callback: ActivationStats, epochs: int = 1, lr: float = 0.05, **kw):
    trainer = trainer_for(tmp_path, [callback], loggers=[csv_logger(tmp_path)], max_epochs=epochs,
                          limit_train_batches=kw.pop("limit_train_batches", 4), limit_val_batches=1, **kw)
    module = module_for(model, lr=lr)
    trainer.fit(module, datamodule=tiny_data())
    return trainer, module


def test_layers_are_matched_to_their_activation_and_hooks_removed(tmp_path: Path):
    callback = ActivationStats(probe_size=16)
    _, module = fit(tmp_path, SmallConvNet(), callback)
    # conv -> BN -> ReLU: the ReLU's output; the logits layer has no activation: its own output.
    assert callback._targets == {"features.0": ("features.2", 0), "features.3": ("features.5", 0),
                                 "hidden": ("act", 0), "out": ("out", 0)}
    assert all(not m._forward_hooks for m in module.modules())
    rows = read_metrics(tmp_path)
    # Once before training and once per epoch.
    assert len(column(rows, "activation_sparsity/features.0")) == 2
    for key in ("mean", "std", "sparsity", "dead"):
        assert len(column(rows, f"activation_{key}/hidden")) == 2
    assert sorted(p.name for p in (tmp_path / "plots/activations").iterdir()) == [
        "features.0_step000000.png", "features.0_step000004.png",
        "features.3_step000000.png", "features.3_step000004.png"]


class SharedReLUBlock(nn.Module):
    """A residual block with one in-place ReLU used twice, as in torchvision/our ResNets."""

    def __init__(self, width: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4))

    def forward(self, x):
        out = self.relu(self.conv1(x))
        out = self.relu(self.conv2(out) + x)  # the residual add, then the same ReLU again
        return self.head(out)


def test_stats_are_computed_in_the_hook_despite_inplace_relu_and_residual_add(tmp_path: Path):
    torch.manual_seed(0)
    model = SharedReLUBlock()
    callback = ActivationStats(probe_size=16, maps=False, histograms=False)
    trainer, _ = fit(tmp_path, model, callback, limit_train_batches=1)
    assert callback._targets["conv1"] == ("relu", 0) and callback._targets["conv2"] == ("relu", 1)
    stats = callback.sample(trainer, trainer.lightning_module)
    x = callback._probe
    with torch.no_grad():
        model.eval()
        first = torch.relu(model.conv1(x))
        second = torch.relu(model.conv2(first) + x)
    assert stats["conv1"]["sparsity"] == pytest.approx(float((first == 0).float().mean()), abs=1e-6)
    assert stats["conv2"]["sparsity"] == pytest.approx(float((second == 0).float().mean()), abs=1e-6)
    assert stats["conv2"]["mean"] == pytest.approx(float(second.mean()), rel=1e-5)
    assert stats["conv2"]["std"] == pytest.approx(float(second.std()), rel=1e-5)


def test_dead_units_are_detected_and_warned_about(tmp_path: Path, caplog):
    caplog.set_level(logging.WARNING, logger="callbacks")
    callback = ActivationStats(probe_size=32, dead_threshold=0.5)
    fit(tmp_path, SmallConvNet(dead_bias=-100.0), callback, lr=0.001)
    rows = read_metrics(tmp_path)
    assert column(rows, "activation_dead/hidden") == [1.0, 1.0]  # every hidden ReLU, every sample
    assert column(rows, "activation_sparsity/hidden") == [1.0, 1.0]
    assert column(rows, "alerts/dead_units") == [1.0, 1.0]
    assert callback.alerts.counts == {"dead_units": 2}
    warnings = [r.getMessage() for r in caplog.records if "dead_units" in r.getMessage()]
    assert len(warnings) == 1  # said once, recorded every time
    assert "hidden" in warnings[0] and "learning rate" in warnings[0]


def test_a_healthy_network_raises_no_dead_unit_warning(tmp_path: Path, caplog):
    caplog.set_level(logging.WARNING, logger="callbacks")
    callback = ActivationStats(probe_size=32, dead_threshold=0.5)
    fit(tmp_path, SmallConvNet(), callback)
    rows = read_metrics(tmp_path)
    assert max(column(rows, "activation_dead/hidden")) < 0.5
    assert callback.alerts.counts == {}
    assert "alerts/dead_units" not in rows[0]
    assert not [r for r in caplog.records if "dead_units" in r.getMessage()]


def test_logged_sparsity_of_a_relu_net_changes_over_training(tmp_path: Path):
    torch.manual_seed(0)
    callback = ActivationStats(probe_size=64, every_n_epochs=1, maps=False)
    fit(tmp_path, SmallConvNet(), callback, epochs=4, lr=0.1, limit_train_batches=8)
    rows = read_metrics(tmp_path)
    sparsity = column(rows, "activation_sparsity/hidden")
    assert len(sparsity) == 5
    assert max(abs(s - sparsity[0]) for s in sparsity[1:]) > 0.05, sparsity
    first_conv = column(rows, "activation_sparsity/features.0")
    assert len(set(first_conv)) > 1


def test_trace_sees_structure_not_names():
    model = SmallConvNet()
    traced = probe.trace(model, torch.randn(2, 3, 16, 16))
    assert traced.conv3x3_responses() == [("features.0", "features.1"), ("features.3", "features.4")]
