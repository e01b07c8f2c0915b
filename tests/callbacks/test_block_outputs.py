"""ActivationStats reads every residual block's rectified output: after the addition and the ReLU.

A block with a projection shortcut (option B/C 1x1 conv + BN, torchvision's ``downsample``) runs two
convs whose outputs meet at the addition; the probe must report the post-add ReLU, under the branch's
last conv, as in an identity block. The raw output of a conv is never zero for every input, so a probe
that reads it there would call a dead block healthy. The expected values are computed here from each
block's own output (a forward hook on the block), not from the callback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from callbacks import probe
from callbacks.activation_stats import ActivationStats
from models.resnet import ResidualBlock, ResNet

from .conftest import module_for, tiny_data, trainer_for

torch.set_num_threads(1)


def cifar_resnet(shortcut: str, preactivation: bool = False) -> ResNet:
    return ResNet(num_classes=4, form="cifar", depth=8, shortcut=shortcut, preactivation=preactivation)


def imagenet_bottleneck() -> ResNet:
    return ResNet(num_classes=4, form="imagenet", depth=50)


def torchvision_bottleneck() -> nn.Module:
    return torchvision.models.resnet50(weights=None, num_classes=4)


def blocks(model: nn.Module) -> dict[str, nn.Module]:
    """Every residual block (ours, or torchvision's BasicBlock/Bottleneck) by name."""
    kinds = (ResidualBlock, torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def last_branch_conv(block_name: str, block: nn.Module) -> str:
    return f"{block_name}.conv3" if hasattr(block, "conv3") else f"{block_name}.conv2"


def block_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each post-activation block's output (= relu(branch + shortcut)), read by a hook on the block."""
    outputs: dict[str, torch.Tensor] = {}
    with probe.evaluation(model), probe.hooks(blocks(model),
                                              lambda name, m, i, out: outputs.__setitem__(name, out.clone())):
        model(x)
    return outputs


def sampled(tmp_path: Path, model: nn.Module) -> tuple[ActivationStats, dict[str, dict[str, float]]]:
    """A sample taken by the callback after one step on a real Trainer (lr 0: only BN's running
    statistics move), with the model as it is now, so the caller can recompute it."""
    callback = ActivationStats(probe_size=16, maps=False, histograms=False)
    trainer = trainer_for(tmp_path, [callback], max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module_for(model, lr=0.0), datamodule=tiny_data(size=32))
    return callback, callback.sample(trainer, trainer.lightning_module)


@pytest.mark.parametrize("build", [lambda: cifar_resnet("A"), lambda: cifar_resnet("B"), lambda: cifar_resnet("C"),
                                   imagenet_bottleneck, torchvision_bottleneck,
                                   lambda: ResNet(num_classes=4, form="imagenet", depth=50, se_reduction=16)],
                         ids=["cifar-A", "cifar-B", "cifar-C", "imagenet-bottleneck", "torchvision-resnet50",
                              "se-resnet50"])
def test_each_block_is_read_after_the_addition_and_the_relu(tmp_path: Path, build):
    torch.manual_seed(0)
    model = build()
    callback, stats = sampled(tmp_path, model)
    expected = block_outputs(model, callback._probe)
    projections = [f"{name}.downsample.0" for name, b in blocks(model).items() if isinstance(b.downsample, nn.Sequential)]
    for name, block in blocks(model).items():
        layer = last_branch_conv(name, block)
        out = expected[name]
        assert callback._targets[layer][0] == f"{name}.relu", (layer, callback._targets[layer])
        assert stats[layer]["sparsity"] == pytest.approx(float((out == 0).float().mean()), abs=1e-6), layer
        assert stats[layer]["mean"] == pytest.approx(float(out.mean()), rel=1e-5), layer
        dead = 1 - float((out != 0).transpose(0, 1).flatten(1).any(1).float().mean())
        assert stats[layer]["dead"] == pytest.approx(dead, abs=1e-6), layer
    # A projection has no nonlinearity of its own: its output is rectified with the branch's, reported once.
    assert not set(projections) & set(callback._targets)
    # Every reported layer is read after a nonlinearity, except the logits layer.
    raw = [layer for layer, (module, _) in callback._targets.items() if module == layer]
    assert raw == ["fc"] or raw == [n for n in callback._targets if ".se.fc" in n] + ["fc"]  # SE's own gate
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_a_planted_dead_block_is_reported_all_dead(tmp_path: Path, shortcut: str):
    torch.manual_seed(0)
    model = cifar_resnet(shortcut)
    block = model.layer2[0]  # the downsampling block: a projection with B and C, zero padding with A
    with torch.no_grad():  # branch and shortcut pushed far below zero: relu(branch + shortcut) = 0 everywhere
        block.bn2.bias.fill_(-1e4)
        if isinstance(block.downsample, nn.Sequential):
            block.downsample[1].bias.fill_(-1e4)
    callback, stats = sampled(tmp_path, model)
    assert stats["layer2.0.conv2"]["dead"] == 1.0
    assert stats["layer2.0.conv2"]["sparsity"] == 1.0
    assert "dead_units" in callback.alerts.counts
    # The block before it is alive (the ones after it see an all-zero input, so they may well be dead too).
    assert stats["layer1.0.conv2"]["dead"] < 1.0


def test_preactivation_blocks_are_read_at_the_next_bn_relu():
    """A pre-activation block leaves its sum un-rectified; it is rectified by the next block's BN-ReLU
    (or the final one), and that is what its last conv is read at, projection or not."""
    torch.manual_seed(0)
    model = cifar_resnet("B", preactivation=True)
    targets = probe.trace(model, torch.randn(2, 3, 32, 32)).activation_targets()
    assert targets["layer1.0.conv2"] == ("layer2.0.relu", 0)
    assert targets["layer2.0.conv2"] == ("layer3.0.relu", 0)
    assert targets["layer3.0.conv2"] == ("final_relu", 0)
    assert targets["layer2.0.conv1"] == ("layer2.0.relu", 1)
    assert "layer2.0.downsample.0" not in targets
