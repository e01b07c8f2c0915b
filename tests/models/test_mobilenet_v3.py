"""MobileNet v3 against Howard et al. 2019 (Tables 1-3, Fig. 4, Sec. 5.2) and torchvision's builders."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import SqueezeExcitation

from models.errors import ModelConfigError
from models.mobilenet_v3 import Bneck, MobileBottleneck, MobileNetV3
from models.profile import profile_model
from tests.models.conftest import count, on_meta

# Table 3 (floating point, 224x224): parameters and multiply-adds at width 1.0. (Its 0.75 rows, 4.0 M /
# 155 M and 2.0 M / 44 M, are TF's scaling, which torchvision's width_mult and so the zoo's do not follow.)
TABLE_3 = {"large": (5.4e6, 219e6), "small": (2.5e6, 56e6)}
# Tables 1 and 2, read column by column: output side and channels of the stem, of each bneck and of the
# 1x1 conv before the pool (the next row's "Input" and the row's "#out"); the bnecks with SE and with HS.
LAYOUT = {
    "large": ([112, 112, 56, 56, 28, 28, 28, 14, 14, 14, 14, 14, 14, 7, 7, 7, 7],
              [16, 16, 24, 24, 40, 40, 40, 80, 80, 80, 80, 112, 112, 160, 160, 160, 960],
              8, 9),
    "small": ([112, 56, 28, 28, 14, 14, 14, 14, 14, 7, 7, 7, 7],
              [16, 16, 24, 24, 40, 40, 40, 48, 48, 96, 96, 96, 576],
              9, 8),
}


@pytest.mark.parametrize("variant", list(TABLE_3))
def test_parameters_and_multiply_adds_are_torchvisions_and_table_3s(variant: str) -> None:
    model = on_meta(MobileNetV3, variant=variant)
    with torch.device("meta"):
        theirs = torchvision.models.get_model(f"mobilenet_v3_{variant}", weights=None)
    assert count(model) == count(theirs)
    params, madds = TABLE_3[variant]
    assert count(model) == pytest.approx(params, rel=0.025)
    assert profile_model(model, (3, 224, 224))["macs"] == pytest.approx(madds, rel=0.025)


@pytest.mark.parametrize("variant", list(TABLE_3))
def test_batchnorm_settings_are_torchvisions(variant: str) -> None:
    """TF's eps 1e-3 (it changes the function: torchvision's weights expect it) and momentum 0.01 (decay 0.99)."""
    with torch.device("meta"):
        theirs = torchvision.models.get_model(f"mobilenet_v3_{variant}", weights=None)
    settings = [(m.eps, m.momentum) for m in on_meta(MobileNetV3, variant=variant).modules()
                if isinstance(m, nn.BatchNorm2d)]
    assert settings == [(m.eps, m.momentum) for m in theirs.modules() if isinstance(m, nn.BatchNorm2d)]
    assert set(settings) == {(0.001, 0.01)}


@pytest.mark.parametrize(("variant", "width"), [("large", 0.75), ("small", 0.75), ("large", 1.25)])
def test_width_multipliers_round_every_layer_as_torchvision_does(variant: str, width: float) -> None:
    with torch.device("meta"):
        theirs = torchvision.models.get_model(f"mobilenet_v3_{variant}", weights=None, width_mult=width)
    ours = on_meta(MobileNetV3, variant=variant, width_multiplier=width)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


@pytest.mark.parametrize("variant", list(LAYOUT))
def test_layout_follows_tables_1_and_2(variant: str) -> None:
    sides, channels, with_se, with_hswish = LAYOUT[variant]
    model = on_meta(MobileNetV3, variant=variant)
    sizes = {row["name"]: row["output"] for row in profile_model(model, (3, 224, 224))["rows"]}
    assert [sizes[f"features.{i}"] for i in range(len(sides))] == [[s, s, c] for s, c in zip(sides, channels)]
    blocks = [m for m in model.features if isinstance(m, MobileBottleneck)]
    assert sum(any(isinstance(m, SqueezeExcitation) for m in b.modules()) for b in blocks) == with_se
    assert sum(any(isinstance(m, nn.Hardswish) for m in b.modules()) for b in blocks) == with_hswish
    # The head: 1x1 conv without BN to 1280 / 1024 with h-swish, then the classifier.
    hidden = model.classifier[0]
    assert hidden.out_features == (1280 if variant == "large" else 1024) and model.num_features == hidden.out_features


@torch.no_grad()
def test_squeeze_excite_gates_with_the_hard_sigmoid() -> None:
    """Sec. 5.2: the SE gate is ReLU6(x + 3) / 6 of fc2(ReLU(fc1(mean))); bottleneck 1/4 of the expansion."""
    row = Bneck(5, 72, 40, se=True, hswish=False, stride=2)  # Table 1, row 5
    block = MobileBottleneck(24, row, 1.0, nn.BatchNorm2d).eval()
    se = next(m for m in block.modules() if isinstance(m, SqueezeExcitation))
    assert (se.fc1.in_channels, se.fc1.out_channels) == (72, 24)  # 72 / 4 = 18, rounded to a multiple of 8
    x = torch.randn(2, 72, 6, 6)
    squeezed = se.fc2(torch.relu(se.fc1(x.mean((2, 3), keepdim=True))))
    torch.testing.assert_close(se(x), x * torch.clamp(squeezed + 3, 0, 6) / 6)


@torch.no_grad()
def test_a_shape_keeping_block_adds_its_input() -> None:
    block = MobileNetV3(variant="large").features[3].eval()  # 24 -> 72 -> 24, stride 1
    x = torch.randn(1, 24, 8, 8)
    torch.testing.assert_close(block(x), block.block(x) + x)


def test_fashion_mnist_sized_grey_images_run_end_to_end() -> None:
    model = MobileNetV3(1, 10, 28, variant="small").eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 1, 28, 28))
        assert features.shape == (2, 576, 1, 1)
        assert model.forward_head(features).shape == (2, 10)


def test_bad_variant_and_width_are_refused() -> None:
    with pytest.raises(ModelConfigError, match=r"variant='tiny'.*large, small"):
        MobileNetV3(variant="tiny")
    with pytest.raises(ModelConfigError, match=r"width_multiplier=0.*\(0, 4\]") as info:
        MobileNetV3(width_multiplier=0)
    assert info.value.key == "width_multiplier"
    with pytest.raises(ModelConfigError, match=r"bn_momentum=0.*0\.01") as info:
        MobileNetV3(bn_momentum=0)
    assert info.value.key == "bn_momentum"
