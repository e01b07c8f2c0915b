"""LeNet-5 (LeCun et al. 1998): conv6 -> pool -> conv16 -> pool -> fc120 -> fc84 -> fc10.

The classic form takes a 32x32 image (MNIST digits centred in a 32x32 field), uses 5x5 valid
convolutions, 2x2 subsampling and tanh, and has 61,706 parameters at 10 classes. C3 is fully
connected to S2 here (the paper's sparse connection table is a historical memory saving).
``activation: relu`` and ``pool: max`` give the modern variant; ``fc_sizes: [120, 100]`` the
120/100-FC variant.
"""

from collections.abc import Sequence

import torch
from torch import nn

from models.errors import (
    ModelConfigError,
    require_choice,
    require_io,
    require_positive_int,
    require_probability,
)
from models.init import init_weights
from models.interface import FeaturesClassifierMixin, run_classifier

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}
_POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


class LeNet5(FeaturesClassifierMixin):
    """Features: the maps after S4 (the second pool); head: flatten, the FC layers, the output layer."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 32,
        activation: str = "tanh",
        pool: str = "avg",
        conv_channels: Sequence[int] = (6, 16),
        fc_sizes: Sequence[int] = (120, 84),
        dropout: float = 0.0,
        init: str = "xavier",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes, input_size)
        require_choice("activation", activation, _ACTIVATIONS)
        require_choice("pool", pool, _POOLS)
        require_probability("dropout", dropout)
        if len(conv_channels) != 2:
            raise ModelConfigError("conv_channels", list(conv_channels), "must hold two widths, C1's and C3's (LeNet-5 "
                                   "has two convolutional layers; the paper's are 6 and 16).",
                                   "Use e.g. model.conv_channels=[6,16].")
        c1, c3 = (require_positive_int("conv_channels", c) for c in conv_channels)
        # Two rounds of 5x5 valid conv (-4) then 2x2 pooling (/2).
        feature_size = ((input_size - 4) // 2 - 4) // 2
        if input_size < 16 or feature_size < 1:
            raise ModelConfigError(
                "input_size", input_size, "is too small for LeNet-5's two 5x5-conv + 2x2-pool stages.",
                "LeNet-5 needs at least 16x16 pixels (its classic input is 32x32): set data.image_size=32.",
            )
        act, pool_layer = _ACTIVATIONS[activation], _POOLS[pool]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=5),
            act(),
            pool_layer(kernel_size=2, stride=2),
            nn.Conv2d(c1, c3, kernel_size=5),
            act(),
            pool_layer(kernel_size=2, stride=2),
        )
        layers: list[nn.Module] = [nn.Flatten()]
        width = c3 * feature_size * feature_size
        for size in fc_sizes:
            layers += [nn.Linear(width, require_positive_int("fc_sizes", size)), act()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)
        # (C, H, W) of the map entering the classifier: what FC-to-conv conversion needs.
        self.feature_shape = (c3, feature_size, feature_size)
        self.init_scheme = init
        init_weights(self, init)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return run_classifier(self.classifier, features, pre_logits)  # no pooling; it starts with nn.Flatten
