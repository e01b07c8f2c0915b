"""Invalid arguments raise ModelConfigError naming the key and the fix, before any torch error."""

from __future__ import annotations

import pytest

from models.alexnet import AlexNet
from models.blueprint import Blueprint
from models.densenet import DenseNet
from models.errors import ModelConfigError
from models.googlenet import GoogLeNet
from models.inception import InceptionV3
from models.lenet import LeNet5
from models.mobilenet import MobileNetV1
from models.resnet import ResNet
from models.squeezenet import SqueezeNet
from models.vgg import VGG


def test_unknown_resnet_depth_lists_the_valid_ones() -> None:
    with pytest.raises(ModelConfigError, match=r"depth=21.*18, 34, 50, 101, 152") as info:
        ResNet(depth=21)
    assert info.value.key == "depth"
    with pytest.raises(ModelConfigError, match=r"6n\+2"):
        ResNet(3, 10, 32, form="cifar", depth=21)
    with pytest.raises(ModelConfigError, match=r"6n\+4"):
        ResNet(3, 10, 32, form="wide", depth=26)


def test_cardinality_must_divide_the_width() -> None:
    with pytest.raises(ModelConfigError, match="does not divide the bottleneck width") as info:
        ResNet(depth=50, groups=3, width_per_group=None)
    assert info.value.key == "groups"
    with pytest.raises(ModelConfigError, match="bottleneck blocks only"):
        ResNet(depth=18, groups=32, width_per_group=4)
    with pytest.raises(ModelConfigError, match="fractional"):
        ResNet(3, 10, 32, form="cifar", depth=11, block="bottleneck", width_per_group=6)


@pytest.mark.parametrize("factory", [
    lambda: ResNet(num_classes=0), lambda: VGG(num_classes=0), lambda: AlexNet(num_classes=0),
    lambda: DenseNet(num_classes=0), lambda: LeNet5(num_classes=0), lambda: Blueprint(num_classes=0),
    lambda: GoogLeNet(num_classes=0), lambda: SqueezeNet(num_classes=0), lambda: MobileNetV1(num_classes=0),
    lambda: InceptionV3(num_classes=0),
])
def test_zero_classes(factory) -> None:
    with pytest.raises(ModelConfigError, match=r"num_classes=0: must be a positive integer"):
        factory()


@pytest.mark.parametrize(("factory", "minimum"), [
    (lambda: AlexNet(1, 10, 28), 67),
    (lambda: VGG(1, 10, 28), 32),
    (lambda: GoogLeNet(1, 10, 28), 47),
    (lambda: InceptionV3(1, 10, 32), 299),
    (lambda: InceptionV3(1, 10, 32, aux_logits=False), 75),
    (lambda: SqueezeNet(1, 10, 16), 29),
    (lambda: LeNet5(1, 10, 8), 16),
    (lambda: ResNet(3, 10, 16), 32),
])
def test_input_too_small_names_the_minimum_image_size(factory, minimum: int) -> None:
    with pytest.raises(ModelConfigError, match=rf"at least {minimum}(?!\d)") as info:
        factory()
    assert "data.image_size" in str(info.value)


def test_minimum_sizes_really_work() -> None:
    import torch

    for model, size in ((AlexNet(1, 10, 67), 67), (GoogLeNet(1, 10, 47), 47), (SqueezeNet(1, 10, 29), 29)):
        assert model.eval()(torch.zeros(1, 1, size, size)).shape == (1, 10)


@pytest.mark.parametrize(("factory", "key"), [
    (lambda: ResNet(shortcut="D"), "shortcut"),
    (lambda: ResNet(form="tiny"), "form"),
    (lambda: ResNet(stochastic_depth=1.0), "stochastic_depth"),
    (lambda: VGG(config="F"), "config"),
    (lambda: AlexNet(layout="three-gpu"), "layout"),
    (lambda: DenseNet(depth=122), "depth"),
    (lambda: DenseNet(form="cifar", depth=101), "depth"),
    (lambda: SqueezeNet(version="2.0"), "version"),
    (lambda: Blueprint(kernel_size=4), "kernel_size"),
    (lambda: Blueprint(stage_widths=[32, 0]), "stage_widths"),
    (lambda: Blueprint(1, 10, 4, stage_widths=[8, 8, 8]), "input_size"),
    (lambda: MobileNetV1(width_multiplier=0), "width_multiplier"),
    (lambda: GoogLeNet(inception="fancy"), "inception"),
    (lambda: ResNet(init="orthogonal"), "init"),
])
def test_invalid_choices_name_their_key(factory, key: str) -> None:
    with pytest.raises(ModelConfigError) as info:
        factory()
    assert info.value.key == key
    assert str(info.value).startswith(f"model.{key}=")


def test_resnet_options_that_need_each_other() -> None:
    with pytest.raises(ModelConfigError, match="plain network") as info:
        ResNet(3, 10, 32, form="cifar", depth=20, residual=False, stochastic_depth=0.5)
    assert info.value.key == "stochastic_depth"
    with pytest.raises(ModelConfigError, match="basic blocks") as info:
        ResNet(depth=50, block_dropout=0.3)
    assert info.value.key == "block_dropout"


def _family_classes() -> list[str]:
    """Every model class a config in conf/model/ builds (its ``_target_``)."""
    from omegaconf import OmegaConf

    from tests.conftest import CONF

    targets = {str(OmegaConf.load(path).get("_target_", "")) for path in (CONF / "model").glob("*.yaml")}
    return sorted(t for t in targets if t.startswith("models."))


@pytest.mark.parametrize("target", _family_classes())
@pytest.mark.parametrize("key", ["in_channels", "num_classes"])
def test_every_family_refuses_zero_channels_or_classes_before_building_a_layer(target, key) -> None:
    import warnings

    from hydra.utils import get_class

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a layer built with 0 channels warns ("zero-element tensors")
        with pytest.raises(ModelConfigError, match=rf"model\.{key}=0: must be a positive integer") as info:
            get_class(target)(**{key: 0})
    assert info.value.key == key


def test_a_densenet_compression_that_leaves_a_transition_no_channels_is_named_before_it_is_built() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ModelConfigError, match=r"transition1 with int\(256 x 0.001\) = 0 channels") as info:
            DenseNet(depth=121, compression=0.001)  # 64 + 6 * 32 = 256 channels enter transition1
    assert info.value.key == "compression" and "0.00391" in str(info.value)  # 1 / 256


def test_lenet5_takes_exactly_two_conv_widths() -> None:
    with pytest.raises(ModelConfigError, match="two widths") as info:
        LeNet5(conv_channels=(6,))
    assert info.value.key == "conv_channels"


def test_any_layer_rounded_down_to_zero_width_is_refused_in_one_paragraph_without_a_warning() -> None:
    """The net under every family: a model whose constructor does not check its widths (here a bare
    torch layer as the model node) still cannot hand training a layer with no weights (torch only warns)."""
    import warnings

    from omegaconf import OmegaConf

    from experiments.core.errors import UserError
    from experiments.training.build import build_model

    node = OmegaConf.create({"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 0, "kernel_size": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserError, match=r"builds layer\(s\) <the model itself> with zero channels") as info:
            build_model(node)
    assert "torch.nn.Conv2d" in str(info.value) and "Raise it" in str(info.value)
