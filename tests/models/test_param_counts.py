"""Parameter counts at 1000 classes and the native input match the papers (and torchvision's counts)."""

from __future__ import annotations

import pytest

from models.alexnet import AlexNet
from models.densenet import DenseNet
from models.efficientnet import EfficientNet
from models.googlenet import GoogLeNet
from models.inception import InceptionV3
from models.lenet import LeNet5
from models.mobilenet import MobileNetV1, MobileNetV2
from models.mobilenet_v3 import MobileNetV3
from models.resnet import ResNet
from models.shufflenet import ShuffleNetV2
from models.squeezenet import SqueezeNet
from models.vgg import VGG
from models.zfnet import ZFNet
from tests.models.conftest import count, on_meta


@pytest.mark.parametrize(("config", "millions"), [
    ("A", 132.9), ("A-LRN", 132.9), ("B", 133.0), ("C", 133.6), ("D", 138.4), ("E", 143.7),
])
def test_vgg_configurations(config: str, millions: float) -> None:
    assert round(count(on_meta(VGG, config=config)) / 1e6, 1) == millions


def test_vgg_exact_counts_match_torchvision() -> None:
    assert count(on_meta(VGG, config="D")) == 138_357_544
    assert count(on_meta(VGG, config="E")) == 143_667_240
    assert count(on_meta(VGG, config="16")) == 138_357_544  # depth alias


@pytest.mark.parametrize(("depth", "expected"), [
    (18, 11_689_512), (34, 21_797_672), (50, 25_557_032), (101, 44_549_160), (152, 60_192_808),
])
def test_imagenet_resnets_option_b(depth: int, expected: int) -> None:
    assert count(on_meta(ResNet, depth=depth, shortcut="B")) == expected
    # The stride placement moves computation, not parameters.
    assert count(on_meta(ResNet, depth=depth, shortcut="B", stride_in_1x1=True)) == expected


@pytest.mark.parametrize(("depth", "millions"), [
    (20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7), (1202, 19.4),
])
def test_cifar_resnets_option_a(depth: int, millions: float) -> None:
    params = count(on_meta(ResNet, 3, 10, 32, form="cifar", depth=depth, shortcut="A"))
    assert params / 1e6 == pytest.approx(millions, rel=0.02)


def test_cifar_resnet_exact_counts() -> None:
    assert count(on_meta(ResNet, 3, 10, 32, form="cifar", depth=20, shortcut="A")) == 269_722
    assert count(on_meta(ResNet, 3, 10, 32, form="cifar", depth=110, shortcut="A")) == 1_727_962


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_plain_twin_has_exactly_the_option_a_parameters(depth: int) -> None:
    residual = on_meta(ResNet, 3, 10, 32, form="cifar", depth=depth, shortcut="A", residual=True)
    plain = on_meta(ResNet, 3, 10, 32, form="cifar", depth=depth, shortcut="A", residual=False)
    assert count(plain) == count(residual)
    assert count(on_meta(ResNet, depth=34, residual=False)) == count(on_meta(ResNet, depth=34, shortcut="A"))


def test_shortcut_options_order_parameters() -> None:
    """A adds nothing, B projects only where shapes change, C projects everywhere (He et al., Table 3)."""
    a, b, c = (count(on_meta(ResNet, depth=34, shortcut=s)) for s in "ABC")
    assert a < b < c
    assert b - a == 3 * 0 + (64 * 128 + 2 * 128) + (128 * 256 + 2 * 256) + (256 * 512 + 2 * 512)


@pytest.mark.parametrize(("groups", "width", "millions"), [(32, 4, 25.03), (8, 14, 25.60), (4, 24, 25.29), (2, 40, 25.43)])
def test_resnext50_preserves_complexity(groups: int, width: int, millions: float) -> None:
    params = count(on_meta(ResNet, depth=50, groups=groups, width_per_group=width))
    assert round(params / 1e6, 2) == millions
    assert 25.0 <= round(params / 1e6, 1) <= 25.6


def test_resnext50_32x4d_exact() -> None:
    assert count(on_meta(ResNet, depth=50, groups=32, width_per_group=4)) == 25_028_904


def test_resnext101_exact_counts_match_torchvision() -> None:
    assert count(on_meta(ResNet, depth=101, groups=32, width_per_group=8)) == 88_791_336
    assert count(on_meta(ResNet, depth=101, groups=64, width_per_group=4)) == 83_455_272


def test_wide_resnets() -> None:
    assert round(count(on_meta(ResNet, 3, 10, 32, form="wide", depth=28, widen_factor=10)) / 1e6, 1) == 36.5
    assert round(count(on_meta(ResNet, 3, 10, 32, form="wide", depth=16, widen_factor=8)) / 1e6, 1) == 11.0
    assert count(on_meta(ResNet, depth=50, widen_factor=2)) == 68_883_240  # torchvision wide_resnet50_2
    assert count(on_meta(ResNet, depth=101, widen_factor=2)) == 126_886_696  # torchvision wide_resnet101_2


def test_se_resnet50() -> None:
    """Hu et al. Table 2: SE-ResNet-50 has 28.09 M parameters (ResNet-50 + 2.5 M in the SE blocks)."""
    assert count(on_meta(ResNet, depth=50, se_reduction=16)) == 28_088_024


@pytest.mark.parametrize(("depth", "expected"), [
    (121, 7_978_856), (169, 14_149_480), (201, 20_013_928), (264, 33_337_704),
])
def test_densenets(depth: int, expected: int) -> None:
    assert count(on_meta(DenseNet, depth=depth)) == expected


def test_densenet161_has_growth_rate_48() -> None:
    assert count(on_meta(DenseNet, depth=161, growth_rate=48)) == 28_681_000  # torchvision densenet161


def test_cifar_densenets() -> None:
    """Huang et al. Table 2: DenseNet (L=40, k=12) 1.0 M, DenseNet-BC (L=100, k=12) 0.8 M, (L=250, k=24) 15.3 M."""
    assert round(count(on_meta(DenseNet, 3, 10, 32, form="cifar", depth=40, growth_rate=12, bottleneck=False,
                               compression=1.0)) / 1e6, 1) == 1.0
    assert round(count(on_meta(DenseNet, 3, 10, 32, form="cifar", depth=100, growth_rate=12)) / 1e6, 1) == 0.8
    assert round(count(on_meta(DenseNet, 3, 10, 32, form="cifar", depth=250, growth_rate=24)) / 1e6, 1) == 15.3


def test_squeezenet() -> None:
    assert count(on_meta(SqueezeNet, version="1.0")) == 1_248_424
    assert count(on_meta(SqueezeNet, version="1.1")) == 1_235_496


def test_mobilenets() -> None:
    assert round(count(on_meta(MobileNetV1)) / 1e6, 2) == 4.23
    assert count(on_meta(MobileNetV2)) == 3_504_872


@pytest.mark.parametrize(("width", "expected", "millions"), [
    (0.5, 1_366_792, 1.4), (1.0, 2_278_604, 2.3), (1.5, 3_503_624, 3.5), (2.0, 7_393_996, 7.4),
])
def test_shufflenet_v2_matches_torchvision_and_table_5(width: float, expected: int, millions: float) -> None:
    params = count(on_meta(ShuffleNetV2, width_multiplier=width))
    assert params == expected  # torchvision's num_params
    assert round(params / 1e6, 1) == millions


def test_mobilenet_v3_matches_torchvision_and_table_3() -> None:
    large, small = count(on_meta(MobileNetV3, variant="large")), count(on_meta(MobileNetV3, variant="small"))
    assert (large, small) == (5_483_032, 2_542_856)  # torchvision's num_params
    assert (large, small) == (pytest.approx(5.4e6, rel=0.02), pytest.approx(2.5e6, rel=0.02))  # Table 3


@pytest.mark.parametrize(("width", "depth", "expected", "millions"), [
    (1.0, 1.0, 5_288_548, 5.3), (1.0, 1.1, 7_794_184, 7.8), (1.1, 1.2, 9_109_994, 9.2),
    (1.2, 1.4, 12_233_232, 12), (1.4, 1.8, 19_341_616, 19), (1.6, 2.2, 30_389_784, 30),
    (1.8, 2.6, 43_040_704, 43), (2.0, 3.1, 66_347_960, 66),
])
def test_efficientnets_match_torchvision_and_table_2(width: float, depth: float, expected: int,
                                                     millions: float) -> None:
    """B0-B7: torchvision's num_params exactly, Table 2's two-digit figures within 2.5%."""
    params = count(on_meta(EfficientNet, width_mult=width, depth_mult=depth))
    assert params == expected
    assert params / 1e6 == pytest.approx(millions, rel=0.025)


def test_alexnet_two_gpu_and_one_gpu() -> None:
    assert count(on_meta(AlexNet, layout="paper")) == 60_965_224
    assert count(on_meta(AlexNet, layout="torchvision", input_size=224)) == 61_100_840


def test_zfnet() -> None:
    # conv1 7x7x3x96 and an ungrouped conv2..5; the same 6x6x256 map feeds FC-4096.
    assert count(on_meta(ZFNet)) == 62_357_608


def test_lenet5_classic_and_fc100_variant() -> None:
    assert count(LeNet5()) == 61_706
    assert count(LeNet5(fc_sizes=(120, 100))) == 61_706 - (120 * 84 + 84 + 84 * 10 + 10) + (120 * 100 + 100 + 100 * 10 + 10)


def test_googlenet_inception_modules_match_table_1() -> None:
    """Table 1 counts weights in units of 1024 without biases; 3a is 159 K, 5b 1388 K."""
    model = on_meta(GoogLeNet)
    weights = {name: sum(p.numel() for n, p in getattr(model, f"inception{name}").named_parameters()
                         if n.endswith("weight")) for name in ("3a", "3b", "5b")}
    assert weights == {"3a": 163_328, "3b": 388_096, "5b": 1_442_816}
    assert int(weights["3a"] / 1024) == 159
    assert int(weights["3b"] / 1024) == 379  # table: 380 K
    assert weights["5b"] / 1024 == pytest.approx(1388, rel=0.04)


def test_googlenet_total_without_aux_heads() -> None:
    model = on_meta(GoogLeNet)
    main = count(model) - count(model.aux1) - count(model.aux2)
    assert main == 6_998_552  # the paper's ~6.8 M (Table 1 has rounding slips, e.g. 4c)
    assert count(on_meta(GoogLeNet, aux_logits=False)) == main


def test_inception_v3_matches_torchvision() -> None:
    model = on_meta(InceptionV3)
    assert count(model) == 27_161_264
    assert count(model) - count(model.AuxLogits) == 23_834_568  # Keras Applications: 23.9 M
