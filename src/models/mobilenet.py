"""MobileNet v1 (Howard et al. 2017) and v2 (Sandler et al. 2018): depthwise-separable convolutions.

v1 (Table 1): a 3x3/2 conv, then 13 depthwise 3x3 + pointwise 1x1 pairs, each followed by BN-ReLU,
global average pool and one FC layer; 4.2 M parameters and 569 M multiply-adds at 224 and width 1.0.
A separable pair costs 1/N + 1/9 of a full 3x3 conv. ``width_multiplier`` is the paper's alpha.

v2 (Table 2): inverted residual blocks — 1x1 expansion by t, depthwise 3x3, *linear* 1x1 projection,
with a shortcut when the shape is kept; ReLU6; 3.5 M parameters and 300 M multiply-adds. Module
names match torchvision's ``mobilenet_v2`` so its state dicts load.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from models.errors import ModelConfigError, require_io, require_min_input_size, require_probability
from models.init import init_weights
from models.interface import FeaturesClassifierMixin

# v1, Table 1: (pointwise output channels, depthwise stride) of each separable pair.
V1_LAYERS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
# v2, Table 2: expansion t, output channels c, repeats n, first stride s.
V2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of ``divisor`` without losing more than 10% (as the papers' code)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _require_width(width_multiplier: object) -> float:
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)) \
            or not 0 < width_multiplier <= 4:
        raise ModelConfigError("width_multiplier", width_multiplier, "must be in (0, 4].",
                               "Use one of the paper's 1.0, 0.75, 0.5 or 0.25.")
    return float(width_multiplier)


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv-BN-ReLU then 1x1 pointwise conv-BN-ReLU (Fig. 3 of the v1 paper)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(
            Conv2dNormActivation(in_channels, in_channels, 3, stride=stride, groups=in_channels),
            Conv2dNormActivation(in_channels, out_channels, 1),
        )


class MobileNetV1(FeaturesClassifierMixin):
    """Features: the last pointwise conv's output; head: global average pool, dropout, the FC layer."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 224,
        width_multiplier: float = 1.0,
        dropout: float = 0.0,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes)
        require_probability("dropout", dropout)
        alpha = _require_width(width_multiplier)
        require_min_input_size("MobileNet v1 (five stride-2 layers)", input_size, 32, 224)
        channels = make_divisible(32 * alpha)
        layers: list[nn.Module] = [Conv2dNormActivation(in_channels, channels, 3, stride=2)]
        for width, stride in V1_LAYERS:
            out = make_divisible(width * alpha)
            layers.append(DepthwiseSeparable(channels, out, stride))
            channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        self.init_scheme = init
        init_weights(self, init)


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection, plus x when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = round(in_channels * expansion)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(Conv2dNormActivation(in_channels, hidden, 1, activation_layer=nn.ReLU6))
        layers += [
            Conv2dNormActivation(hidden, hidden, 3, stride=stride, groups=hidden, activation_layer=nn.ReLU6),
            nn.Conv2d(hidden, out_channels, 1, bias=False),  # linear bottleneck: no ReLU here
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(FeaturesClassifierMixin):
    """Features: the last 1x1 conv's output (1280 channels at width 1); head: global average pool,
    dropout, the FC layer."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 224,
        width_multiplier: float = 1.0,
        dropout: float = 0.2,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes)
        require_probability("dropout", dropout)
        alpha = _require_width(width_multiplier)
        require_min_input_size("MobileNet v2 (five stride-2 layers)", input_size, 32, 224)
        channels = make_divisible(32 * alpha)
        last = make_divisible(1280 * max(1.0, alpha))
        layers: list[nn.Module] = [Conv2dNormActivation(in_channels, channels, 3, stride=2,
                                                        activation_layer=nn.ReLU6)]
        for expansion, width, repeats, first_stride in V2_SETTINGS:
            out = make_divisible(width * alpha)
            for index in range(repeats):
                layers.append(InvertedResidual(channels, out, first_stride if index == 0 else 1, expansion))
                channels = out
        layers.append(Conv2dNormActivation(channels, last, 1, activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        self.init_scheme = init
        init_weights(self, init)
