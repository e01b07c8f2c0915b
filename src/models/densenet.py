"""DenseNet (Huang et al. 2017): every layer of a dense block sees the concatenation of all earlier ones.

``form: imagenet`` — Table 1: 7x7/2 stem with 2k filters, 3x3/2 max pool, four dense blocks
(121: 6/12/24/16 layers, 169: 6/12/32/32, 201: 6/12/48/32, 264: 6/12/64/48) of BN-ReLU-1x1 conv (4k)
-BN-ReLU-3x3 conv (k) layers, transitions BN-ReLU-1x1 conv (compression 0.5)-2x2 avg pool, growth
rate k = 32. DenseNet-161 (6/12/36/24) is the authors' k = 48 ImageNet model (``growth_rate: 48``).
Module names match torchvision's ``densenet121/161/169/201`` so their state dicts load.

``form: cifar`` — Sec. 3: a 3x3 stem and three dense blocks at 32, 16, 8. DenseNet-BC (bottleneck +
compression 0.5, the default) has (depth - 4) / 6 layers per block and a 2k-filter stem; plain DenseNet
(``bottleneck: false, compression: 1.0``) has (depth - 4) / 3 layers and a 16-filter stem.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from models.errors import (
    ModelConfigError,
    require_choice,
    require_io,
    require_min_input_size,
    require_positive_int,
    require_probability,
)
from models.init import init_weights
from models.interface import ClassifierMixin

FORMS = ("imagenet", "cifar")
IMAGENET_BLOCKS: dict[int, tuple[int, ...]] = {
    121: (6, 12, 24, 16),
    161: (6, 12, 36, 24),  # with growth_rate 48 (the authors' DenseNet-161, torchvision's densenet161)
    169: (6, 12, 32, 32),
    201: (6, 12, 48, 32),
    264: (6, 12, 64, 48),
}


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size * k) -BN-ReLU-3x3 conv (k); without bottleneck only the 3x3 part."""

    def __init__(self, in_channels: int, growth_rate: int, bn_size: int, bottleneck: bool, dropout: float) -> None:
        super().__init__()
        if bottleneck:
            self.norm1 = nn.BatchNorm2d(in_channels)
            self.relu1 = nn.ReLU(inplace=True)
            self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
            in_channels = bn_size * growth_rate
        self.bottleneck = bottleneck
        self.norm2 = nn.BatchNorm2d(in_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(in_channels, growth_rate, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(features))) if self.bottleneck else features
        return self.dropout(self.conv2(self.relu2(self.norm2(x))))


class DenseBlock(nn.ModuleDict):
    """Layers whose outputs are concatenated onto the running feature stack (named ``denselayerN``)."""

    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int, bottleneck: bool,
                 dropout: float) -> None:
        super().__init__()
        for index in range(num_layers):
            layer = DenseLayer(in_channels + index * growth_rate, growth_rate, bn_size, bottleneck, dropout)
            self.add_module(f"denselayer{index + 1}", layer)
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (compressing by ``compression``)-2x2 average pool, between dense blocks."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(OrderedDict(
            norm=nn.BatchNorm2d(in_channels),
            relu=nn.ReLU(inplace=True),
            conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
            pool=nn.AvgPool2d(2, stride=2),
        ))


class DenseNet(ClassifierMixin):
    """Features: the last dense block's maps after the final norm and ReLU (the module ``relu``); head:
    global average pool, ``classifier``."""

    classifier_name = "classifier"
    feature_module_name = "relu"

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 224,
        form: str = "imagenet",
        depth: int = 121,
        growth_rate: int = 32,
        bottleneck: bool = True,
        compression: float = 0.5,
        bn_size: int = 4,
        dropout: float = 0.0,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes)
        require_choice("form", form, FORMS)
        require_positive_int("growth_rate", growth_rate)
        require_positive_int("bn_size", bn_size)
        require_probability("dropout", dropout)
        if isinstance(compression, bool) or not isinstance(compression, (int, float)) or not 0 < compression <= 1:
            raise ModelConfigError("compression", compression, "must be in (0, 1].", "Use 0.5 (DenseNet-BC) or 1.0.")
        blocks = resolve_blocks(form, depth, bool(bottleneck))
        require_min_input_size(f"DenseNet ({form} form)", input_size, 32 if form == "imagenet" else 4,
                               224 if form == "imagenet" else 32)

        stem_width = 2 * growth_rate if (bottleneck or form == "imagenet") else 16
        if form == "imagenet":
            stem = OrderedDict(
                conv0=nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False),
                norm0=nn.BatchNorm2d(stem_width),
                relu0=nn.ReLU(inplace=True),
                pool0=nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            stem = OrderedDict(conv0=nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False))
        self.features = nn.Sequential(stem)
        channels = stem_width
        for index, num_layers in enumerate(blocks):
            block = DenseBlock(num_layers, channels, growth_rate, bn_size, bool(bottleneck), dropout)
            self.features.add_module(f"denseblock{index + 1}", block)
            channels = block.out_channels
            if index != len(blocks) - 1:
                out = int(channels * compression)
                if out < 1:
                    raise ModelConfigError("compression", compression, f"leaves transition{index + 1} with "
                                           f"int({channels} x {compression}) = 0 channels.",
                                           f"Use at least {1 / channels:.3g} (0.5 is DenseNet-BC's).")
                self.features.add_module(f"transition{index + 1}", Transition(channels, out))
                channels = out
        self.features.add_module(f"norm{len(blocks) + 1}", nn.BatchNorm2d(channels))
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        self.init_scheme = init
        init_weights(self, init)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.features(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(features), 1)
        return x if pre_logits else self.classifier(x)


def resolve_blocks(form: str, depth: object, bottleneck: bool) -> tuple[int, ...]:
    if form == "imagenet":
        if depth not in IMAGENET_BLOCKS:
            valid = ", ".join(map(str, IMAGENET_BLOCKS))
            raise ModelConfigError("depth", depth, f"is not an ImageNet DenseNet depth ({valid}).",
                                   f"Use one of: {valid}, or form: cifar for 3-block depths such as 100.")
        return IMAGENET_BLOCKS[depth]
    per_layer = 6 if bottleneck else 3  # 3 blocks x (2 or 1) convs per layer
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 4 + per_layer or (depth - 4) % per_layer:
        examples = "40, 100, 190, 250" if bottleneck else "40, 100"
        raise ModelConfigError(
            "depth", depth,
            f"is not a CIFAR DenseNet{'-BC' if bottleneck else ''} depth (depth = {per_layer}n+4, n >= 1).",
            f"Use e.g. {examples}.",
        )
    n = (depth - 4) // per_layer
    return (n, n, n)
