"""torchvision state dicts load strictly into our models and give the same logits.

Weights are never downloaded: torchvision builds its model with random weights, we load its
``state_dict()`` and compare outputs on a small random image, in eval mode.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from models.alexnet import AlexNet
from models.densenet import DenseNet
from models.inception import InceptionV3
from models.mobilenet import MobileNetV2
from models.resnet import ResNet
from models.squeezenet import SqueezeNet
from models.vgg import VGG

tv = torchvision.models

CASES = [
    ("resnet18", lambda: tv.resnet18(), lambda: ResNet(depth=18), 64),
    ("resnet50", lambda: tv.resnet50(), lambda: ResNet(depth=50, stride_in_1x1=False), 64),
    ("resnext50_32x4d", lambda: tv.resnext50_32x4d(), lambda: ResNet(depth=50, groups=32, width_per_group=4), 64),
    ("wide_resnet50_2", lambda: tv.wide_resnet50_2(), lambda: ResNet(depth=50, widen_factor=2), 64),
    ("vgg11", lambda: tv.vgg11(), lambda: VGG(config="A"), 224),
    ("vgg11_bn", lambda: tv.vgg11_bn(), lambda: VGG(config="A", batch_norm=True), 224),
    ("densenet121", lambda: tv.densenet121(), lambda: DenseNet(depth=121), 64),
    ("squeezenet1_0", lambda: tv.squeezenet1_0(), lambda: SqueezeNet(version="1.0"), 96),
    ("squeezenet1_1", lambda: tv.squeezenet1_1(), lambda: SqueezeNet(version="1.1"), 96),
    ("mobilenet_v2", lambda: tv.mobilenet_v2(), lambda: MobileNetV2(), 64),
    ("alexnet", lambda: tv.alexnet(), lambda: AlexNet(layout="torchvision", input_size=224), 224),
    ("inception_v3", lambda: tv.inception_v3(init_weights=False), lambda: InceptionV3(), 120),
]


SLOW = {"vgg11_bn"}  # two more 133 M-parameter models: ~10 s on 2 cores; vgg11 covers the same keys


@pytest.mark.parametrize(("name", "theirs", "ours", "size"), [
    pytest.param(*case, id=case[0], marks=[pytest.mark.slow] if case[0] in SLOW else []) for case in CASES
])
def test_strict_load_and_same_logits(name: str, theirs, ours, size: int) -> None:
    reference: nn.Module = theirs().eval()
    model: nn.Module = ours().eval()
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, actual = reference(x), model(x)
    assert actual.shape == (2, 1000)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_resnet_state_dict_keys_are_torchvisions() -> None:
    keys = set(ResNet(depth=18).state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.weight", "fc.weight"} <= keys
