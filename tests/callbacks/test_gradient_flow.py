"""GradientFlow: per-layer gradient norms and update ratios, and its vanishing-gradient warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from torch import nn

from callbacks.gradient_flow import GradientFlow

from .conftest import SmallConvNet, column, csv_logger, module_for, read_metrics, tiny_data, trainer_for


def fit(tmp_path: Path, model: nn.Module, flow: GradientFlow, steps: int = 6, lr: float = 0.05):
    trainer = trainer_for(tmp_path, [flow], loggers=[csv_logger(tmp_path)], max_epochs=1,
                          limit_train_batches=steps, limit_val_batches=1)
    trainer.fit(module_for(model, lr=lr), datamodule=tiny_data())
    return trainer


def test_norms_and_update_ratios_every_n_steps(tmp_path: Path):
    flow = GradientFlow(every_n_steps=2, plot_every_n_epochs=1)
    fit(tmp_path, SmallConvNet(), flow, steps=6)
    assert [s["step"] for s in flow.history] == [0, 2, 4]
    layers = ["features.0", "features.3", "hidden", "out"]  # conv and linear weights, input first
    assert list(flow.history[0]["grad_norm"]) == layers
    rows = read_metrics(tmp_path)
    for layer in layers:
        norms = column(rows, f"grad_norm/{layer}")
        ratios = column(rows, f"update_ratio/{layer}")
        assert len(norms) == 3 and all(n > 0 for n in norms)
        assert len(ratios) == 3 and all(0 < r < 1 for r in ratios)
    # The total is the norm over all layers' gradients.
    sample = flow.history[-1]
    assert sample["total"] == pytest.approx(sum(v * v for v in sample["grad_norm"].values()) ** 0.5)
    assert column(rows, "grad_norm/total")[-1] == pytest.approx(sample["total"], rel=1e-5)
    assert (tmp_path / "plots/gradient_flow.png").stat().st_size > 5000


def test_plain_sgd_update_ratio_is_lr_times_grad_over_weight(tmp_path: Path):
    flow = GradientFlow(every_n_steps=1)
    model = SmallConvNet()
    trainer = trainer_for(tmp_path, [flow], max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    weight_norm = float(model.hidden.weight.detach().norm())
    trainer.fit(module_for(model, lr=0.01, momentum=0.0), datamodule=tiny_data())
    sample = flow.history[0]
    expected = 0.01 * sample["grad_norm"]["hidden"] / weight_norm
    assert sample["update_ratio"]["hidden"] == pytest.approx(expected, rel=1e-4)


def deep_sigmoid_mlp(depth: int = 12) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.Sigmoid()]
    for _ in range(depth):
        layers += [nn.Linear(32, 32), nn.Sigmoid()]
    layers.append(nn.Linear(32, 4))
    return nn.Sequential(*layers)


def test_vanishing_gradients_are_warned_about_in_a_deep_sigmoid_net_only(tmp_path: Path, caplog):
    caplog.set_level(logging.WARNING, logger="callbacks")
    flow = GradientFlow(every_n_steps=1)
    fit(tmp_path / "sigmoid", deep_sigmoid_mlp(), flow, steps=2)
    assert flow.alerts.counts.get("vanishing_gradients") == 2
    assert any("vanishing_gradients" in r.getMessage() and "ReLU" in r.getMessage() for r in caplog.records)

    healthy = GradientFlow(every_n_steps=1)
    fit(tmp_path / "relu", SmallConvNet(), healthy, steps=2)
    assert healthy.alerts.counts == {}
