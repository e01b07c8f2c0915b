"""The ``activation`` model option: the functions' known values, the modules each family builds, and the
default (``relu``) leaving every network as it was.

Known answers: the functions' definitions on a hand-made input (lecture 2; Maas et al. 2013 for the 0.01
slope, Clevert et al. 2016 for ELU with alpha 1), and the defining property of the option: a network
built with another activation is the default network with only its ReLU modules swapped, so swapping them
back (same weights) gives the default network's outputs exactly, and nothing rectifies behind a
tanh/sigmoid network's back. torchvision's twins are checked against torchvision in
``test_torchvision_compat.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from experiments.training.build import build_model
from models.activations import ACTIVATIONS, ELU_ALPHA, LEAKY_RELU_SLOPE, make_activation
from models.blueprint import Blueprint
from models.errors import ModelConfigError
from models.fully_conv import to_fully_convolutional
from models.resnet import ResNet
from models.vgg import VGG

MODULE_TYPES = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
HAND_INPUT = [-2.0, -0.5, 0.0, 1.5]
HAND_VALUES = {
    "relu": [0.0, 0.0, 0.0, 1.5],
    "leaky_relu": [-0.02, -0.005, 0.0, 1.5],
    "elu": [math.exp(-2.0) - 1, math.exp(-0.5) - 1, 0.0, 1.5],
    "tanh": [math.tanh(v) for v in HAND_INPUT],
    "sigmoid": [1 / (1 + math.exp(-v)) for v in HAND_INPUT],
}
# Every config whose family base declares `activation`, with overrides that keep it small on a CPU.
CONFIGS = {
    "blueprint": [],
    "blueprint_deep": [],
    "vgg11_bn": ["model.fc_size=32"],
    "alexnet": ["data.image_size=67", "model.fc_size=32"],
    "alexnet_torchvision": ["data.image_size=64", "model.fc_size=32"],
    "zfnet": ["data.image_size=64", "model.fc_size=32"],
    "resnet20": [],
    "plain20": [],
}


def test_choices_are_the_lecture_functions():
    assert ACTIVATIONS == ("relu", "leaky_relu", "elu", "tanh", "sigmoid")
    assert (LEAKY_RELU_SLOPE, ELU_ALPHA) == (0.01, 1.0)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_each_activation_computes_its_definition_on_a_hand_made_input(name):
    module = make_activation(name)
    assert type(module) is MODULE_TYPES[name]
    x = torch.tensor(HAND_INPUT, dtype=torch.float64)
    assert module(x.clone()).tolist() == pytest.approx(HAND_VALUES[name], abs=1e-12)


def test_relu_is_the_module_the_families_always_had():
    module = make_activation("relu")
    assert type(module) is nn.ReLU and module.inplace


def test_an_unknown_activation_names_the_key_the_value_and_the_choices():
    with pytest.raises(ModelConfigError) as error:
        Blueprint(activation="swish")
    message = str(error.value)
    assert "model.activation='swish'" in message
    assert all(choice in message for choice in ACTIVATIONS)


def _build(compose, config: str, *overrides: str) -> nn.Module:
    cfg = compose(["data=synthetic", f"model={config}", *CONFIGS[config], *overrides])
    return build_model(cfg.model).eval()


def _activation_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, tuple(MODULE_TYPES.values()))]


class _CountRectifiers(TorchFunctionMode):
    """Counts ReLU calls (as a module's function or written directly) during a forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("relu", "relu_"):
            self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_another_activation_swaps_exactly_the_relus_of_the_default_network(compose, config):
    torch.manual_seed(0)
    default = _build(compose, config)
    relus = _activation_modules(default)
    assert relus and all(type(m) is nn.ReLU and m.inplace for _, m in relus)
    side = compose(["data=synthetic", f"model={config}", *CONFIGS[config]]).data.image_size
    x = torch.randn(2, 3, side, side)
    counter = _CountRectifiers()
    with torch.no_grad(), counter:
        expected = default(x)
    assert counter.calls >= len(relus)  # the counter sees the ReLUs it must not find below
    for name in ("leaky_relu", "elu", "tanh", "sigmoid"):
        other = _build(compose, config, f"model.activation={name}")
        swapped = _activation_modules(other)
        # Same places, the chosen type everywhere, same parameters and buffers.
        assert [n for n, _ in swapped] == [n for n, _ in relus], name
        assert all(type(m) is MODULE_TYPES[name] for _, m in swapped), name
        assert list(other.state_dict()) == list(default.state_dict()), name
        if name in ("tanh", "sigmoid"):
            counter = _CountRectifiers()
            with torch.no_grad(), counter:
                other(x)
            assert counter.calls == 0, f"{config} still rectifies somewhere with activation={name}"
        other.load_state_dict(default.state_dict())
        for module_name, _ in swapped:
            parent, _, child = module_name.rpartition(".")
            setattr(other.get_submodule(parent) if parent else other, child, nn.ReLU(inplace=True))
        with torch.no_grad():
            assert torch.equal(other(x), expected), name


def test_the_default_blueprint_is_the_lecture_formula():
    """INPUT -> [CONV -> RELU -> POOL]*2 -> FC -> RELU -> FC, written out with torch.nn.functional."""
    torch.manual_seed(0)
    model = Blueprint(3, 10, 16, convs_per_stage=1, stage_widths=(4, 8), fc_sizes=(12,)).eval()
    f = nn.functional
    x = torch.randn(2, 3, 16, 16)
    conv1, conv2 = model.features[0][0], model.features[1][0]
    fc1, fc2 = model.classifier[1], model.classifier[3]
    h = f.max_pool2d(f.relu(f.conv2d(x, conv1.weight, conv1.bias, padding=1)), 2)
    h = f.max_pool2d(f.relu(f.conv2d(h, conv2.weight, conv2.bias, padding=1)), 2)
    expected = f.linear(f.relu(f.linear(h.flatten(1), fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["leaky_relu", "elu"])
def test_in_place_activations_train_through_residual_and_preactivation_blocks(name):
    """leaky_relu and elu run in place (as ReLU does): autograd must still give the gradients of the
    out-of-place network."""
    torch.manual_seed(0)
    for preactivation in (False, True):
        model = ResNet(3, 4, 16, form="cifar", depth=8, shortcut="A", preactivation=preactivation, activation=name)
        reference = ResNet(3, 4, 16, form="cifar", depth=8, shortcut="A", preactivation=preactivation,
                           activation=name)
        reference.load_state_dict(model.state_dict())
        for module in reference.modules():
            if hasattr(module, "inplace"):
                module.inplace = False
        x = torch.randn(3, 3, 16, 16)
        model(x).square().sum().backward()
        reference(x).square().sum().backward()
        for (key, p), q in zip(model.named_parameters(), reference.parameters()):
            assert torch.allclose(p.grad, q.grad, atol=1e-6), (preactivation, key)


@pytest.mark.parametrize("name", ["leaky_relu", "elu", "tanh"])
def test_fully_convolutional_conversion_keeps_the_chosen_activation(name):
    """FC-to-conv conversion (Long et al. 2015) gives the same logits at the native size whatever the activation."""
    torch.manual_seed(0)
    model = VGG(3, 10, 32, config="A", fc_size=16, dropout=0.0, activation=name).eval()
    converted = to_fully_convolutional(model).eval()
    assert [type(m) for m in converted.head] == [nn.Conv2d, MODULE_TYPES[name], nn.Dropout] * 2 + [nn.Conv2d]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(converted(x).flatten(1), model(x), atol=1e-5)
