"""torchvision state dicts load strictly into the zoo's twin configs and give the same logits.

Weights are never downloaded: torchvision builds its model with random weights (``weights=None``), its
BatchNorm scales and statistics are set too (statistics measured on a random batch, so the signal
survives a deep net in eval mode; a test whose logits do not depend on the image would prove nothing,
and the test checks that they do), and its ``state_dict()`` is loaded strictly into the model that the
twin config (``models.torchvision_twins.TWINS``) builds the way training does (``conf/train.yaml``
composed with ``model=<config>``). Both run on the same random images, in eval mode and in training mode
(batch statistics, the same dropout draws, auxiliary heads), at the smallest size both take (VGG and
AlexNet need 224: their FC layers are sized for it; Inception v3's auxiliary head 299). Our model is built on the meta
device and takes torchvision's tensors (``assign=True``): the constructor and the strict key and shape
check are the real ones, and ~1.5 G parameters are not initialised twice.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from torch import nn

from models.resnet import ResNet
from models.torchvision_twins import TWINS, torchvision_variant_problem
from tests.conftest import CONF

tv = torchvision.models

# The classic families of torchvision's classification models; the zoo's own variants of these
# architectures that torchvision does not have are not twins.
CLASSIC_PREFIXES = ("alexnet", "vgg", "resnet", "resnext", "wide_resnet", "densenet", "squeezenet", "googlenet",
                    "inception_v3", "mobilenet_v2", "mobilenet_v3", "shufflenet_v2", "efficientnet_b")
NO_TWIN = {"googlenet": "the zoo's googlenet is the paper's (real 5x5 branches, LRN); torchvision's uses 3x3 and BN"}
FC_SIZED_FOR_224 = ("alexnet", "vgg")  # torchvision's adaptive pool feeds a 224-sized FC; ours has none
SMALLEST = {"inception_v3": 299}  # its auxiliary head (training mode) needs a 17x17 grid; all else takes 32x32


def input_side(builder: str) -> int:
    return 224 if builder.startswith(FC_SIZED_FOR_224) else SMALLEST.get(builder, 32)


# torchvision's pretrained builders switch these on with the weights: the twin takes them from the config.
WITH_WEIGHTS = {"inception_v3": ({"transform_input": True}, ["model.transform_input=true"])}


def from_config(config: str, *overrides: str) -> nn.Module:
    """``model=<config>`` at 3 channels, 1000 classes and the config's own input size, on the meta device."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={config}", "data=synthetic", "data.num_classes=1000",
                                                      *overrides])
    cfg.data.image_size = int(OmegaConf.select(cfg, "model.paper.input_size", default=224))
    node = OmegaConf.to_container(cfg.model, resolve=True)
    accepted = inspect.signature(get_class(node["_target_"])).parameters  # `paper`, `channels_last`: metadata
    node = {key: value for key, value in node.items() if key == "_target_" or key in accepted}
    with torch.device("meta"):
        return instantiate(node).eval()


def torchvision_model(builder: str) -> nn.Module:
    """torchvision's model with random weights, random BatchNorm scales and shifts, and running statistics
    measured on a random batch (so a swap of mean and variance would show, and, unlike statistics drawn
    at random, they keep the signal alive through a deep net in eval mode)."""
    options = {"init_weights": False} if builder == "inception_v3" else {}  # its truncnorm init is slow
    model = tv.get_model(builder, weights=None, **options, **WITH_WEIGHTS.get(builder, ({}, []))[0])
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    side = input_side(builder)
    with torch.no_grad():
        for module in norms:
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: after one batch, that batch's statistics
        model.train()(torch.randn(2, 3, side, side))
    for module, momentum in zip(norms, momenta):
        module.momentum = momentum
    return model.eval()


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_every_classic_torchvision_model_has_a_twin_or_a_reason() -> None:
    classic = {name for name in tv.list_models(module=tv) if name.startswith(CLASSIC_PREFIXES)}
    assert classic - set(TWINS) == set(NO_TWIN)
    assert set(TWINS) <= classic


@pytest.mark.parametrize(("builder", "config"), list(TWINS.items()), ids=list(TWINS))
def test_torchvision_weights_load_strictly_into_the_twin_config_and_give_the_same_logits(builder: str,
                                                                                        config: str) -> None:
    torch.manual_seed(0)
    reference = torchvision_model(builder)
    model = from_config(config, *WITH_WEIGHTS.get(builder, ({}, []))[1])
    model.load_state_dict(reference.state_dict(), strict=True, assign=True)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert torchvision_variant_problem(model) is None
    side = input_side(builder)
    x = torch.randn(1, 3, side, side)
    expected, actual = logits(reference, x), logits(model, x)
    assert actual.shape == (1, 1000) and torch.isfinite(expected).all() and expected.abs().max() > 0
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * scale)
    # Not vacuous: the logits depend on the image far beyond the tolerance (random weights can make a
    # deep net's output almost its last bias, which any two functions would share).
    other = logits(reference, torch.randn(1, 3, side, side))
    assert float((other - expected).abs().max()) > 100 * 1e-4 * scale


def train_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """A training-mode forward (batch statistics, dropout drawn from seed 0): the logits, then any
    auxiliary logits (torchvision's named tuples and our plain tuples alike)."""
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.train()(x)
    return [t for t in (out if isinstance(out, tuple) else (out,)) if t is not None]


@pytest.mark.parametrize(("builder", "config"), list(TWINS.items()), ids=list(TWINS))
def test_the_twin_computes_torchvisions_function_in_training_mode_too(builder: str, config: str) -> None:
    """Batch statistics keep the signal of every layer alive (random running statistics can flatten a
    deep net's eval logits), and the same dropout draws must fall on the same units: every step of the
    function, input transforms included, has to be torchvision's."""
    torch.manual_seed(0)
    reference = torchvision_model(builder)
    model = from_config(config, *WITH_WEIGHTS.get(builder, ({}, []))[1])
    model.load_state_dict(reference.state_dict(), strict=True, assign=True)
    side = input_side(builder)
    x = torch.randn(2, 3, side, side)
    expected, actual = train_outputs(reference, x), train_outputs(model, x)
    assert len(actual) == len(expected)
    for ours, theirs in zip(actual, expected):
        scale = float(theirs.abs().max())
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * scale)
    for name, buffer in reference.state_dict().items():  # the same batch statistics went into the running ones
        if name.endswith("running_mean"):
            torch.testing.assert_close(model.state_dict()[name], buffer, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("config", "twin"), [("resnet50", "resnet50_v15"), ("resnet101", "resnet101_v15"),
                                              ("resnet152", "resnet152_v15")])
def test_the_paper_v1_resnets_are_named_as_not_torchvision(config: str, twin: str) -> None:
    found = torchvision_variant_problem(from_config(config))
    assert found is not None and found.twin == twin
    assert f"model={twin}" in found.fix and "layer2.0.conv1" in found.problem


def test_inception_v3_without_torchvisions_input_transform_is_named() -> None:
    found = torchvision_variant_problem(from_config("inception_v3"))
    assert found is not None and "model.transform_input=true" in found.fix
    assert torchvision_variant_problem(from_config("inception_v3", "model.transform_input=true")) is None


def test_a_v1_resnet_takes_torchvision_weights_strictly_and_computes_something_else() -> None:
    """Why the paper's resnet50 must refuse torchvision's file: same keys and shapes, another function."""
    torch.manual_seed(0)
    reference = torchvision_model("resnet50")
    model = from_config("resnet50")
    model.load_state_dict(reference.state_dict(), strict=True, assign=True)
    x = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(logits(model, x), logits(reference, x), rtol=1e-2, atol=1e-3)


def test_resnet_state_dict_keys_are_torchvisions() -> None:
    keys = set(ResNet(depth=18).state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.weight", "fc.weight"} <= keys
