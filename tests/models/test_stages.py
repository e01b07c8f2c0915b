"""Stage discovery for transfer learning: every model config has a head and named stages to cut or train."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from experiments.core.errors import UserError
from experiments.training.build import build_model
from experiments.training.finetune import FromLayer, apply_transfer
from models.stages import head_output_size, split_head, stages_of
from tests.conftest import MODEL_NAMES, model_config

NUM_CLASSES = 7
# The smallest input each family takes (the rest take 32x32); resnet1202 is left out for time only.
SIZES = {"alexnet": 75, "alexnet_torchvision": 64, "zfnet": 64, "googlenet": 64, "googlenet_naive": 64,
         "inception_v3": 299, "inception_v4": 75, "inception_resnet_v2": 75, "inception_resnet_v2_paper": 75}
MODELS = [name for name in MODEL_NAMES if name not in ("resnet1202", "densenet264")]
# One or two of each family also go through the transfer surgery (last_k, from_layer) on the meta device.
SURGERY = ["alexnet_torchvision", "blueprint", "densenet40", "googlenet", "inception_v3", "lenet5", "linear",
           "mobilenet_v2", "plain20", "resnet18", "resnet20", "resnext50_32x4d", "squeezenet1_1", "vgg16_bn",
           "wrn16_8", "zfnet"]


def _model(name: str, device: str = "meta", channels: int = 3) -> tuple[nn.Module, tuple[int, int, int]]:
    cfg = model_config(name)
    size = SIZES.get(name, 32)
    cfg.in_channels, cfg.num_classes, cfg.input_size = channels, NUM_CLASSES, size
    with torch.device(device):
        return build_model(cfg), (channels, size, size)


def _finetune(**keys) -> OmegaConf:
    return OmegaConf.create({"finetune": {"from": "source", "strategy": "full", "k": 1, "layer": None,
                                          "backbone_lr_scale": 0.1, "reset_head": True, **keys}})


@pytest.mark.parametrize("name", MODELS)
def test_every_model_has_a_head_and_named_stages(name):
    model, shape = _model(name)
    stages = stages_of(model, shape)
    _, head = split_head(stages, NUM_CLASSES)
    assert head_output_size(head) == NUM_CLASSES
    names = [s.name for s in stages]
    assert len(names) == len(set(names))
    # Every parameter of the eval-mode network belongs to exactly one stage; only training-only
    # auxiliary heads are left over.
    owned = [n for stage in stages for n in stage.parameter_names()]
    assert len(owned) == len(set(owned))
    leftover = {n.split(".")[0] for n, _ in model.named_parameters()} - {n.split(".")[0] for n in owned}
    assert leftover <= {"aux1", "aux2", "AuxLogits"}, leftover


@pytest.mark.parametrize("name", SURGERY)
def test_transfer_surgery_names_the_stages(name):
    model, shape = _model(name)
    backbone, head = split_head(stages_of(model, shape), NUM_CLASSES)
    if name == "linear":
        assert backbone == []
        with pytest.raises(UserError, match=r"finetune.k=1.*\(none\)"):
            apply_transfer(model, _finetune(strategy="last_k"), shape, NUM_CLASSES)
        return
    # last_k names the stages it trains; a wrong layer lists the valid ones.
    k = min(2, len(backbone))
    transfer = apply_transfer(model, _finetune(strategy="last_k", k=k), shape, NUM_CLASSES)
    assert transfer.trained == [s.name for s in backbone[-k:]] + [head.name]
    with pytest.raises(UserError, match=r"finetune\.layer='nonexistent'") as error:
        apply_transfer(model, _finetune(strategy="from_layer", layer="nonexistent"), shape, NUM_CLASSES)
    assert all(n in str(error.value) for n in [s.name for s in backbone])
    # from_layer: cut after a middle stage, pool, new classifier: logits of the right size.
    middle = backbone[len(backbone) // 2].name
    cut = apply_transfer(model, _finetune(strategy="from_layer", layer=middle), shape, NUM_CLASSES).model
    assert isinstance(cut, FromLayer)
    assert cut(torch.zeros(2, *shape, device="meta")).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize(("name", "expected"), [
    ("lenet5", ["features.0", "features.3", "classifier.1", "classifier.3", "classifier.5"]),
    ("resnet20", ["conv1", "layer1", "layer2", "layer3", "fc"]),
    ("resnet18", ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]),
    ("squeezenet1_1", ["features.0", "features.3", "features.4", "features.6", "features.7", "features.9",
                       "features.10", "features.11", "features.12", "classifier.1"]),
])
def test_stage_names_in_forward_order(name, expected):
    model, shape = _model(name, device="cpu")
    assert [s.name for s in stages_of(model, shape)] == expected


def test_norm_layers_merge_into_the_layer_before():
    model, shape = _model("vgg16_bn")
    stages = stages_of(model, shape)
    assert stages[0].members == ("features.0", "features.1")  # conv + its BatchNorm
    model, shape = _model("preact_resnet164")
    assert stages_of(model, shape)[-2].members == ("layer3", "final_bn")
    model, shape = _model("densenet121")
    assert stages_of(model, shape)[-2].members == ("features.denseblock4", "features.norm5")


def test_googlenet_auxiliary_heads_are_not_stages():
    model, shape = _model("googlenet")
    names = [s.name for s in stages_of(model, shape)]
    assert "aux1" not in names and "aux2" not in names and names[-1] == "fc"


def test_stage_discovery_leaves_the_model_as_it_was():
    model, shape = _model("resnet20", device="cpu")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stages_of(model, shape)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_head_of_the_wrong_size_is_refused():
    model, shape = _model("lenet5", device="cpu")
    with pytest.raises(ValueError, match="produces 7 outputs"):
        split_head(stages_of(model, shape), 10)
