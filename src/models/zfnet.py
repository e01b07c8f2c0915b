"""ZFNet (Zeiler & Fergus 2014, Fig. 3): AlexNet with a 7x7/2 first layer and no GPU split.

Visualising AlexNet showed aliasing from conv1's 11x11/4 filters and dead filters, so ZFNet uses 96
7x7 filters with stride 2, and a 5x5/2 conv2. The paper's feature-map sizes (224 -> 110 -> 55 -> 26 ->
13 -> 13 -> 13 -> 6) come from padding 1 in conv1 and ceil-mode 3x3/2 pools. Contrast normalisation
follows the first two pools (LRN here). The paper keeps AlexNet's classifier, so dropout follows fc6 and
fc7 (``dropout_placement: paper``); ``torchvision`` gives AlexNet-torchvision's order instead.
"""

from __future__ import annotations

from torch import nn

from models.activations import Activation, make_activation, require_activation
from models.alexnet import ConvFCNet, DropoutPlacement, local_response_norm
from models.errors import require_io
from models.init import init_weights


class ZFNet(ConvFCNet):
    name = "ZFNet"
    native_size = 224

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 224,
        fc_size: int = 4096,
        activation: Activation = "relu",
        dropout: float = 0.5,
        dropout_placement: DropoutPlacement = "paper",
        init: str = "gaussian",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes)  # before the layers are made from them
        require_activation(activation)
        features = nn.Sequential(
            nn.Conv2d(in_channels, 96, kernel_size=7, stride=2, padding=1),
            make_activation(activation),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            local_response_norm(),
            nn.Conv2d(96, 256, kernel_size=5, stride=2),
            make_activation(activation),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            local_response_norm(),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            make_activation(activation),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),
            make_activation(activation),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            make_activation(activation),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
        )
        windows = [(7, 2, 1, False), (3, 2, 0, True), (5, 2, 0, False), (3, 2, 0, True), (3, 2, 0, True)]
        self._build(features, windows, 256, in_channels, num_classes, input_size, fc_size, dropout,
                    dropout_placement, activation)
        self.init_scheme = init
        init_weights(self, init, gaussian_std=0.01)
