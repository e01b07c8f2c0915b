"""Fully convolutional conversion (Long, Shelhamer & Darrell 2015, Fig. 2) for VGG, AlexNet, ZFNet, LeNet.

An FC layer over a C x h x w map is a conv with an h x w kernel; every later FC layer is a 1x1 conv.
Copying the weights over gives the same logits at the native input size, and on a larger image the
network slides itself over every window at once, returning a class-score heatmap instead of one vector.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from models.errors import ModelConfigError
from models.interface import ClassifierMixin, run_classifier


class FullyConvolutional(ClassifierMixin):
    """``features`` then the converted head; ``forward`` returns (N, classes, H', W') scores.

    The interface's tensors stay maps here: ``forward_head(..., pre_logits=True)`` is the converted fc7's
    output, ``(N, num_features, H', W')`` (1x1 at the original network's input size), and the classifier
    layer is the last 1x1 conv of ``head``.
    """

    def __init__(self, features: nn.Module, head: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.head = head

    @property
    def classifier_name(self) -> str:
        return f"head.{len(self.head) - 1}"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return run_classifier(self.head, features, pre_logits)


def linear_to_conv(linear: nn.Linear, in_channels: int, kernel: int) -> nn.Conv2d:
    """A conv computing ``linear`` on each ``in_channels x kernel x kernel`` window (weights reshaped)."""
    conv = nn.Conv2d(in_channels, linear.out_features, kernel, bias=linear.bias is not None)
    conv = conv.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.reshape(linear.out_features, in_channels, kernel, kernel))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def to_fully_convolutional(model: nn.Module) -> FullyConvolutional:
    """Convert a ``features`` + FC ``classifier`` model; the original model is left untouched.

    The model must say which map its classifier flattens in ``feature_shape`` (C, H, W); VGG, AlexNet,
    ZFNet and LeNet-5 do.
    """
    shape = getattr(model, "feature_shape", None)
    if shape is None or not isinstance(getattr(model, "classifier", None), nn.Sequential):
        raise ModelConfigError(
            "model", type(model).__name__, "has no FC classifier over a known feature map to convert.",
            "Use VGG, AlexNet, ZFNet or LeNet-5 (networks ending in global pooling are already convolutional).",
        )
    channels, height, width = shape
    if height != width:
        raise ModelConfigError("model", type(model).__name__, "has a non-square feature map.", "Use square inputs.")
    head: list[nn.Module] = []
    first = True
    for layer in model.classifier:
        if isinstance(layer, nn.Flatten):
            continue
        if isinstance(layer, nn.Linear):
            if first:
                head.append(linear_to_conv(layer, channels, height))
                first = False
            else:
                head.append(linear_to_conv(layer, layer.in_features, 1))
        else:
            head.append(_copy_parameter_free(layer))
    avgpool = getattr(model, "avgpool", nn.Identity())
    features = nn.Sequential(copy.deepcopy(model.features), copy.deepcopy(avgpool))
    result = FullyConvolutional(features, nn.Sequential(*head))
    result.train(model.training)
    return result


def _copy_parameter_free(layer: nn.Module) -> nn.Module:
    """A copy of a parameter-free layer (ReLU, LeakyReLU(0.2), ELU(alpha), Dropout(p)...) with every setting
    it has: a copy, not a new instance, so no constructor argument can fall back to its default."""
    if any(True for _ in layer.parameters()):
        raise ModelConfigError("model", type(layer).__name__, "is a layer with weights in the classifier that "
                               "cannot be converted.", "Only Linear layers and activations can be converted.")
    return copy.deepcopy(layer)
