"""FC-to-conv conversion keeps the weights and the outputs, and yields a heatmap on larger images."""

from __future__ import annotations

import pytest
import torch

from models.alexnet import AlexNet
from models.errors import ModelConfigError
from models.fully_conv import to_fully_convolutional
from models.lenet import LeNet5
from models.resnet import ResNet
from models.vgg import VGG
from models.zfnet import ZFNet

CASES = [
    ("lenet5", lambda: LeNet5(), 1, 32, 64, (9, 9)),
    ("vgg_a_64", lambda: VGG(3, 10, 64, config="A"), 3, 64, 128, (3, 3)),
    ("alexnet", lambda: AlexNet(3, 10, 227, fc_size=256), 3, 227, 291, (3, 3)),
    ("zfnet", lambda: ZFNet(3, 10, 224, fc_size=256), 3, 224, 256, (2, 2)),
]


@pytest.mark.parametrize(("name", "factory", "channels", "native", "larger", "heatmap"), CASES,
                         ids=[c[0] for c in CASES])
def test_same_outputs_at_native_size_and_heatmap_on_larger(name, factory, channels, native, larger, heatmap) -> None:
    model = factory().eval()
    converted = to_fully_convolutional(model).eval()
    x = torch.randn(2, channels, native, native)
    with torch.no_grad():
        scores = converted(x)
        assert scores.shape[2:] == (1, 1)
        torch.testing.assert_close(scores.flatten(1), model(x), rtol=1e-4, atol=1e-4)
        big = converted(torch.randn(1, channels, larger, larger))
    assert big.shape[:2] == (1, 10) and tuple(big.shape[2:]) == heatmap


def test_heatmap_corner_equals_the_crop_logits() -> None:
    """Each heatmap cell is the classifier applied to one window: the top-left one is the top-left crop."""
    model = LeNet5().eval()
    converted = to_fully_convolutional(model).eval()
    image = torch.randn(1, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(converted(image)[:, :, 0, 0], model(image[:, :, :32, :32]), rtol=1e-4, atol=1e-5)


def test_refuses_a_network_without_fc_classifier() -> None:
    with pytest.raises(ModelConfigError, match="FC classifier"):
        to_fully_convolutional(ResNet(3, 10, 32, form="cifar", depth=8))


@pytest.mark.parametrize("activation", [torch.nn.LeakyReLU(0.2), torch.nn.ELU(alpha=0.5), torch.nn.GELU("tanh"),
                                        torch.nn.Hardtanh(-0.5, 0.5), torch.nn.Softplus(beta=3.0)],
                         ids=["leaky_relu_0.2", "elu_0.5", "gelu_tanh", "hardtanh", "softplus_3"])
def test_a_classifier_activation_keeps_its_settings(activation) -> None:
    """Known answer: at the native size the converted net computes the original's logits, which fails if
    a non-default slope, alpha or bound falls back to its default."""
    model = LeNet5().eval()
    model.classifier[2] = activation  # between the two hidden FC layers
    assert not any(isinstance(m, type(activation)) for m in LeNet5().classifier)
    converted = to_fully_convolutional(model).eval()
    x = torch.randn(4, 1, 32, 32) * 3
    with torch.no_grad():
        torch.testing.assert_close(converted(x).flatten(1), model(x), rtol=1e-4, atol=1e-5)
