"""EfficientNet B0-B7 against Tan & Le 2019 (Tables 1 and 2, compound scaling) and torchvision's builders.

The models are built from the configs (``conf/model/efficientnet_b*.yaml`` composed as training does), so
the coefficients there are what is checked.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from models.efficientnet import EfficientNet, MBConv
from models.errors import ModelConfigError
from models.profile import profile_model
from tests.conftest import model_config
from tests.models.conftest import count

# Table 2: parameters and multiply-adds ("FLOPS") at each model's resolution; the resolutions and the
# width / depth coefficients of the released models (torchvision's builders use the same).
TABLE_2 = {0: (5.3e6, 0.39e9), 1: (7.8e6, 0.70e9), 2: (9.2e6, 1.0e9), 3: (12e6, 1.8e9), 4: (19e6, 4.2e9),
           5: (30e6, 9.9e9), 6: (43e6, 19e9), 7: (66e6, 37e9)}
COEFFICIENTS = {0: (1.0, 1.0, 224, 0.2), 1: (1.0, 1.1, 240, 0.2), 2: (1.1, 1.2, 260, 0.3), 3: (1.2, 1.4, 300, 0.3),
                4: (1.4, 1.8, 380, 0.4), 5: (1.6, 2.2, 456, 0.4), 6: (1.8, 2.6, 528, 0.5), 7: (2.0, 3.1, 600, 0.5)}
B0_BLOCKS = (1, 2, 2, 3, 3, 4, 1)  # Table 1, stages 2-8 ("#Layers")


def from_config(b: int, device: str = "meta", **overrides) -> EfficientNet:
    """``model=efficientnet_b<b>`` with 3 channels and 1000 classes (what the paper and torchvision use)."""
    node = OmegaConf.to_container(model_config(f"efficientnet_b{b}"), resolve=False)
    side = node.pop("paper")["input_size"]
    node.pop("channels_last")
    node.update(in_channels=3, num_classes=1000, input_size=side, **overrides)
    with torch.device(device):
        return instantiate(node).eval()


def torchvision_model(b: int, device: str = "meta") -> nn.Module:
    with torch.device(device):
        return torchvision.models.get_model(f"efficientnet_b{b}", weights=None).eval()


@pytest.mark.parametrize("b", list(COEFFICIENTS))
def test_configs_hold_the_coefficients_and_resolutions(b: int) -> None:
    cfg = model_config(f"efficientnet_b{b}")
    assert (cfg.width_mult, cfg.depth_mult, cfg.paper.input_size, cfg.dropout) == COEFFICIENTS[b]
    assert cfg.stochastic_depth == 0.2  # survival probability 0.8 for the last block (Sec. 5.2)


@pytest.mark.parametrize("b", list(TABLE_2))
def test_parameters_and_multiply_adds_are_torchvisions_and_table_2s(b: int) -> None:
    model, theirs = from_config(b), torchvision_model(b)
    assert count(model) == count(theirs)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    params, madds = TABLE_2[b]
    assert count(model) == pytest.approx(params, rel=0.025)  # the table rounds to 2 digits: 12 M is 12.2 M
    side = COEFFICIENTS[b][2]
    assert profile_model(model, (3, side, side))["macs"] == pytest.approx(madds, rel=0.05)


@pytest.mark.parametrize("b", list(COEFFICIENTS))
def test_batchnorm_settings_are_torchvisions(b: int) -> None:
    """The B5-B7 weights torchvision ported from TF expect eps 1e-3: a setting of the function, not of training."""
    ours = [(m.eps, m.momentum) for m in from_config(b).modules() if isinstance(m, nn.BatchNorm2d)]
    theirs = [(m.eps, m.momentum) for m in torchvision_model(b).modules() if isinstance(m, nn.BatchNorm2d)]
    assert ours == theirs
    assert ours[0] == ((1e-3, 0.01) if b >= 5 else (1e-5, 0.1))


def test_b0_follows_table_1() -> None:
    """Output resolution x channels after the stem, each stage and the final 1x1 conv, at 224."""
    sizes = {row["name"]: row["output"] for row in profile_model(from_config(0), (3, 224, 224))["rows"]}
    table = [(112, 32), (112, 16), (56, 24), (28, 40), (14, 80), (14, 112), (7, 192), (7, 320), (7, 1280)]
    assert [sizes[f"features.{i}"] for i in range(9)] == [[s, s, c] for s, c in table]
    model = from_config(0)
    assert [len(model.features[i]) for i in range(1, 8)] == list(B0_BLOCKS)
    kernels = [model.features[i][0].block[-3][0].kernel_size[0] for i in range(1, 8)]  # the depthwise conv
    assert kernels == [3, 3, 5, 3, 5, 5, 3]


def test_compound_scaling_rounds_widths_to_eights_and_depths_up() -> None:
    """B2 (w = 1.1): 32 x 1.1 = 35.2 -> 32, 40 x 1.1 = 44 -> 48, 112 x 1.1 = 123.2 -> 120, 192 x 1.1 = 211.2
    -> 208; B7 (d = 3.1): ceil(3.1 n) blocks, n = 1, 2, 2, 3, 3, 4, 1 -> 4, 7, 7, 10, 10, 13, 4."""
    b2 = from_config(2)
    widths = [b2.features[0].out_channels] + [b2.features[i][-1].out_channels for i in range(1, 8)]
    assert widths == [32, 16, 24, 48, 88, 120, 208, 352]
    assert b2.num_features == 4 * 352
    b7 = from_config(7)
    assert [len(b7.features[i]) for i in range(1, 8)] == [4, 7, 7, 10, 10, 13, 4]
    assert [len(b7.features[i]) for i in range(1, 8)] == [math.ceil(3.1 * n) for n in B0_BLOCKS]


def test_stochastic_depth_grows_linearly_to_0_2_over_the_blocks() -> None:
    blocks = [m for m in from_config(7).modules() if isinstance(m, MBConv)]
    theirs = [m.stochastic_depth.p for m in torchvision_model(7).modules() if hasattr(m, "stochastic_depth")]
    assert [block.stochastic_depth.p for block in blocks] == theirs
    assert [block.stochastic_depth.p for block in blocks] == pytest.approx([0.2 * i / 55 for i in range(55)])


def test_in_training_it_draws_the_same_drops_as_torchvision() -> None:
    """Train mode, same seed: the same stochastic depth and dropout draws and batch statistics, the same output."""
    torch.manual_seed(0)
    theirs = torchvision_model(0, device="cpu").train()
    model = from_config(0, device="cpu")
    model.load_state_dict(theirs.state_dict(), strict=True)
    model.train()
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(1)
    expected = theirs(x)
    torch.manual_seed(1)
    torch.testing.assert_close(model(x), expected)


@torch.no_grad()
def test_b0_interface_on_real_numbers() -> None:
    """Too many layers for test_interface's real-number check: forward is forward_head(forward_features)."""
    model = EfficientNet(1, 10, 32).eval()
    x = torch.randn(2, 1, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, 1280, 1, 1)
    logits = model(x)
    assert torch.equal(model.forward_head(features), logits)
    torch.testing.assert_close(model.get_classifier()(model.forward_head(features, pre_logits=True)), logits)


def test_fashion_mnist_sized_grey_images_run_end_to_end() -> None:
    model = EfficientNet(1, 10, 28).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(("kwargs", "key"), [({"width_mult": 0}, "width_mult"), ({"depth_mult": -1.0}, "depth_mult"),
                                             ({"bn_eps": 0}, "bn_eps"), ({"stochastic_depth": 1.0}, "stochastic_depth")])
def test_bad_coefficients_are_refused_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ModelConfigError, match=f"model.{key}=") as info:
        EfficientNet(**kwargs)
    assert info.value.key == key
