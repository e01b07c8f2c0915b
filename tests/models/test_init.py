"""He initialisation: convs keep the signal through ReLUs, the classifier does not blow up the logits."""

import math

import pytest
import torch
from torch import nn

from models.init import init_weights
from models.resnet import ResNet


def test_kaiming_uses_fan_out_for_convs_and_fan_in_for_linear_layers() -> None:
    torch.manual_seed(0)
    net = init_weights(nn.Sequential(nn.Conv2d(64, 256, 3), nn.Linear(512, 10)), "kaiming")
    conv, linear = net[0], net[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.05)
    assert linear.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    assert torch.all(linear.bias == 0)


def test_a_deep_cifar_resnet_starts_near_chance_loss() -> None:
    """A 10-way head initialised with fan-out (std sqrt(2/10)) started ResNet-56 at a loss of ~11."""
    torch.manual_seed(0)
    net = ResNet(form="cifar", depth=56, residual=True, shortcut="A", in_channels=1, num_classes=10)
    images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    loss = nn.functional.cross_entropy(net(images), labels).item()
    assert loss < 6.0, f"ResNet-56 starts at cross-entropy {loss:.2f}; chance is {math.log(10):.2f}"

