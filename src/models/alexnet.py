"""AlexNet (Krizhevsky, Sutskever & Hinton 2012) in the paper's two-GPU form and torchvision's one-GPU form.

``layout: paper`` — 227x227 input; conv1 96 11x11/4, conv2 256 5x5, conv3 384, conv4 384, conv5 256
3x3; conv2, conv4 and conv5 see only their own GPU's half of the previous layer, which is a grouped
convolution with 2 groups; local response normalisation after the ReLUs of conv1 and conv2, overlapping
3x3/2 max pools, FC-4096, FC-4096 with dropout 0.5. 60,965,224 parameters at 1000 classes.

``layout: torchvision`` — the one-GPU variant ("One weird trick", Krizhevsky 2014) torchvision ships:
64/192/384/256/256 filters, no LRN, no groups; its state dicts load into this layout.

Paper init (``init: gaussian``): weights N(0, 0.01^2), biases of conv2, conv4, conv5 and the FC layers 1
(to give the ReLUs positive inputs early on), the rest 0.

Dropout (``dropout_placement``): the paper (Sec. 4.2, "We use dropout in the first two fully-connected
layers") drops the outputs of fc6 and fc7: ``FC6, ReLU, Dropout, FC7, ReLU, Dropout, FC8``
(``classifier.0/3/6``, VGG's order). torchvision drops pool5's and fc6's outputs instead: ``Dropout, FC6,
ReLU, Dropout, FC7, ReLU, FC8`` (``classifier.1/4/6``, the keys its state dicts have). Left unset, each
layout takes its own. ``activation`` replaces every ReLU (:mod:`models.activations`).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from models.activations import Activation, make_activation, require_activation
from models.errors import (
    require_choice,
    require_io,
    require_min_input_size,
    require_positive_int,
    require_probability,
)
from models.geometry import Window, feature_size, minimum_input_size
from models.init import init_weights
from models.interface import FeaturesClassifierMixin

LAYOUTS = ("paper", "torchvision")
DropoutPlacement = Literal["paper", "torchvision"]
DROPOUT_PLACEMENTS = ("paper", "torchvision")


def local_response_norm() -> nn.LocalResponseNorm:
    """The paper's LRN: k=2, n=5, alpha=1e-4, beta=0.75. Torch divides alpha by n, so pass n * alpha."""
    return nn.LocalResponseNorm(size=5, alpha=5 * 1e-4, beta=0.75, k=2.0)


def paper_features(in_channels: int, activation: str = "relu") -> tuple[nn.Sequential, list[Window]]:
    layers = nn.Sequential(
        nn.Conv2d(in_channels, 96, kernel_size=11, stride=4),
        make_activation(activation),
        local_response_norm(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2),
        make_activation(activation),
        local_response_norm(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1),
        make_activation(activation),
        nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2),
        make_activation(activation),
        nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2),
        make_activation(activation),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    windows = [(11, 4, 0, False), (3, 2, 0, False), (3, 2, 0, False), (3, 2, 0, False)]
    return layers, windows


def torchvision_features(in_channels: int, activation: str = "relu") -> tuple[nn.Sequential, list[Window]]:
    layers = nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),
        make_activation(activation),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        make_activation(activation),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        make_activation(activation),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        make_activation(activation),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        make_activation(activation),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    windows = [(11, 4, 2, False), (3, 2, 0, False), (3, 2, 0, False), (3, 2, 0, False)]
    return layers, windows


def fc_classifier(in_features: int, fc_size: int, num_classes: int, dropout: float,
                  placement: str = "torchvision", activation: str = "relu") -> nn.Sequential:
    """fc6, fc7, fc8 with dropout where ``placement`` puts it (see the module docstring).

    ``paper``: FC -> ReLU -> Dropout -> FC -> ReLU -> Dropout -> FC (``classifier.0/3/6``);
    ``torchvision``: Dropout -> FC -> ReLU -> Dropout -> FC -> ReLU -> FC (``classifier.1/4/6``).
    """
    fc6, fc7, fc8 = (nn.Linear(in_features, fc_size), nn.Linear(fc_size, fc_size),
                     nn.Linear(fc_size, num_classes))
    if placement == "paper":
        return nn.Sequential(fc6, make_activation(activation), nn.Dropout(dropout),
                             fc7, make_activation(activation), nn.Dropout(dropout), fc8)
    return nn.Sequential(nn.Dropout(dropout), fc6, make_activation(activation),
                         nn.Dropout(dropout), fc7, make_activation(activation), fc8)


class ConvFCNet(FeaturesClassifierMixin):
    """A feature extractor with a known window list followed by an FC classifier sized from ``input_size``.

    Features: the conv stack's output (after the last max pool); head: flatten, fc6, fc7 (the pre-logits
    vector), fc8 (``classifier.6``).
    """

    name = "network"
    native_size = 224

    def _build(self, features: nn.Sequential, windows: list[Window], out_channels: int, in_channels: int,
               num_classes: int, input_size: int, fc_size: int, dropout: float, dropout_placement: str,
               activation: str) -> None:
        require_positive_int("fc_size", fc_size)
        require_probability("dropout", dropout)
        require_choice("dropout_placement", dropout_placement, DROPOUT_PLACEMENTS)
        require_min_input_size(self.name, input_size, minimum_input_size(windows), self.native_size)
        side = feature_size(input_size, windows)
        self.features = features
        self.feature_shape = (out_channels, side, side)
        self.avgpool = nn.Identity()
        self.classifier = fc_classifier(out_channels * side * side, fc_size, num_classes, dropout,
                                        dropout_placement, activation)
        self.dropout_placement, self.activation = dropout_placement, activation


class AlexNet(ConvFCNet):
    name = "AlexNet"
    native_size = 227

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 227,
        layout: str = "paper",
        fc_size: int = 4096,
        activation: Activation = "relu",
        dropout: float = 0.5,
        dropout_placement: DropoutPlacement | None = None,
        init: str = "gaussian",
    ) -> None:
        """``dropout_placement: null`` takes the layout's own: ``paper`` for the paper, ``torchvision`` for
        torchvision's (so its state dicts, ``classifier.1/4/6``, load)."""
        super().__init__()
        require_io(in_channels, num_classes)  # before the layers are made from them
        require_choice("layout", layout, LAYOUTS)
        require_activation(activation)
        features, windows = (paper_features if layout == "paper" else torchvision_features)(in_channels, activation)
        self._build(features, windows, 256, in_channels, num_classes, input_size, fc_size, dropout,
                    layout if dropout_placement is None else dropout_placement, activation)
        self.init_scheme, self.layout = init, layout
        init_weights(self, init, gaussian_std=0.01)
        if self.positive_biases:
            for index in (4, 10, 12):  # conv2, conv4, conv5
                nn.init.ones_(self.features[index].bias)
            for layer in self.classifier:
                if isinstance(layer, nn.Linear):
                    nn.init.ones_(layer.bias)

    @property
    def positive_biases(self) -> bool:
        """The paper starts some biases at 1 (conv2, conv4, conv5 and every FC layer, fc8 included)."""
        return self.init_scheme == "gaussian" and self.layout == "paper"

    def init_classifier(self, layer: nn.Module) -> None:
        super().init_classifier(layer)
        if self.positive_biases:
            nn.init.ones_(layer.bias)
