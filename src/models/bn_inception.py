"""BN-Inception ("Inception v2"; Ioffe & Szegedy 2015, "Batch Normalization", Sec. 4.2 and Fig. 5).

GoogLeNet changed in the ways Sec. 4.2 lists: batch normalisation after every convolution (and no conv
biases: BN's shift subsumes them, Sec. 3.2), each 5x5 conv replaced by two 3x3 convs (the "double 3x3"
tower), a third module on the 28x28 grid, average or max pooling inside each module as Fig. 5 says, no
pooling layers between modules: instead modules 3c and 4e halve the grid with stride-2 convs and a
3x3/2 max pool whose output passes through unprojected ("max + pass through"). No LRN, no auxiliary
heads (Fig. 5 has none), and no dropout by default: the paper removed it (Sec. 4.2.1, "Remove Dropout").

Fig. 5 contradicts itself in modules 4c and 4d: their columns (160 + 160 + 160 + 128 and
96 + 192 + 192 + 128 channels) add up to 608, while the output column says 576. We build the columns
as printed, as the reference Caffe port does (its ``inception_4e`` is 14x14x1056 -> 7x7x1056, its
``inception_5a`` takes 1056 channels); TF-slim's ``inception_v2`` instead shrinks those two pool
projections to 96 to match the 576. The reference port (yjxiong's Caffe model, Cadene's
``pretrainedmodels.bninception``) has 11,295,240 parameters; it keeps a bias on every conv, which this
network, like the paper, leaves out: 10,016 fewer.

``stem: separable`` makes the 7x7/2 conv depthwise separable (depth multiplier 8, then 1x1 to 64), as
Google's TF-slim ``inception_v2`` builds it; Fig. 5 just says "convolution", hence the default ``conv``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from models.errors import require_choice, require_io, require_min_input_size, require_probability
from models.geometry import Window, minimum_input_size
from models.init import init_weights
from models.interface import FeaturesClassifierMixin

STEMS = ("conv", "separable")


class ModuleSpec(NamedTuple):
    """One row of Fig. 5: #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool, pool proj.

    A pass-through module (3c, 4e) has no 1x1 tower and no projection (0) and works at stride 2.
    """

    c1: int
    c3_reduce: int
    c3: int
    d3_reduce: int
    d3: int
    pool: str
    pool_proj: int

    @property
    def pass_through(self) -> bool:
        return self.pool_proj == 0


FIGURE_5: dict[str, ModuleSpec] = {
    "3a": ModuleSpec(64, 64, 64, 64, 96, "avg", 32),
    "3b": ModuleSpec(64, 64, 96, 64, 96, "avg", 64),
    "3c": ModuleSpec(0, 128, 160, 64, 96, "max", 0),
    "4a": ModuleSpec(224, 64, 96, 96, 128, "avg", 128),
    "4b": ModuleSpec(192, 96, 128, 96, 128, "avg", 128),
    "4c": ModuleSpec(160, 128, 160, 128, 160, "avg", 128),
    "4d": ModuleSpec(96, 128, 192, 160, 192, "avg", 128),
    "4e": ModuleSpec(0, 128, 192, 192, 256, "max", 0),
    "5a": ModuleSpec(352, 192, 320, 160, 224, "avg", 128),
    "5b": ModuleSpec(352, 192, 320, 192, 224, "max", 128),
}
# The stem's 7x7/2 conv and two 3x3/2 max pools (Caffe's ceil mode, as the zoo's GoogLeNet), then the
# pass-through modules' stride-2 windows (padded: they always leave a 1x1 map).
WINDOWS: list[Window] = [(7, 2, 3, False), (3, 2, 0, True), (3, 2, 0, True), (3, 2, 1, False), (3, 2, 1, False)]


def conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> Conv2dNormActivation:
    """Conv (no bias) -> BN -> ReLU, "same" padded."""
    return Conv2dNormActivation(in_channels, out_channels, kernel, stride=stride)


class BNInceptionModule(nn.Module):
    """1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3; pool -> 1x1, concatenated (Fig. 5's columns).

    A pass-through module drops the 1x1 tower, puts stride 2 on the last conv of the two 3x3 towers and
    passes a 3x3/2 max pool of its input through unprojected. Pools are padded to keep (or exactly halve)
    the grid; an average pool averages the real pixels only.
    """

    def __init__(self, in_channels: int, spec: ModuleSpec) -> None:
        super().__init__()
        stride = 2 if spec.pass_through else 1
        self.branch1: nn.Module | None = None if spec.pass_through else conv_bn(in_channels, spec.c1, 1)
        self.branch2 = nn.Sequential(conv_bn(in_channels, spec.c3_reduce, 1),
                                     conv_bn(spec.c3_reduce, spec.c3, 3, stride))
        self.branch3 = nn.Sequential(conv_bn(in_channels, spec.d3_reduce, 1), conv_bn(spec.d3_reduce, spec.d3, 3),
                                     conv_bn(spec.d3, spec.d3, 3, stride))
        pool = nn.MaxPool2d(3, stride, padding=1) if spec.pool == "max" else \
            nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)
        self.branch4 = pool if spec.pass_through else nn.Sequential(pool, conv_bn(in_channels, spec.pool_proj, 1))
        self.out_channels = spec.c1 + spec.c3 + spec.d3 + (in_channels if spec.pass_through else spec.pool_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        towers = [self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(towers if self.branch1 is None else [self.branch1(x), *towers], 1)


def separable_stem(in_channels: int) -> nn.Sequential:
    """7x7/2 depthwise conv with depth multiplier 8 (TF-slim: min(64 // 3, 8)), then 1x1 to 64, BN, ReLU."""
    multiplier = max(1, min(64 // in_channels, 8))
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels * multiplier, 7, stride=2, padding=3, groups=in_channels, bias=False),
        Conv2dNormActivation(in_channels * multiplier, 64, 1),
    )


class BNInception(FeaturesClassifierMixin):
    """Features: inception (5b)'s 7x7x1024 maps (at 224); head: global average pool, dropout, ``fc``."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 224,
        stem: str = "conv",
        dropout: float = 0.0,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes)
        require_choice("stem", stem, STEMS)
        require_probability("dropout", dropout)
        require_min_input_size("BN-Inception (a 7x7/2 conv and two unpadded 3x3/2 max pools)", input_size,
                               minimum_input_size(WINDOWS), 224)
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=conv_bn(in_channels, 64, 7, stride=2) if stem == "conv" else separable_stem(in_channels),
            pool1=nn.MaxPool2d(3, stride=2, ceil_mode=True),
            conv2_reduce=conv_bn(64, 64, 1),
            conv2=conv_bn(64, 192, 3),
            pool2=nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
        channels = 192
        for name, spec in FIGURE_5.items():
            layers[f"inception{name}"] = module = BNInceptionModule(channels, spec)
            channels = module.out_channels
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # Fig. 5's 7x7/1 average pool at 224
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        self.init_scheme = init
        init_weights(self, init)
