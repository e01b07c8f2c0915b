"""Schedules follow the papers' recipes in their own units; weight decay spares what it should."""

from __future__ import annotations

import itertools

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from experiments.core.errors import UserError
from experiments.training.optim import build_optimizer, build_scheduler, parameter_groups


def _lrs(compose, overrides, tmp_path, total=1000, per_epoch=100, lr=0.1) -> list[float]:
    cfg = compose([*overrides, f"paths.run_dir={tmp_path}"])
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=lr)
    scheduler = build_scheduler(cfg.scheduler, optimizer, total, per_epoch)["scheduler"]
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_multistep_fractions_divide_by_ten_at_half_and_three_quarters(compose, tmp_path):
    lrs = _lrs(compose, ["scheduler=multistep"], tmp_path)
    assert lrs[0] == pytest.approx(0.1) and lrs[499] == pytest.approx(0.1)
    assert lrs[500] == pytest.approx(0.01) and lrs[749] == pytest.approx(0.01)
    assert lrs[750] == pytest.approx(0.001) and lrs[-1] == pytest.approx(0.001)


def test_cifar_resnet_recipe_in_iterations(compose, tmp_path):
    lrs = _lrs(compose, ["scheduler=multistep", "scheduler.unit=step", "scheduler.milestones=[320,480]"],
               tmp_path, total=640)
    assert lrs[319] == pytest.approx(0.1) and lrs[320] == pytest.approx(0.01) and lrs[480] == pytest.approx(0.001)


def test_constant_warmup_then_the_schedule(compose, tmp_path):
    # He et al. 2016: lr 0.01 until training error is below 80% (~400 iterations), then back to 0.1.
    lrs = _lrs(compose, ["scheduler=multistep", "scheduler.warmup_steps=400"], tmp_path)
    assert lrs[0] == pytest.approx(0.01) and lrs[399] == pytest.approx(0.01)
    assert lrs[400] == pytest.approx(0.1) and lrs[499] == pytest.approx(0.1)
    assert lrs[500] == pytest.approx(0.01) and lrs[750] == pytest.approx(0.001)


def test_cosine_with_linear_warmup(compose, tmp_path):
    lrs = _lrs(compose, ["scheduler=cosine", "scheduler.warmup_steps=100"], tmp_path)
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[50] == pytest.approx(0.001 + 0.5 * (0.1 - 0.001), rel=0.05)
    assert max(lrs) == pytest.approx(0.1, rel=0.03)  # the cosine already runs under the warm-up
    assert lrs[-1] < 1e-3
    decay = lrs[150:]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(decay))


def test_googlenet_exponential_four_percent_every_eight_epochs(compose, tmp_path):
    lrs = _lrs(compose, ["scheduler=exponential"], tmp_path, total=2000, per_epoch=100)
    assert lrs[799] == pytest.approx(0.1) and lrs[800] == pytest.approx(0.096) and lrs[1600] == pytest.approx(0.09216)


def test_plateau_monitors_validation_error_per_epoch(compose, tmp_path):
    cfg = compose(["scheduler=plateau", f"paths.run_dir={tmp_path}"])
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    spec = build_scheduler(cfg.scheduler, optimizer, 100, 10)
    assert spec["monitor"] == "val/err" and spec["interval"] == "epoch"
    for _ in range(7):
        spec["scheduler"].step(50.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_none_is_a_constant_rate(compose, tmp_path):
    cfg = compose(["scheduler=none", f"paths.run_dir={tmp_path}"])
    assert build_scheduler(cfg.scheduler, torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), 10, 1) is None


def test_fraction_outside_unit_interval_is_a_user_error(compose, tmp_path):
    with pytest.raises(UserError, match=r"scheduler\.milestones"):
        _lrs(compose, ["scheduler=multistep", "scheduler.milestones=[0.5,2]"], tmp_path)


def test_norm_and_bias_excluded_from_weight_decay():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    decay, no_decay = parameter_groups(model, 1e-4, exclude_norm_and_bias=True)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert {p.shape for p in decay["params"]} == {torch.Size([4, 3, 3, 3]), torch.Size([2, 144])}
    assert len(no_decay["params"]) == 3  # BN weight, BN bias, linear bias


@pytest.mark.parametrize(("name", "cls"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                           ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)])
def test_optimizer_defaults_follow_the_papers(compose, tmp_path, name, cls):
    cfg = compose([f"optimizer={name}", "optimizer.exclude_norm_and_bias=true", f"paths.run_dir={tmp_path}"])
    optimizer = build_optimizer(cfg.optimizer, nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    assert isinstance(optimizer, cls) and len(optimizer.param_groups) == 2
    if name == "adam":
        assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["lr"] == 1e-3
    if name == "sgd":
        assert optimizer.defaults["momentum"] == 0.9


def test_unknown_optimizer_argument_is_a_user_error():
    cfg = OmegaConf.create({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "betas": [0.9, 0.99]})
    with pytest.raises(UserError, match="optimizer"):
        build_optimizer(cfg, nn.Linear(2, 2))


def test_a_warmup_that_overlaps_the_first_decay_is_refused():
    """600 steps, decay at 50% = step 300, warm-up 400: the schedule would be lr/100 then x10 (a real bug)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    cfg = OmegaConf.create({"_target_": "torch.optim.lr_scheduler.MultiStepLR", "_partial_": True,
                            "milestones": [0.5, 0.75], "unit": "fraction", "warmup_steps": 400,
                            "warmup_factor": 0.1, "warmup_mode": "constant"})
    with pytest.raises(UserError, match=r"scheduler.warmup_steps=400.*first lr decay at optimizer step 300"):
        build_scheduler(cfg, optimizer, 600, 40)
    with pytest.raises(UserError, match="whole run"):
        build_scheduler(OmegaConf.merge(cfg, {"milestones": [0.99]}), optimizer, 300, 40)
    build_scheduler(cfg, optimizer, 1185, 79)  # 400 < 592: fine
