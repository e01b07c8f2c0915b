"""Multiply-adds (FLOPs / 2 from torch.utils.flop_counter) against the papers' figures."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.googlenet import GoogLeNet, Inception, InceptionSpec
from models.mobilenet import MobileNetV1
from models.profile import profile_model
from models.resnet import ResNet
from models.vgg import VGG
from tests.models.conftest import on_meta


@pytest.mark.parametrize(("depth", "giga"), [(18, 1.8), (34, 3.6), (50, 3.8), (101, 7.6), (152, 11.3)])
def test_resnet_multiply_adds_with_v1_stride(depth: int, giga: float) -> None:
    macs = profile_model(on_meta(ResNet, depth=depth, stride_in_1x1=True), (3, 224, 224))["macs"]
    assert macs / 1e9 == pytest.approx(giga, rel=0.02)


def test_v15_stride_placement_costs_more() -> None:
    v1 = profile_model(on_meta(ResNet, depth=50, stride_in_1x1=True), (3, 224, 224))["macs"]
    v15 = profile_model(on_meta(ResNet, depth=50, stride_in_1x1=False), (3, 224, 224))["macs"]
    assert round(v1 / 1e9, 2) == 3.86
    assert round(v15 / 1e9, 2) == 4.09


@pytest.mark.parametrize(("config", "giga"), [("D", 15.5), ("E", 19.6)])
def test_vgg_multiply_adds(config: str, giga: float) -> None:
    macs = profile_model(on_meta(VGG, config=config), (3, 224, 224))["macs"]
    assert round(macs / 1e9, 1) == giga


def test_googlenet_about_1_5_giga() -> None:
    macs = profile_model(on_meta(GoogLeNet), (3, 224, 224))["macs"]
    assert macs == pytest.approx(1.55e9, rel=0.07)  # "about 1.5 G"; ours is 1.58 G


def test_mobilenet_v1_569_mega() -> None:
    assert round(profile_model(on_meta(MobileNetV1), (3, 224, 224))["macs"] / 1e6) == 569


def _macs(module: torch.nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        module(x)
    return counter.get_total_flops() // 2


def test_inception_3a_5x5_path_cost_example() -> None:
    """The lecture example: the 5x5 path of inception (3a) on 28x28x192."""
    x = torch.zeros(1, 192, 28, 28, device="meta")
    spec = InceptionSpec(64, 96, 128, 16, 32, 32)
    naive = on_meta(Inception, 192, spec, naive=True)
    reduced = on_meta(Inception, 192, spec, naive=False)
    assert _macs(naive.branch3, x) == 120_422_400
    assert _macs(reduced.branch3, x) == 12_443_648
    # The whole module: Table 1 lists 128 M operations for (3a).
    assert round(_macs(reduced, x) / 1e6) == 128
