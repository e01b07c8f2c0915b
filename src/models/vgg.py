"""VGG (Simonyan & Zisserman 2015): configurations A, A-LRN, B, C, D, E of the paper's Table 1.

Stacks of 3x3 convs (C adds 1x1 convs to the last three stages) separated by 2x2 max pools, then
FC-4096, FC-4096, FC-classes with dropout 0.5. The first FC layer is sized from ``input_size``
(512 x (input/32)^2 inputs) rather than by torchvision's adaptive 7x7 pooling, so a 32x32 CIFAR image
gives a 512-input FC instead of 49 copies of one pixel; at 224 the two are identical and the keys
(``features.N``, ``classifier.0/3/6``) match torchvision, so its state dicts load. ``activation``
replaces every ReLU (:mod:`models.activations`); the default ``relu`` is the paper's and torchvision's.
"""

from __future__ import annotations

from torch import nn

from models.activations import Activation, make_activation, require_activation
from models.errors import (
    require_choice,
    require_io,
    require_min_input_size,
    require_positive_int,
    require_probability,
)
from models.init import init_weights
from models.interface import FeaturesClassifierMixin

# Table 1: numbers are 3x3 conv widths, "1x<n>" a 1x1 conv, "M" a max pool, "LRN" local response norm.
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, "1x256", "M", 512, 512, "1x512", "M", 512, 512, "1x512", "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}
# The depths people use as names: VGG-11 is A, VGG-16 is D, VGG-19 is E.
DEPTH_ALIASES = {"11": "A", "13": "B", "16": "D", "19": "E"}


def make_features(spec: list[int | str], in_channels: int, batch_norm: bool, activation: str = "relu"
                  ) -> nn.Sequential:
    layers: list[nn.Module] = []
    for item in spec:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif item == "LRN":
            # Krizhevsky et al.'s parameters (size 5, k=2, alpha=1e-4 per element, beta=0.75).
            layers.append(nn.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2.0))
        else:
            kernel = 1 if isinstance(item, str) else 3
            width = int(str(item).removeprefix("1x"))
            layers.append(nn.Conv2d(in_channels, width, kernel_size=kernel, padding=kernel // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(make_activation(activation))
            in_channels = width
    return nn.Sequential(*layers)


class VGG(FeaturesClassifierMixin):
    """Features: the conv stack's output (after the last max pool); head: fc6, fc7 (the pre-logits), fc8."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 224,
        config: str = "D",
        batch_norm: bool = False,
        fc_size: int = 4096,
        activation: Activation = "relu",
        dropout: float = 0.5,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes)
        require_positive_int("fc_size", fc_size)
        require_probability("dropout", dropout)
        self.activation = require_activation(activation)
        config = DEPTH_ALIASES.get(str(config), str(config))
        require_choice("config", config, CONFIGS)
        require_min_input_size(f"VGG-{config} (five 2x2 max pools)", input_size, 32, 224)
        self.config = config
        self.features = make_features(CONFIGS[config], in_channels, batch_norm, activation)
        side = input_size // 32
        self.feature_shape = (512, side, side)
        self.avgpool = nn.Identity()  # torchvision's AdaptiveAvgPool2d(7) is the identity at 224
        self.classifier = nn.Sequential(
            nn.Linear(512 * side * side, fc_size),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(fc_size, fc_size),
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(fc_size, num_classes),
        )
        self.init_scheme = init
        init_weights(self, init)
