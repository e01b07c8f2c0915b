"""The modules of Inception-v4 and Inception-ResNet-v2 (Szegedy, Ioffe, Vanhoucke & Alemi 2016), one per figure.

Inception-v4: stem (Fig. 3), Inception-A/B/C (Figs. 4-6), Reduction-A (Fig. 7, widths k, l, m, n from
Table 1), Reduction-B (Fig. 8). Inception-ResNet-v2: the same stem and Reduction-A, the residual
Inception-ResNet-A/B/C (Figs. 16, 17, 19) and its own Reduction-B (Fig. 18); ``ReferenceStem`` is the
stem of the released TF-slim network instead (see ``models.inception_v4``).

Conventions of the figures: a conv marked "V" is valid-padded (it shrinks the map), every other one is
same-padded; every conv is conv-BN-ReLU without a bias (torchvision's ``Conv2dNormActivation``), except the
1x1 "Linear" conv that closes a residual branch, which has a bias and neither BN nor ReLU: the paper puts
batch normalisation "on top of the traditional layers, but not on top of the summations". Branch order
follows TF-slim and the zoo's GoogLeNet (1x1 first, pooling last); the figures draw the pooling branch
first, which changes the channel order of the concatenation and nothing else. Average pools inside the
modules average the real pixels only (``count_include_pad=False``, TensorFlow's "SAME" pooling).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from models.geometry import Window

Kernel = int | tuple[int, int]


def conv_bn(in_channels: int, out_channels: int, kernel: Kernel, stride: int = 1,
            valid: bool = False) -> Conv2dNormActivation:
    """Conv-BN-ReLU, bias-free; "same" padded unless ``valid`` (the figures' "V")."""
    return Conv2dNormActivation(in_channels, out_channels, kernel, stride=stride, padding=0 if valid else None)


def chain(in_channels: int, *layers: tuple[int, Kernel] | tuple[int, Kernel, int, bool]) -> nn.Sequential:
    """A branch of conv-BN-ReLU layers, each given as ``(width, kernel[, stride, valid])``."""
    convs = []
    for layer in layers:
        width, kernel, *rest = layer
        convs.append(conv_bn(in_channels, width, kernel, *rest))
        in_channels = width
    return nn.Sequential(*convs)


def avg_pool_same() -> nn.AvgPool2d:
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


def max_pool_valid() -> nn.MaxPool2d:
    """The 3x3/2 "V" max pool of every grid reduction."""
    return nn.MaxPool2d(3, stride=2)


# The one spatial window shared by every grid reduction: 3x3, stride 2, valid.
REDUCTION: Window = (3, 2, 0, False)


class Mixed(nn.Module):
    """Parallel branches concatenated along channels: the form of every module in the paper."""

    def __init__(self, out_channels: int, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


def split(in_channels: int, width: int) -> Mixed:
    """Inception-C's fork: a 1x3 and a 3x1 conv side by side on the same input (Fig. 6)."""
    return Mixed(2 * width, conv_bn(in_channels, width, (1, 3)), conv_bn(in_channels, width, (3, 1)))


class Stem(nn.Sequential):
    """Fig. 3: 299x299x3 -> 35x35x384 through three splits into a stride-2 conv and a pool (or two towers)."""

    # The spatial windows, for the minimum input size: 3x3/2 V, 3x3 V, then the splits' 3x3/2 V, 3x3 V, 3x3/2 V.
    WINDOWS: tuple[Window, ...] = ((3, 2, 0, False), (3, 1, 0, False), REDUCTION, (3, 1, 0, False), REDUCTION)

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_channels, 32, 3, stride=2, valid=True)    # 149x149x32
        self.conv2 = conv_bn(32, 32, 3, valid=True)                       # 147x147x32
        self.conv3 = conv_bn(32, 64, 3)                                   # 147x147x64
        self.mixed1 = Mixed(160, max_pool_valid(), conv_bn(64, 96, 3, stride=2, valid=True))  # 73x73x160
        self.mixed2 = Mixed(192, chain(160, (64, 1), (96, 3, 1, True)),
                            chain(160, (64, 1), (64, (7, 1)), (64, (1, 7)), (96, 3, 1, True)))  # 71x71x192
        self.mixed3 = Mixed(384, conv_bn(192, 192, 3, stride=2, valid=True), max_pool_valid())  # 35x35x384
        self.out_channels = 384


class InceptionA(Mixed):
    """Fig. 4, on the 35x35 grid (384 channels in and out)."""

    def __init__(self, in_channels: int = 384) -> None:
        super().__init__(
            384,
            conv_bn(in_channels, 96, 1),
            chain(in_channels, (64, 1), (96, 3)),
            chain(in_channels, (64, 1), (96, 3), (96, 3)),
            nn.Sequential(avg_pool_same(), conv_bn(in_channels, 96, 1)),
        )


class InceptionB(Mixed):
    """Fig. 5, on the 17x17 grid (1024 channels). The figure's middle tower reads "1x7 224, 1x7 256"; the
    second is a 7x1, as the factorisation of a 7x7 and every implementation have it."""

    def __init__(self, in_channels: int = 1024) -> None:
        super().__init__(
            1024,
            conv_bn(in_channels, 384, 1),
            chain(in_channels, (192, 1), (224, (1, 7)), (256, (7, 1))),
            chain(in_channels, (192, 1), (192, (1, 7)), (224, (7, 1)), (224, (1, 7)), (256, (7, 1))),
            nn.Sequential(avg_pool_same(), conv_bn(in_channels, 128, 1)),
        )


class InceptionC(Mixed):
    """Fig. 6, on the 8x8 grid (1536 channels): two towers end in a 1x3 / 3x1 fork."""

    def __init__(self, in_channels: int = 1536) -> None:
        super().__init__(
            1536,
            conv_bn(in_channels, 256, 1),
            nn.Sequential(conv_bn(in_channels, 384, 1), split(384, 256)),
            nn.Sequential(chain(in_channels, (384, 1), (448, (1, 3)), (512, (3, 1))), split(512, 256)),
            nn.Sequential(avg_pool_same(), conv_bn(in_channels, 256, 1)),
        )


class ReductionA(Mixed):
    """Fig. 7, 35x35 -> 17x17: a 3x3/2 conv (n), a 1x1 (k) -> 3x3 (l) -> 3x3/2 (m) tower and a max pool.

    Table 1 gives (k, l, m, n) = (192, 224, 256, 384) for Inception-v4 and (256, 256, 384, 384) for
    Inception-ResNet-v2; the output has ``n + m + in_channels`` channels.
    """

    def __init__(self, in_channels: int, k: int, l: int, m: int, n: int) -> None:  # noqa: E741 (the paper's names)
        super().__init__(
            n + m + in_channels,
            conv_bn(in_channels, n, 3, stride=2, valid=True),
            chain(in_channels, (k, 1), (l, 3), (m, 3, 2, True)),
            max_pool_valid(),
        )


class ReductionB(Mixed):
    """Fig. 8 (Inception-v4), 17x17x1024 -> 8x8x1536."""

    def __init__(self, in_channels: int = 1024) -> None:
        super().__init__(
            192 + 320 + in_channels,
            chain(in_channels, (192, 1), (192, 3, 2, True)),
            chain(in_channels, (256, 1), (256, (1, 7)), (320, (7, 1)), (320, 3, 2, True)),
            max_pool_valid(),
        )


class ResidualReductionB(Mixed):
    """Fig. 18 (Inception-ResNet-v2), 17x17 -> 8x8: three stride-2 towers (384, 288, 320) and a max pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(
            384 + 288 + 320 + in_channels,
            chain(in_channels, (256, 1), (384, 3, 2, True)),
            chain(in_channels, (256, 1), (288, 3, 2, True)),
            chain(in_channels, (256, 1), (288, 3), (320, 3, 2, True)),
            max_pool_valid(),
        )


class ResidualInception(nn.Module):
    """``relu(x + scale * linear_1x1(concat(branches(x))))``: an Inception-ResNet block (Figs. 16-20).

    The 1x1 conv restores the input width so the sum is defined. ``scale`` is Sec. 3.3's activation
    scaling (0.1 to 0.3), which kept the wide residual networks from dying early in training.
    ``activate=False`` leaves the ReLU out (the reference network's last block).
    """

    def __init__(self, branches: Mixed, channels: int, scale: float, activate: bool = True) -> None:
        super().__init__()
        self.branches = branches
        self.project = nn.Conv2d(branches.out_channels, channels, 1)  # "Linear": bias, no BN, no ReLU
        self.scale = float(scale)
        self.relu: nn.Module = nn.ReLU(inplace=True) if activate else nn.Identity()
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.scale * self.project(self.branches(x)))


class InceptionResNetA(ResidualInception):
    """Fig. 16, 35x35 grid: 1x1 32; 1x1 32 -> 3x3 32; 1x1 32 -> 3x3 48 -> 3x3 64; 1x1 back to ``channels``."""

    def __init__(self, channels: int, scale: float, activate: bool = True) -> None:
        branches = Mixed(128, conv_bn(channels, 32, 1), chain(channels, (32, 1), (32, 3)),
                         chain(channels, (32, 1), (48, 3), (64, 3)))
        super().__init__(branches, channels, scale, activate)


class InceptionResNetB(ResidualInception):
    """Fig. 17, 17x17 grid: 1x1 192; 1x1 128 -> 1x7 160 -> 7x1 192; 1x1 back to ``channels``."""

    def __init__(self, channels: int, scale: float, activate: bool = True) -> None:
        branches = Mixed(384, conv_bn(channels, 192, 1), chain(channels, (128, 1), (160, (1, 7)), (192, (7, 1))))
        super().__init__(branches, channels, scale, activate)


class InceptionResNetC(ResidualInception):
    """Fig. 19, 8x8 grid: 1x1 192; 1x1 192 -> 1x3 224 -> 3x1 256; 1x1 back to ``channels``."""

    def __init__(self, channels: int, scale: float, activate: bool = True) -> None:
        branches = Mixed(448, conv_bn(channels, 192, 1), chain(channels, (192, 1), (224, (1, 3)), (256, (3, 1))))
        super().__init__(branches, channels, scale, activate)


class ReferenceStem(nn.Sequential):
    """The stem of the released TF-slim Inception-ResNet-v2: 299x299x3 -> 35x35x320.

    Inception-ResNet-v1's plain stem up to a 3x3/2 max pool (Fig. 14 without its last conv), then an
    Inception module (slim's ``Mixed_5b``: 1x1 96; 1x1 48 -> 5x5 64; 1x1 64 -> 3x3 96 -> 3x3 96; avg pool
    -> 1x1 64). It is in no figure of the paper.
    """

    WINDOWS: tuple[Window, ...] = ((3, 2, 0, False), (3, 1, 0, False), REDUCTION, (3, 1, 0, False), REDUCTION)

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_channels, 32, 3, stride=2, valid=True)  # 149x149x32
        self.conv2 = conv_bn(32, 32, 3, valid=True)                     # 147x147x32
        self.conv3 = conv_bn(32, 64, 3)                                 # 147x147x64
        self.pool1 = max_pool_valid()                                   # 73x73x64
        self.conv4 = conv_bn(64, 80, 1)                                 # 73x73x80
        self.conv5 = conv_bn(80, 192, 3, valid=True)                    # 71x71x192
        self.pool2 = max_pool_valid()                                   # 35x35x192
        self.mixed = Mixed(320, conv_bn(192, 96, 1), chain(192, (48, 1), (64, 5)),
                           chain(192, (64, 1), (96, 3), (96, 3)),
                           nn.Sequential(avg_pool_same(), conv_bn(192, 64, 1)))
        self.out_channels = 320


def repeat(block: type[nn.Module], times: int, *args: object, last: Sequence[object] | None = None) -> nn.Sequential:
    """``times`` copies of ``block(*args)`` as one stage (the figures' "4 x Inception-A"); ``last``: other
    arguments for the final copy."""
    blocks = [block(*args) for _ in range(times - 1)] + [block(*(last if last is not None else args))]
    return nn.Sequential(*blocks)
