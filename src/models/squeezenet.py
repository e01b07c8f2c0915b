"""SqueezeNet (Iandola et al. 2016): AlexNet accuracy with 50x fewer parameters, from Fire modules.

A Fire module squeezes with 1x1 convs, then expands with parallel 1x1 and 3x3 convs whose outputs are
concatenated; 3x3 filters are few and see few channels. There is no FC layer: a 1x1 conv to the classes
and a global average pool end the network. Version 1.0 is the paper's Table 1 (1,248,424 parameters at
1000 classes); 1.1 starts with 64 3x3/2 filters and pools earlier for 2.4x less computation. Module
indices match torchvision's ``squeezenet1_0/1_1``, so their state dicts load.
"""

from __future__ import annotations

import torch
from torch import nn

from models.errors import require_choice, require_io, require_min_input_size, require_probability
from models.geometry import Window, minimum_input_size
from models.init import init_weights
from models.interface import ClassifierMixin

VERSIONS = ("1.0", "1.1")


class Fire(nn.Module):
    def __init__(self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)
        self.out_channels = expand1x1 + expand3x3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


def pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)


def features_1_0(in_channels: int) -> tuple[nn.Sequential, list[Window]]:
    layers = nn.Sequential(
        nn.Conv2d(in_channels, 96, kernel_size=7, stride=2), nn.ReLU(inplace=True), pool(),
        Fire(96, 16, 64, 64), Fire(128, 16, 64, 64), Fire(128, 32, 128, 128), pool(),
        Fire(256, 32, 128, 128), Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), pool(),
        Fire(512, 64, 256, 256),
    )
    return layers, [(7, 2, 0, False), (3, 2, 0, True), (3, 2, 0, True), (3, 2, 0, True)]


def features_1_1(in_channels: int) -> tuple[nn.Sequential, list[Window]]:
    layers = nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=3, stride=2), nn.ReLU(inplace=True), pool(),
        Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), pool(),
        Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(),
        Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
    )
    return layers, [(3, 2, 0, False), (3, 2, 0, True), (3, 2, 0, True), (3, 2, 0, True)]


def init_final_conv(conv: nn.Conv2d) -> None:
    """The paper's final conv starts small (N(0, 0.01^2)) so early logits are near uniform."""
    nn.init.normal_(conv.weight, mean=0.0, std=0.01)


class SqueezeNet(ClassifierMixin):
    """Features: the last Fire module's maps. Head: dropout, the final 1x1 conv (``classifier.1``, the
    classifier layer), ReLU, global average pool.

    The classifier runs at every position of the map before the pooling, so there is no single vector
    entering it: the pre-logits vector is its input map averaged over positions, ``(N, 512)`` (the
    representation a linear probe or t-SNE uses; the logits are not a linear function of it, because
    of the ReLU between the conv and the pool).
    """

    classifier_name = "classifier.1"

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 224,
        version: str = "1.0",
        dropout: float = 0.5,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes)
        version = str(version)
        require_choice("version", version, VERSIONS)
        require_probability("dropout", dropout)
        self.features, windows = (features_1_0 if version == "1.0" else features_1_1)(in_channels)
        require_min_input_size(f"SqueezeNet {version}", input_size, minimum_input_size(windows), 224)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Conv2d(512, num_classes, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.init_scheme = init
        init_weights(self, init)
        if init != "default":
            init_final_conv(self.classifier[1])

    def init_classifier(self, layer: nn.Module) -> None:
        super().init_classifier(layer)
        if self.init_scheme != "default":
            init_final_conv(layer)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        dropout, conv, relu, pool = self.classifier
        x = dropout(features)
        return torch.flatten(pool(x) if pre_logits else pool(relu(conv(x))), 1)
