"""Parameter counts at 1000 classes and the native input match the papers (and torchvision's counts)."""

from __future__ import annotations

import pytest
from torch import nn

from models.alexnet import AlexNet
from models.bn_inception import BNInception
from models.densenet import DenseNet
from models.efficientnet import EfficientNet
from models.googlenet import GoogLeNet
from models.inception import InceptionV3
from models.inception_v4 import InceptionResNetV2, InceptionV4
from models.lenet import LeNet5
from models.mobilenet import MobileNetV1, MobileNetV2
from models.mobilenet_v3 import MobileNetV3
from models.resnet import ResNet
from models.shufflenet import ShuffleNetV2
from models.squeezenet import SqueezeNet
from models.vgg import VGG
from models.xception import Xception
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


def test_bn_inception_is_the_reference_port_without_its_conv_biases() -> None:
    """The reference ports of Fig. 5 (yjxiong's Caffe model as Cadene's ``pretrainedmodels.bninception``;
    osmr's ``imgclsmob`` asserts it) have 11,295,240 parameters with a bias on every conv. The paper drops
    those biases (BN's shift subsumes them, Sec. 3.2): one per conv output channel, 10,016 in all."""
    model = on_meta(BNInception)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)) == 10_016
    assert count(model) == 11_295_240 - 10_016
    # TF-slim's separable first layer: 7x7 depthwise with multiplier 8, then 1x1 24 -> 64, for 7x7x3x64.
    separable = on_meta(BNInception, stem="separable")
    assert count(model) - count(separable) == 7 * 7 * 3 * 64 - (7 * 7 * 3 * 8 + 3 * 8 * 64)


def _conv_bn(in_channels: int, out_channels: int, kh: int, kw: int | None = None) -> int:
    """A bias-free conv's weights plus its BN's scale and shift."""
    return in_channels * out_channels * kh * (kh if kw is None else kw) + 2 * out_channels


def _fc(in_features: int, classes: int = 1000) -> int:
    return in_features * classes + classes


def _stem_figure_3() -> int:
    return (_conv_bn(3, 32, 3) + _conv_bn(32, 32, 3) + _conv_bn(32, 64, 3) + _conv_bn(64, 96, 3)
            + _conv_bn(160, 64, 1) + _conv_bn(64, 96, 3)
            + _conv_bn(160, 64, 1) + _conv_bn(64, 64, 7, 1) + _conv_bn(64, 64, 1, 7) + _conv_bn(64, 96, 3)
            + _conv_bn(192, 192, 3))


def _reduction_a(c: int, k: int, l: int, m: int, n: int) -> int:  # noqa: E741 (Table 1's names)
    return _conv_bn(c, n, 3) + _conv_bn(c, k, 1) + _conv_bn(k, l, 3) + _conv_bn(l, m, 3)


def test_inception_v4_by_hand_from_figures_3_to_9_is_the_reference_count() -> None:
    """42,679,816: TF-slim's ``inception_v4`` as ported by Cadene, osmr (``imgclsmob``) and timm (42.68 M)."""
    a = (_conv_bn(384, 96, 1) + _conv_bn(384, 64, 1) + _conv_bn(64, 96, 3) + _conv_bn(384, 64, 1)
         + _conv_bn(64, 96, 3) + _conv_bn(96, 96, 3) + _conv_bn(384, 96, 1))
    b = (_conv_bn(1024, 384, 1) + _conv_bn(1024, 192, 1) + _conv_bn(192, 224, 1, 7) + _conv_bn(224, 256, 7, 1)
         + _conv_bn(1024, 192, 1) + _conv_bn(192, 192, 1, 7) + _conv_bn(192, 224, 7, 1) + _conv_bn(224, 224, 1, 7)
         + _conv_bn(224, 256, 7, 1) + _conv_bn(1024, 128, 1))
    c = (_conv_bn(1536, 256, 1) + _conv_bn(1536, 384, 1) + 2 * _conv_bn(384, 256, 1, 3) + _conv_bn(1536, 384, 1)
         + _conv_bn(384, 448, 1, 3) + _conv_bn(448, 512, 3, 1) + 2 * _conv_bn(512, 256, 1, 3) + _conv_bn(1536, 256, 1))
    reduction_b = (_conv_bn(1024, 192, 1) + _conv_bn(192, 192, 3) + _conv_bn(1024, 256, 1) + _conv_bn(256, 256, 1, 7)
                   + _conv_bn(256, 320, 7, 1) + _conv_bn(320, 320, 3))
    by_hand = (_stem_figure_3() + 4 * a + _reduction_a(384, 192, 224, 256, 384) + 7 * b + reduction_b + 3 * c
               + _fc(1536))
    assert by_hand == 42_679_816
    assert count(on_meta(InceptionV4)) == by_hand


def _inception_resnet(c: int) -> tuple[int, int, int]:
    """Figs. 16, 17, 19 at width ``c``: branches, then the 1x1 "Linear" conv back to ``c`` (with bias)."""
    a = (_conv_bn(c, 32, 1) + _conv_bn(c, 32, 1) + _conv_bn(32, 32, 3) + _conv_bn(c, 32, 1) + _conv_bn(32, 48, 3)
         + _conv_bn(48, 64, 3) + 128 * c + c)
    b = _conv_bn(c, 192, 1) + _conv_bn(c, 128, 1) + _conv_bn(128, 160, 1, 7) + _conv_bn(160, 192, 7, 1) + 384 * c + c
    cc = _conv_bn(c, 192, 1) + _conv_bn(c, 192, 1) + _conv_bn(192, 224, 1, 3) + _conv_bn(224, 256, 3, 1) + 448 * c + c
    return a, b, cc


def _reduction_b_figure_18(c: int) -> int:
    return (3 * _conv_bn(c, 256, 1) + _conv_bn(256, 384, 3) + _conv_bn(256, 288, 3) + _conv_bn(256, 288, 3)
            + _conv_bn(288, 320, 3))


def test_inception_resnet_v2_reference_layout_is_the_released_network() -> None:
    """55,843,464: TF-slim's ``inception_resnet_v2`` (Cadene's and osmr's ports, timm's 55.84 M; Keras' trainable
    weights): its stem + Mixed_5b (35x35x320), 10 x A, Reduction-A to 1088, 20 x B, Fig. 18 to 2080, 10 x C,
    a 1x1 conv to 1536."""
    stem = (_conv_bn(3, 32, 3) + _conv_bn(32, 32, 3) + _conv_bn(32, 64, 3) + _conv_bn(64, 80, 1) + _conv_bn(80, 192, 3)
            + _conv_bn(192, 96, 1) + _conv_bn(192, 48, 1) + _conv_bn(48, 64, 5) + _conv_bn(192, 64, 1)
            + _conv_bn(64, 96, 3) + _conv_bn(96, 96, 3) + _conv_bn(192, 64, 1))
    by_hand = (stem + 10 * _inception_resnet(320)[0] + _reduction_a(320, 256, 256, 384, 384)
               + 20 * _inception_resnet(1088)[1] + _reduction_b_figure_18(1088) + 10 * _inception_resnet(2080)[2]
               + _conv_bn(2080, 1536, 1) + _fc(1536))
    assert by_hand == 55_843_464
    assert count(on_meta(InceptionResNetV2)) == by_hand


def test_inception_resnet_v2_paper_layout_by_hand_from_figures_15_to_19() -> None:
    """The paper publishes no count: Fig. 3 stem, 5 x A at 384, Reduction-A to 1152, 10 x B, Fig. 18 to 2144,
    5 x C, FC; 32,433,928, 58% of the released network."""
    by_hand = (_stem_figure_3() + 5 * _inception_resnet(384)[0] + _reduction_a(384, 256, 256, 384, 384)
               + 10 * _inception_resnet(1152)[1] + _reduction_b_figure_18(1152) + 5 * _inception_resnet(2144)[2]
               + _fc(2144))
    assert count(on_meta(InceptionResNetV2, layout="paper")) == by_hand == 32_433_928


def test_xception_table_3_counts_the_classifier() -> None:
    """Table 3's 22,855,952 includes the 1000-way logistic regression (2048 x 1000 + 1000) and BN's scale and
    shift; Keras reports the same as trainable, plus 54,528 non-trainable BN running means and variances
    (22,910,480 in all; 20,806,952 trainable without the classifier)."""
    model = on_meta(Xception)
    assert count(model) == 22_855_952
    assert count(model) - count(model.get_classifier()) == 22_855_952 - _fc(2048) == 20_806_952
    assert sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var"))) \
        == 54_528
