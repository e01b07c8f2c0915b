"""Xception (Chollet 2017, "Xception: Deep Learning with Depthwise Separable Convolutions"), from Fig. 5.

The "extreme Inception" hypothesis: cross-channel and spatial correlations can be mapped entirely
separately, so every Inception module becomes a depthwise separable convolution (a 3x3 depthwise conv,
then a 1x1 pointwise conv, with *no* nonlinearity between them: Fig. 10 shows that one hurts).

Fig. 5: an entry flow (two plain 3x3 convs, then three residual blocks of two separable convs and a
3x3/2 max pool, with a 1x1/2 conv on the shortcut: 128, 256, 728 channels), a middle flow (8 residual
blocks of three ReLU-separable conv pairs at 19x19x728, identity shortcut) and an exit flow (one more
downsampling block to 1024, separable convs to 1536 and 2048, global average pool). Every conv and
separable conv is followed by BN; separable convs have depth multiplier 1 and no bias. The ImageNet
model has no fully connected layer before the logistic regression, and dropout 0.5 before it (Sec. 4.3).

Table 3's 22,855,952 parameters include that 1000-way layer (2048 x 1000 weights + 1000 biases) and BN's
scale and shift, and not BN's running statistics (Keras counts those as 54,528 non-trainable weights).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from models.errors import require_io, require_min_input_size, require_probability
from models.geometry import Window, minimum_input_size
from models.init import init_weights
from models.interface import FeaturesClassifierMixin

# Entry flow: (output widths of the two separable convs) of each downsampling block; exit flow likewise.
ENTRY_BLOCKS = ((128, 128), (256, 256), (728, 728))
EXIT_BLOCK = (728, 1024)
MIDDLE_REPEATS = 8
# The two unpadded 3x3 convs of the entry flow; the four stride-2 pools are padded (each leaves >= 1x1).
WINDOWS: list[Window] = [(3, 2, 0, False), (3, 1, 0, False)]


class SeparableConv2d(nn.Sequential):
    """Depthwise 3x3 (one filter per channel) then pointwise 1x1, bias-free, nothing in between.

    Written here because torch has no separable conv layer (torchvision's ``Conv2dNormActivation`` would
    put a BN and a ReLU after the depthwise half, which the paper finds worse).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(OrderedDict(
            depthwise=nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            pointwise=nn.Conv2d(in_channels, out_channels, 1, bias=False),
        ))


def separable_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(SeparableConv2d(in_channels, out_channels), nn.BatchNorm2d(out_channels))


class XceptionBlock(nn.Module):
    """ReLU -> SeparableConv -> BN, repeated, plus a shortcut; with ``downsample`` a 3x3/2 max pool ends the
    residual branch and the shortcut is a 1x1/2 conv + BN (the entry and exit flows), else the identity.

    ``relu_first=False`` leaves out the leading ReLU (the first entry block: the stem already ends in one).
    The ReLUs are not in place: the block's input also feeds the shortcut.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], downsample: bool, relu_first: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            if index > 0 or relu_first:
                layers.append(nn.ReLU())
            layers.append(separable_bn(channels, width))
            channels = width
        if downsample:
            layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        self.residual = nn.Sequential(*layers)
        self.shortcut: nn.Module = (
            Conv2dNormActivation(in_channels, channels, 1, stride=2, activation_layer=None)
            if downsample else nn.Identity()
        )
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class Xception(FeaturesClassifierMixin):
    """Features: the exit flow's 10x10x2048 maps (at 299), after the last ReLU; head: global average
    pool, dropout, ``fc`` (the logistic regression)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 299,
        dropout: float = 0.5,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes)
        require_probability("dropout", dropout)
        require_min_input_size("Xception (two unpadded 3x3 convs, the first of stride 2)", input_size,
                               minimum_input_size(WINDOWS), 299)
        stages: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=Conv2dNormActivation(in_channels, 32, 3, stride=2, padding=0),  # 149x149x32
            conv2=Conv2dNormActivation(32, 64, 3, padding=0),                     # 147x147x64
        )
        channels = 64
        for index, widths in enumerate(ENTRY_BLOCKS, start=1):  # 74x74x128, 37x37x256, 19x19x728
            stages[f"entry_block{index}"] = block = XceptionBlock(channels, widths, True, relu_first=index > 1)
            channels = block.out_channels
        stages["middle_flow"] = nn.Sequential(*[XceptionBlock(channels, (channels,) * 3, False)
                                                for _ in range(MIDDLE_REPEATS)])
        stages["exit_block"] = XceptionBlock(channels, EXIT_BLOCK, True)     # 10x10x1024
        stages["exit_conv1"] = nn.Sequential(separable_bn(EXIT_BLOCK[-1], 1536), nn.ReLU(inplace=True))
        stages["exit_conv2"] = nn.Sequential(separable_bn(1536, 2048), nn.ReLU(inplace=True))
        self.features = nn.Sequential(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(2048, num_classes))
        self.init_scheme = init
        init_weights(self, init)
