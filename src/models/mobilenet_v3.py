"""MobileNet v3 (Howard et al. 2019): searched inverted residuals with squeeze-excite and h-swish.

The block ("bneck", Fig. 4) is MobileNet v2's inverted residual (1x1 expansion, depthwise kxk, linear
1x1 projection, a shortcut when the shape is kept) with two additions found by the search:

- a squeeze-and-excite gate after the depthwise conv in some blocks, its bottleneck 1/4 of the
  expansion (rounded to a multiple of 8) and its gate the *hard* sigmoid ``ReLU6(x + 3) / 6``;
- h-swish, ``x * ReLU6(x + 3) / 6`` (a piecewise-linear swish, cheap on phones), in the stem, the
  later blocks (column NL = HS) and the head; the early blocks keep ReLU (RE).

Tables 1 (Large) and 2 (Small) give each block as (kernel, expansion, output, SE, NL, stride), written
down below. The head after the last block is a 1x1 conv to 6x the last width (960 / 576) with h-swish,
global average pool, then a 1x1 conv *without BN* (a Linear here, the same on a 1x1 map) to 1280 /
1024 with h-swish, dropout, and the classifier. Table 3: Large 1.0 has 5.4 M parameters and 219 M
multiply-adds (75.2% top-1), Small 1.0 2.5 M and 56 M (67.4%). (TF-slim's README lists its released
Small at 2.9 M / 66 M: another count of another checkpoint; the paper's table is the reference here.)
``width_multiplier`` scales every layer, the 1280 / 1024 one included, rounded to multiples of 8 as
torchvision does; that is not TF's scaling behind Table 3's 0.75 rows (Large 0.75 is 3.4 M / 140 M
here and in torchvision, 4.0 M / 155 M in the table).

Module names and BatchNorm settings (``bn_eps`` 0.001, ``bn_momentum`` 0.01: TF's, the paper's "average
decay of 0.99") are torchvision's ``mobilenet_v3_large``/``_small``, so its state dicts load and compute
the same logits (``models.torchvision_twins``). The momentum changes no output, only how fast the
running statistics follow training: at 0.01 they need some hundreds of steps, so a run of a few dozen
steps evaluates with statistics still near their start (``model.bn_momentum=0.1`` for such runs). Built from torchvision's ``Conv2dNormActivation`` and
``SqueezeExcitation``; the block and the tables are written here because torchvision's class
hard-codes 3 input channels and lacks the zoo's interface.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation
from torchvision.ops.misc import Conv2dNormActivation

from models.errors import ModelConfigError, require_choice, require_io, require_probability
from models.init import init_weights
from models.interface import FeaturesClassifierMixin
from models.mobilenet import make_divisible


class Bneck(NamedTuple):
    """One row of Table 1 / 2: kernel, expansion width, output width, squeeze-excite, h-swish, stride."""

    kernel: int
    expansion: int
    out: int
    se: bool
    hswish: bool
    stride: int


STEM_CHANNELS = 16
# Table 1, MobileNetV3-Large.
LARGE = (
    Bneck(3, 16, 16, False, False, 1), Bneck(3, 64, 24, False, False, 2), Bneck(3, 72, 24, False, False, 1),
    Bneck(5, 72, 40, True, False, 2), Bneck(5, 120, 40, True, False, 1), Bneck(5, 120, 40, True, False, 1),
    Bneck(3, 240, 80, False, True, 2), Bneck(3, 200, 80, False, True, 1), Bneck(3, 184, 80, False, True, 1),
    Bneck(3, 184, 80, False, True, 1), Bneck(3, 480, 112, True, True, 1), Bneck(3, 672, 112, True, True, 1),
    Bneck(5, 672, 160, True, True, 2), Bneck(5, 960, 160, True, True, 1), Bneck(5, 960, 160, True, True, 1),
)
# Table 2, MobileNetV3-Small.
SMALL = (
    Bneck(3, 16, 16, True, False, 2), Bneck(3, 72, 24, False, False, 2), Bneck(3, 88, 24, False, False, 1),
    Bneck(5, 96, 40, True, True, 2), Bneck(5, 240, 40, True, True, 1), Bneck(5, 240, 40, True, True, 1),
    Bneck(5, 120, 48, True, True, 1), Bneck(5, 144, 48, True, True, 1), Bneck(5, 288, 96, True, True, 2),
    Bneck(5, 576, 96, True, True, 1), Bneck(5, 576, 96, True, True, 1),
)
# variant -> (its table, the width of the penultimate 1x1 conv, "NBN" in the tables)
VARIANTS: dict[str, tuple[tuple[Bneck, ...], int]] = {"large": (LARGE, 1280), "small": (SMALL, 1024)}
HEAD_EXPANSION = 6  # the 1x1 conv after the last block: 960 = 6 x 160, 576 = 6 x 96


def batch_norm(bn_eps: object, bn_momentum: object) -> Callable[..., nn.Module]:
    """``nn.BatchNorm2d`` with the given epsilon and momentum, checked (TF's decay d is momentum 1 - d)."""
    if isinstance(bn_eps, bool) or not isinstance(bn_eps, (int, float)) or not 0 < bn_eps < 1:
        raise ModelConfigError("bn_eps", bn_eps, "must be in (0, 1).",
                               "Use 1e-3 (TF's, the MobileNet v3 / EfficientNet B5-B7 weights') or 1e-5 (PyTorch's).")
    if isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float)) or not 0 < bn_momentum <= 1:
        raise ModelConfigError("bn_momentum", bn_momentum, "must be in (0, 1].",
                               "Use 0.01 (TF's decay 0.99, the papers') or 0.1 (PyTorch's, for short runs).")
    return partial(nn.BatchNorm2d, eps=float(bn_eps), momentum=float(bn_momentum))


def _require_width(width_multiplier: object) -> float:
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)) \
            or not 0 < width_multiplier <= 4:
        raise ModelConfigError("width_multiplier", width_multiplier, "must be in (0, 4].",
                               "Use one of the paper's 0.35, 0.5, 0.75, 1.0 or 1.25 (Fig. 2).")
    return float(width_multiplier)


class MobileBottleneck(nn.Module):
    """Fig. 4: [1x1 expand] -> kxk depthwise -> [SE, hard-sigmoid gate] -> linear 1x1, plus x when shapes match."""

    def __init__(self, in_channels: int, row: Bneck, width_multiplier: float,
                 norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        expanded = make_divisible(row.expansion * width_multiplier)
        out_channels = make_divisible(row.out * width_multiplier)
        activation = nn.Hardswish if row.hswish else nn.ReLU
        self.use_res_connect = row.stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(Conv2dNormActivation(in_channels, expanded, 1, norm_layer=norm_layer,
                                               activation_layer=activation))
        layers.append(Conv2dNormActivation(expanded, expanded, row.kernel, stride=row.stride, groups=expanded,
                                           norm_layer=norm_layer, activation_layer=activation))
        if row.se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4), scale_activation=nn.Hardsigmoid))
        layers.append(Conv2dNormActivation(expanded, out_channels, 1, norm_layer=norm_layer, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3(FeaturesClassifierMixin):
    """Features: the 1x1 h-swish conv after the last block (960 / 576 channels at width 1); head: global
    average pool, the 1280 / 1024 h-swish layer, dropout, the classifier.

    Every conv is padded, so any input size leaves at least a 1x1 map; ``input_size`` is only checked.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 224,
        variant: str = "large",
        width_multiplier: float = 1.0,
        dropout: float = 0.2,
        bn_eps: float = 0.001,
        bn_momentum: float = 0.01,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes, input_size)
        require_choice("variant", variant, VARIANTS)
        require_probability("dropout", dropout)
        alpha = _require_width(width_multiplier)
        norm_layer = batch_norm(bn_eps, bn_momentum)
        table, penultimate = VARIANTS[variant]
        channels = make_divisible(STEM_CHANNELS * alpha)
        layers: list[nn.Module] = [Conv2dNormActivation(in_channels, channels, 3, stride=2, norm_layer=norm_layer,
                                                        activation_layer=nn.Hardswish)]
        for row in table:
            layers.append(MobileBottleneck(channels, row, alpha, norm_layer))
            channels = layers[-1].out_channels
        last_conv = HEAD_EXPANSION * channels
        layers.append(Conv2dNormActivation(channels, last_conv, 1, norm_layer=norm_layer,
                                           activation_layer=nn.Hardswish))
        hidden = make_divisible(penultimate * alpha)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last_conv, hidden), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=dropout, inplace=True), nn.Linear(hidden, num_classes))
        self.init_scheme = init
        init_weights(self, init)
