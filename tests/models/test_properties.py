"""Property tests: every valid configuration maps (B, C, H, W) -> (B, num_classes); every invalid one
raises ModelConfigError — never a torch shape error. Validity is restated here independently of the code."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.blueprint import Blueprint
from models.errors import ModelConfigError
from models.resnet import IMAGENET_DEPTHS, ResNet

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(build, valid: bool, batch: int, channels: int, size: int, classes: int) -> None:
    if not valid:
        try:
            build()
        except ModelConfigError:
            return
        raise AssertionError("an invalid configuration was accepted")
    model = build()
    x = torch.zeros(batch, channels, size, size, device=next(model.parameters()).device)
    for mode in (True, False):
        model.train(mode)
        with torch.no_grad():
            assert model(x).shape == (batch, classes)


blueprints = st.fixed_dictionaries({
    "in_channels": st.integers(1, 3),
    "num_classes": st.integers(0, 5),
    "input_size": st.integers(1, 40),
    "convs_per_stage": st.integers(0, 3),
    "stage_widths": st.lists(st.integers(0, 8), max_size=3),
    "kernel_size": st.integers(1, 6),
    "pool": st.sampled_from([None, "max", "avg", "min"]),
    "fc_sizes": st.lists(st.integers(0, 16), max_size=2),
    "batch_norm": st.booleans(),
    "dropout": st.sampled_from([0.0, 0.5, 1.0]),
})


def blueprint_is_valid(c: dict) -> bool:
    return (c["num_classes"] >= 1 and all(w >= 1 for w in c["stage_widths"]) and all(f >= 1 for f in c["fc_sizes"])
            and c["kernel_size"] % 2 == 1 and c["pool"] in (None, "max", "avg") and c["dropout"] < 1.0
            and (c["pool"] is None or c["input_size"] >= 2 ** len(c["stage_widths"])))


@SETTINGS
@given(config=blueprints, batch=st.integers(2, 3))
def test_blueprint_valid_configs_classify_and_invalid_ones_explain(config: dict, batch: int) -> None:
    _check(lambda: Blueprint(**config), blueprint_is_valid(config), batch, config["in_channels"],
           config["input_size"], config["num_classes"])


resnets = st.fixed_dictionaries({
    "in_channels": st.integers(1, 3),
    "num_classes": st.integers(0, 12),
    "form": st.sampled_from(["imagenet", "cifar", "wide"]),
    "depth": st.one_of(st.sampled_from([18, 34, 50, 101, 152, 21]), st.integers(0, 40)),
    "block": st.sampled_from(["auto", "basic", "bottleneck"]),
    "residual": st.booleans(),
    "shortcut": st.sampled_from(["A", "B", "C"]),
    "preactivation": st.sampled_from([None, True, False]),
    "stride_in_1x1": st.booleans(),
    "groups": st.sampled_from([1, 1, 2, 3, 32]),
    "width_per_group": st.sampled_from([64, 64, None, 4, 6]),
    "widen_factor": st.integers(1, 3),
    "se_reduction": st.sampled_from([0, 0, 4]),
    "stochastic_depth": st.sampled_from([0.0, 0.3]),
    "input_size": st.integers(1, 72),
})


def resnet_is_valid(c: dict) -> bool:
    if c["num_classes"] < 1:
        return False
    if c["form"] == "imagenet":
        if c["depth"] not in IMAGENET_DEPTHS or c["block"] not in ("auto", IMAGENET_DEPTHS[c["depth"]][0]):
            return False
        block, planes, stride = IMAGENET_DEPTHS[c["depth"]][0], (64, 128, 256, 512), 32
    else:
        block = "basic" if c["block"] == "auto" else c["block"]
        per_stage = 6 if block == "basic" else 9
        offset = 4 if c["form"] == "wide" else 2
        if c["depth"] < per_stage + offset or (c["depth"] - offset) % per_stage:
            return False
        planes, stride = (16, 32, 64), 4
    if c["groups"] != 1 or c["width_per_group"] not in (None, 64):
        if block != "bottleneck":
            return False
        for p in planes:
            width = p * c["widen_factor"]
            if c["width_per_group"] is None and width % c["groups"]:
                return False
            if c["width_per_group"] is not None and (width * c["width_per_group"]) % 64:
                return False
    return c["input_size"] >= stride


@SETTINGS
@given(config=resnets)
def test_resnet_valid_configs_classify_and_invalid_ones_explain(config: dict) -> None:
    def build() -> ResNet:
        with torch.device("meta"):  # shapes are checked for real, without the arithmetic
            return ResNet(**config)

    _check(build, resnet_is_valid(config), 2, config["in_channels"], config["input_size"], config["num_classes"])
