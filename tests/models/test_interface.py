"""Every model config provides the one model interface (``models.interface.Classifier``).

Each model is built the way training builds it: ``conf/train.yaml`` composed with ``model=<name>``, its
``model`` node instantiated. The input is the config's own: ``data.in_channels`` channels (the synthetic
dataset, which takes any shape) and the paper's input size (``model.paper.input_size``) when the config
gives one. Shapes and state-dict keys are checked on the meta device at that size (no memory, no
arithmetic, so ResNet-152 and VGG-19 cost nothing); the real numbers are checked on one image at the
smallest input size the model takes, for the models small enough there.
"""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from models import stages
from models.inception import InceptionV3
from models.interface import Classifier, ClassifierMixin, classifier_module, feature_module, has_interface
from models.resnet import ResNet
from models.stages import stages_of
from tests.conftest import CONF, MODEL_NAMES

CONFIGS = MODEL_NAMES  # every conf/model/*.yaml but the `_`-prefixed family bases
NEW_CLASSES = 7
# Real-number checks: input sizes tried (ascending, up to the config's own); every config runs at the
# first one it takes (VGG's and AlexNet's FC layers shrink with the input): all of them together take
# about 10 s on this CPU, the largest (wide_resnet101_2, resnet1202) under a second each.
SIZES = (32, 64, 96, 128, 160, 192, 224, 256, 299)


@functools.cache
def composed(name: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={name}", "data=synthetic"])
    cfg.data.image_size = int(OmegaConf.select(cfg, "model.paper.input_size", default=cfg.data.image_size))
    return cfg


def input_shape(name: str, size: int | None = None) -> tuple[int, int, int]:
    """(C, H, W) as ``experiments`` derives it from the data config (``input_shape_of``)."""
    data = composed(name).data
    side = int(size or data.image_size)
    return int(data.in_channels), side, side


def build(name: str, device: str = "meta", size: int | None = None) -> nn.Module:
    """Instantiate the composed ``model`` node (at ``size`` if given), without its metadata keys."""
    cfg = composed(name).copy()
    if size is not None:
        cfg.data.image_size = size
    node = OmegaConf.to_container(cfg.model, resolve=True)
    # `paper`, `channels_last` and any other metadata key are not constructor arguments.
    accepted = inspect.signature(get_class(node["_target_"])).parameters
    node = {key: value for key, value in node.items() if key == "_target_" or key in accepted}
    with torch.device(device):
        return instantiate(node).eval()


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def classifier_keys(model: nn.Module) -> set[str]:
    names = (model.classifier_name, *model.aux_classifier_names)
    return {key for key in model.state_dict() if any(key.startswith(f"{name}.") for name in names)}


@functools.cache
def real_size(name: str) -> int:
    """The smallest input size the model takes (built on the meta device: no memory, no init)."""
    native = input_shape(name)[1]
    for size in sorted({s for s in SIZES if s < native} | {native}):
        try:
            with torch.no_grad():
                build(name, size=size)(torch.zeros(1, *input_shape(name, size), device="meta"))
        except (InstantiationException, RuntimeError):  # the model refuses the size, or its map collapses
            continue
        return size
    raise AssertionError(f"{name} takes none of the sizes {SIZES} up to its own {native}")


@functools.cache
def feature_shape(name: str) -> torch.Size:
    """``forward_features``'s output shape for two images of the config's input (on the meta device)."""
    with torch.no_grad():
        return build(name).forward_features(torch.zeros(2, *input_shape(name), device="meta")).shape


def run_hooked(model: nn.Module, module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``model(x)`` and what ``module`` returned during that pass (it must run exactly once)."""
    seen = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        result = model(x)
    finally:
        handle.remove()
    assert len(seen) == 1, f"the module ran {len(seen)} times"
    return result, seen[0]


def test_configs_are_found():
    assert len(CONFIGS) >= 50 and "resnet50" in CONFIGS and not any(n.startswith("_") for n in CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_interface_shapes(name):
    """forward == forward_head(forward_features), pre-logits width, feature module (meta, config's input)."""
    model = build(name)
    assert isinstance(model, ClassifierMixin) and isinstance(model, Classifier) and has_interface(model)
    keys = shapes(model)
    x = torch.zeros(2, *input_shape(name), device="meta")
    features = torch.empty(feature_shape(name), device="meta")
    assert features.ndim == 4  # every config has a map before its head (the linear model: the image)
    with torch.no_grad():
        _, layer = feature_module(model)
        logits, hooked = run_hooked(model, layer, x)
        assert hooked.shape == features.shape
        pre_logits = model.forward_head(features, pre_logits=True)
        assert model.forward_head(features).shape == logits.shape == (2, composed(name).data.num_classes)
        assert pre_logits.shape == (2, model.num_features)
    head_name, head = classifier_module(model)
    assert head is model.get_classifier() and head is model.get_submodule(head_name)
    assert {"weight", "bias"} <= set(dict(head.named_parameters()))
    assert shapes(model) == keys and not model.training  # the interface changes no key, shape or mode


@pytest.mark.parametrize("name", CONFIGS)
def test_reset_classifier(name):
    """New class count, fresh layers under the same keys; every other key and shape unchanged."""
    model = build(name)
    before = shapes(model)
    resized = classifier_keys(model)
    old = model.get_classifier()
    model.reset_classifier(NEW_CLASSES)
    after = shapes(model)
    assert after.keys() == before.keys() and list(after) == list(before)
    assert {k: v for k, v in after.items() if k not in resized} == {k: v for k, v in before.items()
                                                                   if k not in resized}
    assert all(after[key][0] == NEW_CLASSES for key in resized if after[key])
    assert model.get_classifier() is not old and not model.get_classifier().training
    with torch.no_grad():
        assert model.forward_head(torch.empty(feature_shape(name), device="meta")).shape == (2, NEW_CLASSES)
    if model.aux_classifier_names:  # GoogLeNet, Inception v3: the training-mode auxiliary logits too
        outputs = model.train()(torch.zeros(2, *input_shape(name), device="meta"))
        assert [output.shape for output in outputs] == [(2, NEW_CLASSES)] * len(outputs)


@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "resnet1202"])
def test_reset_classifier_to_zero_returns_pre_logits_and_back(name):
    """timm's convention: ``reset_classifier(0)`` leaves no classifier and ``forward`` returns the
    pre-logits vector (``num_features`` wide, with no state-dict key of the final layer left); a later
    ``reset_classifier(n)`` builds a layer like the original again, on the model's device."""
    size = real_size(name)
    model = build(name, device="cpu", size=size).eval()
    x = torch.randn(1, *input_shape(name, size))
    width, keys = model.num_features, set(shapes(model))
    with torch.no_grad():
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)
        assert model.num_features == width
        features = model(x)
        if not name.startswith("squeezenet"):  # its final 1x1 conv runs before ReLU and pooling
            assert torch.equal(features, pre_logits)
        assert features.shape == (1, width)
        assert keys - set(shapes(model)) == set(classifier_keys(build(name)))
        model.reset_classifier(NEW_CLASSES)
        assert set(shapes(model)) == keys and model(x).shape == (1, NEW_CLASSES)
        assert all(not p.is_meta for p in model.parameters()) and torch.isfinite(model(x)).all()


def test_reset_classifier_speaks_timms_signature_and_refuses_what_it_cannot_do():
    from models.errors import ModelConfigError

    model = build("resnet20", device="cpu")
    model.reset_classifier(5, None)
    assert model.get_classifier().out_features == 5
    with pytest.raises(ValueError, match=r"global_pool='avg'.*forward_features"):
        model.reset_classifier(5, "avg")
    with pytest.raises(ModelConfigError, match="num_classes=-1"):
        model.reset_classifier(-1)
    model.reset_classifier(0)
    model.double()  # moved after the removal: the rebuilt layer follows the model, not the old layer
    model.reset_classifier(3)
    assert model.get_classifier().weight.dtype == torch.float64
    assert model(torch.randn(2, *input_shape("resnet20"), dtype=torch.float64)).shape == (2, 3)


def test_a_network_cut_for_transfer_follows_the_same_reset_contract():
    from experiments.training.finetune import FromLayer

    cut = FromLayer(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), 8, 10, True, ["0", "1"])
    x = torch.randn(2, 3, 8, 8)
    cut.reset_classifier(0)
    assert cut(x).shape == (2, 8) and cut.num_features == 8 and "fc.weight" not in cut.state_dict()
    cut.reset_classifier(4)
    assert cut(x).shape == (2, 4)
    from models.errors import ModelConfigError

    with pytest.raises(ModelConfigError):
        cut.reset_classifier(-3)


# Untrained in eval mode (BN's running statistics at 0/1), ResNet-1202's 600 residual sums grow past
# float32 and its logits are inf/NaN, where equality means nothing; resnet110 is the same code at 110.
@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "resnet1202"])
def test_real_numbers(name):
    """In eval mode, forward is exactly forward_head(forward_features), and pre-logits enter the classifier."""
    size = real_size(name)
    model = build(name, device="cpu", size=size)
    keys = shapes(model)
    x = torch.randn(1, *input_shape(name, size))
    with torch.no_grad():
        logits, hooked = run_hooked(model, feature_module(model)[1], x)
        features = model.forward_features(x)
        assert torch.isfinite(logits).all()  # so that the equalities below can fail
        assert torch.equal(model.forward_head(features), logits)
        assert torch.equal(hooked, features)
        pre_logits = model.forward_head(features, pre_logits=True)
        head = model.get_classifier()
        if isinstance(head, nn.Linear):  # SqueezeNet's 1x1 conv runs before its pooling instead
            torch.testing.assert_close(head(pre_logits), logits, rtol=1e-5, atol=1e-5)
    assert shapes(model) == keys


def test_inception_v3_for_real():
    """Inception v3 is too big for the check above (it needs 299x299 with its auxiliary head)."""
    model = InceptionV3(num_classes=NEW_CLASSES, input_size=96, aux_logits=False, init="kaiming").eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        logits, hooked = run_hooked(model, model.Mixed_7c, x)
        features = model.forward_features(x)
        assert torch.equal(features, hooked) and torch.equal(model.forward_head(features), logits)
        torch.testing.assert_close(model.fc(model.forward_head(features, pre_logits=True)), logits)


@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "resnet1202"])  # 1202 layers: for time only
def test_stages_from_the_interface_match_tracing(name, monkeypatch):
    """The head found through the interface is the one tracing finds: same stages either way."""
    model = build(name)
    shape = input_shape(name)
    found = [(s.name, s.members) for s in stages_of(model, shape)]
    assert found[-1][0] == model.classifier_name
    monkeypatch.setattr(stages, "classifier_module", lambda _model: None)
    assert [(s.name, s.members) for s in stages_of(model, shape)] == found


def test_a_model_without_the_interface_falls_back_to_tracing():
    with torch.device("meta"):
        theirs = torchvision.models.resnet18(num_classes=NEW_CLASSES)
    assert not has_interface(theirs)
    assert classifier_module(theirs) is None and feature_module(theirs) is None
    names = [s.name for s in stages_of(theirs)]
    assert names[0] == "conv1" and names[-1] == "fc" and "layer4.1" in names  # plain Sequential stages open


def test_a_timm_style_model_is_searched_by_identity():
    class Tiny(nn.Module):  # timm's methods, without the zoo's layer names
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 4, 3)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
            self.num_features = 4

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

        def forward_features(self, x):
            return self.body(x)

        def forward_head(self, features, pre_logits=False):
            x = features.mean((2, 3))
            return x if pre_logits else self.head[1](x)

        def get_classifier(self):
            return self.head[1]

        def reset_classifier(self, num_classes):
            self.head[1] = nn.Linear(4, num_classes)

    model = Tiny()
    assert has_interface(model)
    assert classifier_module(model) == ("head.1", model.head[1])
    assert feature_module(model) is None
    assert [s.name for s in stages_of(model)] == ["body", "head.1"]


def test_a_pre_activation_resnet_has_a_feature_module_of_its_own():
    model = ResNet(3, 10, 32, form="cifar", depth=20, preactivation=True).eval()
    assert feature_module(model)[0] == "final_relu"
    assert "final_relu" not in {key.split(".")[0] for key in model.state_dict()}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(run_hooked(model, model.final_relu, x)[1], model.forward_features(x))


def test_a_reset_classifier_is_initialised_by_the_model_scheme():
    model = build("squeezenet1_1", device="cpu")
    model.reset_classifier(NEW_CLASSES)
    conv = model.get_classifier()
    assert conv.weight.std().item() == pytest.approx(0.01, rel=0.2) and not conv.bias.any()
    alexnet = build("alexnet", device="cpu", size=real_size("alexnet"))
    alexnet.reset_classifier(NEW_CLASSES)
    assert alexnet.positive_biases and bool((alexnet.get_classifier().bias == 1).all())
    alexnet.reset_classifier(0)
    alexnet.reset_classifier(NEW_CLASSES)  # built again from nothing: the same scheme
    assert bool((alexnet.get_classifier().bias == 1).all())
