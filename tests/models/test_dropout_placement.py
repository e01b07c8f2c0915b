"""AlexNet/ZFNet dropout: where the paper puts it and where torchvision does.

Krizhevsky et al. 2012, Sec. 4.2: "We use dropout in the first two fully-connected layers", i.e. on the
outputs of fc6 and fc7 (FC6, ReLU, Dropout, FC7, ReLU, Dropout, FC8); ZFNet keeps AlexNet's classifier.
torchvision's AlexNet drops pool5's and fc6's outputs (Dropout, FC6, ReLU, Dropout, FC7, ReLU, FC8), and
its state-dict keys (``classifier.1/4/6``) are the reference for the twin.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from experiments.training.build import build_model
from models.alexnet import AlexNet
from models.zfnet import ZFNet

PAPER = [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
TORCHVISION = [nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Linear]


def side(factory, layout: str = "paper") -> int:
    """The smallest input the network takes (AlexNet's paper layout has no padding in conv1)."""
    return 67 if factory is AlexNet and layout == "paper" else 64


def small(factory=AlexNet, **kwargs) -> nn.Module:
    """A CPU-sized network: the smallest input it takes, 32-unit FC layers."""
    return factory(3, 10, side(factory, kwargs.get("layout", "paper")), fc_size=32, **kwargs)


@pytest.mark.parametrize(("factory", "kwargs", "order"), [
    (AlexNet, {"layout": "paper"}, PAPER),
    (AlexNet, {"layout": "torchvision"}, TORCHVISION),
    (AlexNet, {"layout": "paper", "dropout_placement": "torchvision"}, TORCHVISION),
    (AlexNet, {"layout": "torchvision", "dropout_placement": "paper"}, PAPER),
    (ZFNet, {}, PAPER),
    (ZFNet, {"dropout_placement": "torchvision"}, TORCHVISION),
])
def test_head_order_per_placement(factory, kwargs, order):
    assert [type(m) for m in small(factory, **kwargs).classifier] == order


def test_torchvision_placement_has_torchvisions_classifier_keys_and_paper_placement_vggs():
    theirs = [k for k in torchvision.models.alexnet(weights=None).state_dict() if k.startswith("classifier.")]
    with torch.device("meta"):
        ours = [k for k in AlexNet(layout="torchvision", input_size=224).state_dict() if k.startswith("classifier.")]
        paper = [k for k in AlexNet(layout="paper").state_dict() if k.startswith("classifier.")]
    assert ours == theirs == [f"classifier.{i}.{p}" for i in (1, 4, 6) for p in ("weight", "bias")]
    assert paper == [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]


@pytest.mark.parametrize(("config", "placement", "order"), [
    ("alexnet", "paper", PAPER), ("zfnet", "paper", PAPER), ("alexnet_torchvision", "torchvision", TORCHVISION),
])
def test_the_configs_that_claim_the_paper_use_its_placement(compose, config, placement, order):
    cfg = compose(["data=synthetic", f"model={config}", "data.image_size=67", "model.fc_size=32"])
    model = build_model(cfg.model)
    assert model.dropout_placement == placement
    assert [type(m) for m in model.classifier] == order


def _inputs_and_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Input and output of fc6, fc7, fc8 (copies: the in-place ReLU rewrites an FC's output afterwards)."""
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, layer in zip(("fc6", "fc7", "fc8"), linears):
        handles.append(layer.register_forward_hook(
            lambda m, inputs, output, name=name: seen.update({f"{name}_in": inputs[0].clone(),
                                                              f"{name}_out": output.clone()})))
    try:
        with torch.no_grad():
            features = model.forward_features(x).flatten(1)
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return {"pool5": features, **seen}


def _dropped(before: torch.Tensor, after: torch.Tensor, p: float) -> float:
    """Check ``after`` is inverted dropout of ``before`` (each value 0 or before / (1 - p)); the share of
    non-zero values of ``before`` that were zeroed."""
    kept = after != 0
    assert torch.allclose(after[kept], before[kept] / (1 - p), rtol=1e-5)
    live = before != 0
    return float((~kept & live).sum() / live.sum())


@pytest.mark.parametrize("factory", [AlexNet, ZFNet])
def test_in_training_the_paper_placement_drops_fc6_and_fc7_outputs_only(factory):
    torch.manual_seed(0)
    model = small(factory, dropout_placement="paper", init="kaiming").train()
    seen = _inputs_and_outputs(model, torch.randn(8, 3, side(factory), side(factory)))
    assert torch.equal(seen["fc6_in"], seen["pool5"])  # pool5 is not dropped
    for fc, nxt in (("fc6", "fc7"), ("fc7", "fc8")):
        share = _dropped(torch.relu(seen[f"{fc}_out"]), seen[f"{nxt}_in"], 0.5)
        assert 0.3 < share < 0.7, (fc, share)  # about half of the live units, p = 0.5


def test_in_training_torchvisions_placement_drops_pool5_and_fc6_outputs_only():
    torch.manual_seed(0)
    model = small(AlexNet, layout="torchvision", init="kaiming").train()
    seen = _inputs_and_outputs(model, torch.randn(8, 3, 64, 64))
    assert 0.3 < _dropped(seen["pool5"], seen["fc6_in"], 0.5) < 0.7
    assert 0.3 < _dropped(torch.relu(seen["fc6_out"]), seen["fc7_in"], 0.5) < 0.7
    assert torch.equal(seen["fc8_in"], torch.relu(seen["fc7_out"]))  # fc7's output is not dropped


@pytest.mark.parametrize("layout", ["paper", "torchvision"])
def test_in_eval_mode_both_placements_compute_the_same_function(layout):
    """Dropout is the identity at test time, so the same weights give the same logits either way."""
    torch.manual_seed(0)
    paper = small(AlexNet, layout=layout, dropout_placement="paper").eval()
    theirs = small(AlexNet, layout=layout, dropout_placement="torchvision").eval()
    moved = {k.replace("classifier.0.", "classifier.1.").replace("classifier.3.", "classifier.4."): v
             for k, v in paper.state_dict().items()}
    theirs.load_state_dict(moved)
    x = torch.randn(2, 3, side(AlexNet, layout), side(AlexNet, layout))
    with torch.no_grad():
        assert torch.equal(paper(x), theirs(x))


def test_paper_init_still_gives_every_fc_layer_a_bias_of_one_in_the_paper_placement():
    model = small(AlexNet, layout="paper", dropout_placement="paper")
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert len(linears) == 3 and all(bool((m.bias == 1).all()) for m in linears)
