"""ShuffleNet v2 (Ma et al. 2018): channel split, two equal branches, concatenation, channel shuffle.

The paper's four guidelines for fast networks (equal input and output widths, few groups, few
fragments, few element-wise ops) lead to one unit (Fig. 3c): split the ``c`` input channels in two
halves; one half passes untouched, the other runs 1x1 conv-BN-ReLU, 3x3 depthwise conv-BN (no ReLU),
1x1 conv-BN-ReLU; the halves are concatenated and the channels shuffled (groups of 2), so the next
unit's split mixes both. The downsampling unit (Fig. 3d) has no split: both branches see the whole
input, the left one a 3x3/2 depthwise conv-BN then 1x1 conv-BN-ReLU, so the width doubles.

Table 5: a 3x3/2 conv (24 channels) and a 3x3/2 max pool; stages 2-4 of 4, 8 and 4 units (the first
with stride 2); a 1x1 conv (1024 channels, 2048 at 2x); global average pool; the FC layer. The widths
per ``width_multiplier`` come from the table, not from a formula (0.5x is 48/96/192, not half of
1x's 116/232/464). Parameters and FLOPs (multiply-adds) from Table 5, 0.5x to 2x: 1.4/2.3/3.5/7.4 M,
41/146/299/591 M.

Module names are torchvision's ``shufflenet_v2_x*`` (``conv1``, ``stage2.0.branch1.0``, ``conv5``,
``fc``), so its state dicts load and compute the same logits (``models.torchvision_twins``). Written
here rather than wrapping torchvision's class because that one hard-codes 3 input channels and lacks
the zoo's interface; the channel shuffle itself is PyTorch's ``nn.ChannelShuffle``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.errors import ModelConfigError, require_io, require_probability
from models.init import init_weights
from models.interface import ClassifierMixin

STEM_CHANNELS = 24
STAGE_REPEATS = (4, 8, 4)  # Table 5: units in stages 2, 3, 4 (the first of each downsamples)
# Table 5: output channels of stages 2, 3, 4 and of conv5, per complexity level ("0.5x" ... "2x").
STAGE_WIDTHS: dict[float, tuple[int, int, int, int]] = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}


def _require_width(width_multiplier: object) -> float:
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float)) \
            or float(width_multiplier) not in STAGE_WIDTHS:
        valid = ", ".join(str(w) for w in STAGE_WIDTHS)
        raise ModelConfigError("width_multiplier", width_multiplier,
                               f"is not one of ShuffleNet v2's complexity levels ({valid}; Table 5 lists "
                               "their widths, which are not a multiple of one another).",
                               f"Use one of: {valid}.")
    return float(width_multiplier)


def _depthwise(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


def _pointwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class ShuffleUnit(nn.Module):
    """Fig. 3c (stride 1: split, one branch, concat, shuffle) or 3d (stride 2: two branches, width x2).

    ``branch1`` (the left branch of 3d) exists only when downsampling; the basic unit's left half is
    the identity. Layers are plain ``nn.Sequential`` entries so the keys are torchvision's.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        branch = out_channels // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(in_channels, stride), nn.BatchNorm2d(in_channels),
                _pointwise(in_channels, branch), nn.BatchNorm2d(branch), nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            _pointwise(in_channels if stride > 1 else branch, branch), nn.BatchNorm2d(branch), nn.ReLU(inplace=True),
            _depthwise(branch, stride), nn.BatchNorm2d(branch),  # no ReLU after the depthwise conv
            _pointwise(branch, branch), nn.BatchNorm2d(branch), nn.ReLU(inplace=True),
        )
        self.shuffle = nn.ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            passed, processed = x.chunk(2, dim=1)  # channel split, c' = c / 2
            out = torch.cat((passed, self.branch2(processed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


class ShuffleNetV2(ClassifierMixin):
    """Features: ``conv5``'s output (1024 channels, 2048 at 2x); head: global average pool, dropout, ``fc``.

    Every layer is padded, so any input size leaves at least a 1x1 map (a 28x28 Fashion-MNIST image is
    1x1 after stage 4); ``input_size`` is only checked.
    """

    classifier_name = "fc"
    feature_module_name = "conv5"

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
        require_io(in_channels, num_classes, input_size)
        require_probability("dropout", dropout)
        *stage_widths, last = STAGE_WIDTHS[_require_width(width_multiplier)]
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, STEM_CHANNELS, 3, stride=2, padding=1, bias=False),
                                   nn.BatchNorm2d(STEM_CHANNELS), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = STEM_CHANNELS
        for number, repeats, width in zip((2, 3, 4), STAGE_REPEATS, stage_widths):
            units = [ShuffleUnit(channels if index == 0 else width, width, 2 if index == 0 else 1)
                     for index in range(repeats)]
            setattr(self, f"stage{number}", nn.Sequential(*units))
            channels = width
        self.conv5 = nn.Sequential(_pointwise(channels, last), nn.BatchNorm2d(last), nn.ReLU(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(last, num_classes)
        self.init_scheme = init
        init_weights(self, init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.conv5(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(features), 1))
        return x if pre_logits else self.fc(x)
