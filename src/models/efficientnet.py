"""EfficientNet B0-B7 (Tan & Le 2019): one searched baseline, scaled in width, depth and resolution together.

B0 (Table 1) is a stack of MBConv blocks: MobileNet v2's inverted residual (1x1 expansion by 6, or
none in the first stage; depthwise 3x3 or 5x5; linear 1x1 projection; a shortcut when the shape is
kept) with a squeeze-and-excite gate (bottleneck 1/4 of the *block input's* width, sigmoid gate) and
swish (SiLU) activations throughout. A 3x3/2 stem conv (32 channels), seven stages, a 1x1 conv to
1280 channels, global average pool, dropout, the classifier.

Compound scaling (Sec. 3.3): depth d = alpha^phi, width w = beta^phi, resolution r = gamma^phi with
alpha * beta^2 * gamma^2 ~ 2, so each step of phi doubles the multiply-adds. B1-B7 use the rounded
coefficients of the released models (``width_mult``, ``depth_mult``, the resolution, the dropout in
their configs): every width is ``width_mult`` x the baseline's rounded to a multiple of 8 (never more
than 10% down), every stage's block count is ``ceil(depth_mult x n)``; the stem's and the head's block
counts stay 1. The resolution is not part of the network (it ends in global pooling): it is each
config's ``paper.input_size``, the ``data.image_size`` the published figures are for.

Regularisation as in the paper: dropout before the classifier, rising from 0.2 (B0) to 0.5 (B7), and
stochastic depth on the residual branches ("drop connect"), block i of N dropped with probability
``stochastic_depth * i / N`` in training (0.2 at most: survival probability 0.8); at test time every
block runs.

Module names are torchvision's ``efficientnet_b*`` (``features.<stage>.<block>.block.<layer>``,
``classifier.1``), and so are its BatchNorm settings (PyTorch's defaults for B0-B4; eps 0.001 and
momentum 0.01, TF's, for the B5-B7 weights it ported: ``bn_eps``/``bn_momentum``), so its state
dicts load and compute the same logits (``models.torchvision_twins``). (At momentum 0.01 the running
statistics need some hundreds of steps to follow training; ``model.bn_momentum=0.1`` for shorter runs.) Built from torchvision's
``Conv2dNormActivation``, ``SqueezeExcitation`` and ``StochasticDepth``; the block and the scaling are
written here because torchvision's class hard-codes 3 input channels and lacks the zoo's interface.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation, StochasticDepth
from torchvision.ops.misc import Conv2dNormActivation

from models.errors import ModelConfigError, require_io, require_probability
from models.init import init_weights
from models.interface import FeaturesClassifierMixin
from models.mobilenet import make_divisible
from models.mobilenet_v3 import batch_norm


class Stage(NamedTuple):
    """One row of Table 1 (stages 2-8): MBConv expansion, kernel, first stride, output width, blocks."""

    expansion: int
    kernel: int
    stride: int
    out: int
    blocks: int


STEM_CHANNELS = 32
# Table 1, EfficientNet-B0; the strides are those that give its resolution column (112 ... 7).
B0_STAGES = (
    Stage(1, 3, 1, 16, 1), Stage(6, 3, 2, 24, 2), Stage(6, 5, 2, 40, 2), Stage(6, 3, 2, 80, 3),
    Stage(6, 5, 1, 112, 3), Stage(6, 5, 2, 192, 4), Stage(6, 3, 1, 320, 1),
)
HEAD_EXPANSION = 4  # the final 1x1 conv: 1280 = 4 x 320 at B0, scaled with the width


def scaled_width(channels: int, width_mult: float) -> int:
    """A baseline width under compound scaling: to a multiple of 8, never more than 10% down."""
    return make_divisible(channels * width_mult)


def scaled_depth(blocks: int, depth_mult: float) -> int:
    """A stage's block count under compound scaling: rounded up."""
    return math.ceil(blocks * depth_mult)


def _require_multiplier(key: str, value: object, examples: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 8:
        raise ModelConfigError(key, value, "must be in (0, 8].",
                               f"Use the paper's coefficients, e.g. {examples} (B0 ... B7).")
    return float(value)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excite: [1x1 expand] -> kxk depthwise -> SE -> linear 1x1,
    plus the input (behind stochastic depth) when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, kernel: int, stride: int,
                 drop_prob: float, norm_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        expanded = scaled_width(in_channels, expansion)
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(Conv2dNormActivation(in_channels, expanded, 1, norm_layer=norm_layer,
                                               activation_layer=nn.SiLU))
        layers += [
            Conv2dNormActivation(expanded, expanded, kernel, stride=stride, groups=expanded, norm_layer=norm_layer,
                                 activation_layer=nn.SiLU),
            SqueezeExcitation(expanded, max(1, in_channels // 4), activation=partial(nn.SiLU, inplace=True)),
            Conv2dNormActivation(expanded, out_channels, 1, norm_layer=norm_layer, activation_layer=None),
        ]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(drop_prob, "row")
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return self.stochastic_depth(out) + x if self.use_res_connect else out


class EfficientNet(FeaturesClassifierMixin):
    """Features: the final 1x1 SiLU conv (1280 channels at B0); head: global average pool, dropout, the
    classifier. ``features.0`` is the stem, ``features.1``-``features.7`` the stages of MBConv blocks,
    ``features.8`` the final conv (torchvision's layout).

    Every conv is padded, so any input size leaves at least a 1x1 map; ``input_size`` is only checked.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 224,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        dropout: float = 0.2,
        stochastic_depth: float = 0.2,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes, input_size)
        width = _require_multiplier("width_mult", width_mult, "1.0, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0")
        depth = _require_multiplier("depth_mult", depth_mult, "1.0, 1.1, 1.2, 1.4, 1.8, 2.2, 2.6, 3.1")
        require_probability("dropout", dropout)
        require_probability("stochastic_depth", stochastic_depth)
        norm_layer = batch_norm(bn_eps, bn_momentum)

        channels = scaled_width(STEM_CHANNELS, width)
        layers: list[nn.Module] = [Conv2dNormActivation(in_channels, channels, 3, stride=2, norm_layer=norm_layer,
                                                        activation_layer=nn.SiLU)]
        repeats = [scaled_depth(stage.blocks, depth) for stage in B0_STAGES]
        total, index = sum(repeats), 0
        for stage, count in zip(B0_STAGES, repeats):
            out = scaled_width(stage.out, width)
            blocks = []
            for position in range(count):
                blocks.append(MBConv(channels, out, stage.expansion, stage.kernel,
                                     stage.stride if position == 0 else 1, stochastic_depth * index / total,
                                     norm_layer))
                channels, index = out, index + 1
            layers.append(nn.Sequential(*blocks))
        last = HEAD_EXPANSION * channels
        layers.append(Conv2dNormActivation(channels, last, 1, norm_layer=norm_layer, activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(last, num_classes))
        self.init_scheme = init
        init_weights(self, init)
