"""ActivationStats with any activation: dead units for rectifiers, saturation for tanh/sigmoid.

Known answers are hand-made outputs; the end-to-end cases run a real Trainer on the project's blueprint
network built with ``activation`` set.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from callbacks.activation_stats import ActivationStats, output_range, reduce_activation, unit_kind
from models.blueprint import Blueprint

from .conftest import column, csv_logger, module_for, read_metrics, tiny_data, trainer_for


def scalars(stats: dict) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in stats.items() if k != "hist"}


def test_kinds_of_activation_modules():
    assert [unit_kind(m) for m in (nn.ReLU(), nn.LeakyReLU(), nn.ELU(), nn.Tanh(), nn.Sigmoid(), nn.Softplus(),
                                   nn.Conv2d(1, 1, 1))] == \
        ["rectifier", "rectifier", "rectifier", "saturating", "saturating", "other", "none"]
    assert (output_range(nn.Tanh()), output_range(nn.Sigmoid()), output_range(nn.Hardtanh(-2, 3))) == \
        ((-1.0, 1.0), (0.0, 1.0), (-2.0, 3.0))


def test_a_leaky_unit_on_its_negative_branch_for_every_input_is_dead():
    # 3 inputs x 2 units: unit 0 is positive once, unit 1 never (negative or zero outputs only).
    y = torch.tensor([[-0.01, -0.02], [0.5, 0.0], [-0.03, -0.04]])
    stats = scalars(reduce_activation(y, bins=8, kind="rectifier"))
    assert stats == {"mean": round(float(y.mean()), 6), "std": round(float(y.std()), 6),
                     "sparsity": round(5 / 6, 6), "dead": 0.5}


def test_relu_statistics_are_the_exact_zeros_as_before():
    y = torch.relu(torch.tensor([[[-1.0, 2.0]], [[-3.0, -4.0]]]))  # (N=2, C=1, L=2): one positive value
    stats = scalars(reduce_activation(y, bins=8, kind="rectifier"))
    assert (stats["sparsity"], stats["dead"]) == (0.75, 0.0)


@pytest.mark.parametrize(("values", "bounds", "saturated"), [
    ([0.99, -0.985, 0.97, 0.0], (-1.0, 1.0), 0.5),  # tanh: |y| >= 0.98
    ([0.005, 0.995, 0.5, 0.02], (0.0, 1.0), 0.5),  # sigmoid: y <= 0.01 or y >= 0.99
])
def test_saturation_is_the_share_of_outputs_near_the_ends_of_the_range(values, bounds, saturated):
    stats = scalars(reduce_activation(torch.tensor([values]), bins=8, kind="saturating", bounds=bounds))
    assert stats["saturation"] == saturated
    assert "dead" not in stats and "sparsity" not in stats


def test_a_layer_without_activation_keeps_the_zero_count():
    stats = scalars(reduce_activation(torch.tensor([[0.0, 1.0], [0.0, -1.0]]), bins=8))
    assert (stats["sparsity"], stats["dead"]) == (0.5, 0.5)


def _fit(tmp_path: Path, model: nn.Module, callback: ActivationStats, lr: float = 0.05):
    trainer = trainer_for(tmp_path, [callback], loggers=[csv_logger(tmp_path)], max_epochs=1,
                          limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module_for(model, lr=lr), datamodule=tiny_data())
    return read_metrics(tmp_path)


def _blueprint(activation: str) -> Blueprint:
    return Blueprint(3, 4, 16, stage_widths=(8,), fc_sizes=(16,), activation=activation)


def test_a_sigmoid_network_reports_saturation_not_dead_units(tmp_path: Path, caplog):
    caplog.set_level(logging.WARNING, logger="callbacks")
    torch.manual_seed(0)
    model = _blueprint("sigmoid")
    with torch.no_grad():  # every hidden pre-activation far above zero: every sigmoid saturated at 1
        model.classifier[1].bias.fill_(50.0)
    callback = ActivationStats(probe_size=16, maps=False, histograms=False, saturation_threshold=0.5)
    rows = _fit(tmp_path, model, callback, lr=0.001)
    assert callback._targets["classifier.1"] == ("classifier.2", 0)
    assert column(rows, "activation_saturation/classifier.1") == [1.0, 1.0]
    assert "activation_saturation/features.0.0" in rows[0]
    assert not any(key.startswith(("activation_dead/features", "activation_dead/classifier.1")) for key in rows[0])
    assert "activation_dead/classifier.3" in rows[0]  # the logits: no activation, the zero count as before
    assert callback.alerts.counts == {"saturated_units": 2}
    warnings = [r.getMessage() for r in caplog.records if "saturated_units" in r.getMessage()]
    assert len(warnings) == 1 and "classifier.1" in warnings[0]


def test_an_elu_network_reports_dead_units_on_the_negative_branch(tmp_path: Path):
    torch.manual_seed(0)
    model = _blueprint("elu")
    with torch.no_grad():  # every hidden pre-activation far below zero: ELU outputs -1, never positive
        model.classifier[1].bias.fill_(-50.0)
    callback = ActivationStats(probe_size=16, maps=False, histograms=False)
    rows = _fit(tmp_path, model, callback, lr=0.001)
    assert column(rows, "activation_dead/classifier.1") == [1.0, 1.0]
    assert column(rows, "activation_sparsity/classifier.1") == [1.0, 1.0]
    assert "activation_saturation/classifier.1" not in rows[0]
    assert callback.alerts.counts == {"dead_units": 2}
