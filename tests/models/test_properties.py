"""Property tests: every valid configuration maps (B, C, H, W) -> (B, num_classes); every invalid one
raises ModelConfigError — never a torch shape error. Validity is restated here independently of the code."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.blueprint import Blueprint
from models.errors import ModelConfigError
from models.resnet import IMAGENET_DEPTHS, ResNet

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


@st.composite
def blueprints(draw) -> dict:
    """Half of the draws stay inside the valid space (positive sizes, odd kernels, a big-enough image)."""
    aim = draw(st.booleans())
    smallest = 1 if aim else 0
    widths = draw(st.lists(st.integers(smallest, 8), max_size=3))
    pool = draw(st.sampled_from([None, "max", "avg"] if aim else [None, "max", "avg", "min"]))
    return {
        "in_channels": draw(st.integers(1, 3)),
        "num_classes": draw(st.integers(smallest, 5)),
        "input_size": draw(st.integers(2 ** len(widths) if aim and pool else 1, 40)),
        "convs_per_stage": draw(st.integers(0, 3)),
        "stage_widths": widths,
        "kernel_size": draw(st.sampled_from([1, 3, 5]) if aim else st.integers(1, 6)),
        "pool": pool,
        "fc_sizes": draw(st.lists(st.integers(smallest, 16), max_size=2)),
        "batch_norm": draw(st.booleans()),
        "dropout": draw(st.sampled_from([0.0, 0.5] if aim else [0.0, 0.5, 1.0])),
    }


def blueprint_is_valid(c: dict) -> bool:
    return (c["num_classes"] >= 1 and all(w >= 1 for w in c["stage_widths"]) and all(f >= 1 for f in c["fc_sizes"])
            and c["kernel_size"] % 2 == 1 and c["pool"] in (None, "max", "avg") and c["dropout"] < 1.0
            and (c["pool"] is None or c["input_size"] >= 2 ** len(c["stage_widths"])))


@SETTINGS
@given(config=blueprints(), batch=st.integers(2, 3))
def test_blueprint_valid_configs_classify_and_invalid_ones_explain(config: dict, batch: int) -> None:
    _check(lambda: Blueprint(**config), blueprint_is_valid(config), batch, config["in_channels"],
           config["input_size"], config["num_classes"])


@st.composite
def resnets(draw) -> dict:
    """Half of the draws stay inside the documented valid space; the other half are anything at all."""
    aim = draw(st.booleans())
    form = draw(st.sampled_from(["imagenet", "cifar", "wide"]))
    block = draw(st.sampled_from(["auto", "basic", "bottleneck"]))
    if aim and form == "imagenet":
        depth = draw(st.sampled_from(sorted(IMAGENET_DEPTHS)))
        block = draw(st.sampled_from(["auto", IMAGENET_DEPTHS[depth][0]]))
    elif aim:
        depth = (6 if block in ("auto", "basic") else 9) * draw(st.integers(1, 3)) + (4 if form == "wide" else 2)
    else:
        depth = draw(st.integers(0, 160))
    bottleneck = block == "bottleneck" or (form == "imagenet" and depth in (50, 101, 152))
    residual = draw(st.booleans())
    grouping = [(1, 64), (32, 4), (2, None)] if aim and bottleneck else [(1, 64)] if aim else \
        [(1, 64), (1, 64), (2, None), (3, None), (32, 4), (4, 6)]
    groups, width_per_group = draw(st.sampled_from(grouping))
    return {
        "in_channels": draw(st.integers(1, 3)),
        "num_classes": draw(st.integers(1, 12) if aim else st.sampled_from([0, *range(1, 13)])),
        "form": form,
        "depth": depth,
        "block": block,
        "residual": residual,
        "shortcut": draw(st.sampled_from(["A", "B", "C"])),
        "preactivation": draw(st.sampled_from([None, True, False])),
        "stride_in_1x1": draw(st.booleans()),
        "groups": groups,
        "width_per_group": width_per_group,
        "widen_factor": draw(st.integers(1, 3)),
        "se_reduction": draw(st.sampled_from([0, 0, 4])),
        "stochastic_depth": draw(st.sampled_from([0.0, 0.3] if residual or not aim else [0.0])),
        "block_dropout": draw(st.sampled_from([0.0, 0.3] if not (aim and bottleneck) else [0.0])),
        "input_size": draw(st.integers(32 if aim else 1, 72)),
    }


def resnet_is_valid(c: dict) -> bool:
    if c["num_classes"] < 1 or (c["stochastic_depth"] > 0 and not c["residual"]):
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
    if c["block_dropout"] > 0 and block != "basic":
        return False
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
@given(config=resnets())
def test_resnet_valid_configs_classify_and_invalid_ones_explain(config: dict) -> None:
    def build() -> ResNet:
        with torch.device("meta"):  # shapes are checked for real, without the arithmetic
            return ResNet(**config)

    _check(build, resnet_is_valid(config), 2, config["in_channels"], config["input_size"], config["num_classes"])
