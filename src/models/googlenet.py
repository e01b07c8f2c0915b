"""GoogLeNet / Inception v1 (Szegedy et al. 2015), built from the paper's Table 1.

Each inception module runs four branches in parallel and concatenates them: 1x1; 1x1 reduce -> 3x3;
1x1 reduce -> 5x5 (a real 5x5 here, unlike torchvision's 3x3); 3x3 max pool -> 1x1 projection. The 1x1
reductions are the point of the design: the 5x5 branch of inception (3a) on a 28x28x192 input costs
120,422,400 multiply-adds without its 16-channel reduction and 12,443,648 with it.
``inception: naive`` builds the module without reductions or pool projection (Fig. 2a) for comparison;
its outputs then grow by the input width at every module.

Two auxiliary classifiers (after 4a and 4d: 5x5/3 average pool, 1x1 conv 128, FC 1024, dropout 0.7, FC)
inject gradient into the middle of the network during training only: in training mode the forward pass
returns ``(main, aux1, aux2)``, in eval mode just the main logits. The main head is a global average
pool, dropout 40% and one linear layer.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from models.errors import require_choice, require_io, require_min_input_size, require_probability
from models.geometry import Window, feature_size, minimum_input_size
from models.init import init_weights
from models.interface import ClassifierMixin

INCEPTION_KINDS = ("reduced", "naive")


class InceptionSpec(NamedTuple):
    """One row of Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj."""

    c1: int
    c3_reduce: int
    c3: int
    c5_reduce: int
    c5: int
    pool_proj: int


TABLE_1: dict[str, InceptionSpec] = {
    "3a": InceptionSpec(64, 96, 128, 16, 32, 32),
    "3b": InceptionSpec(128, 128, 192, 32, 96, 64),
    "4a": InceptionSpec(192, 96, 208, 16, 48, 64),
    "4b": InceptionSpec(160, 112, 224, 24, 64, 64),
    "4c": InceptionSpec(128, 128, 256, 24, 64, 64),
    "4d": InceptionSpec(112, 144, 288, 32, 64, 64),
    "4e": InceptionSpec(256, 160, 320, 32, 128, 128),
    "5a": InceptionSpec(256, 160, 320, 32, 128, 128),
    "5b": InceptionSpec(384, 192, 384, 48, 128, 128),
}
# Spatial windows of the stem and the max pools between stages (the modules keep the size).
STEM_WINDOWS: list[Window] = [(7, 2, 3, False), (3, 2, 0, True), (3, 2, 0, True)]
TO_STAGE4: list[Window] = [*STEM_WINDOWS, (3, 2, 0, True)]
ALL_WINDOWS: list[Window] = [*TO_STAGE4, (3, 2, 0, True)]


def conv_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
              batch_norm: bool = False) -> Conv2dNormActivation:
    """Conv -> (BN) -> ReLU, "same" padded; conv bias only without BN."""
    return Conv2dNormActivation(
        in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
        norm_layer=nn.BatchNorm2d if batch_norm else None, activation_layer=nn.ReLU,
    )


class Inception(nn.Module):
    """Four parallel branches concatenated along channels (Fig. 2b; Fig. 2a when ``naive``)."""

    def __init__(self, in_channels: int, spec: InceptionSpec, naive: bool = False, batch_norm: bool = False) -> None:
        super().__init__()
        self.branch1 = conv_relu(in_channels, spec.c1, 1, batch_norm=batch_norm)
        if naive:
            self.branch2: nn.Module = conv_relu(in_channels, spec.c3, 3, batch_norm=batch_norm)
            self.branch3: nn.Module = conv_relu(in_channels, spec.c5, 5, batch_norm=batch_norm)
            self.branch4: nn.Module = nn.MaxPool2d(3, stride=1, padding=1)
            self.out_channels = spec.c1 + spec.c3 + spec.c5 + in_channels
        else:
            self.branch2 = nn.Sequential(conv_relu(in_channels, spec.c3_reduce, 1, batch_norm=batch_norm),
                                         conv_relu(spec.c3_reduce, spec.c3, 3, batch_norm=batch_norm))
            self.branch3 = nn.Sequential(conv_relu(in_channels, spec.c5_reduce, 1, batch_norm=batch_norm),
                                         conv_relu(spec.c5_reduce, spec.c5, 5, batch_norm=batch_norm))
            self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                         conv_relu(in_channels, spec.pool_proj, 1, batch_norm=batch_norm))
            self.out_channels = spec.c1 + spec.c3 + spec.c5 + spec.pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class AuxClassifier(nn.Module):
    """5x5/3 average pool -> 1x1 conv 128 -> FC 1024 -> dropout 0.7 -> FC (Sec. 5 of the paper).

    On a map smaller than 5x5 (small inputs) the pool falls back to a global average.
    """

    def __init__(self, in_channels: int, num_classes: int, map_side: int, dropout: float = 0.7,
                 batch_norm: bool = False) -> None:
        super().__init__()
        if map_side >= 5:
            self.avgpool: nn.Module = nn.AvgPool2d(5, stride=3)
            side = (map_side - 5) // 3 + 1
        else:
            self.avgpool, side = nn.AdaptiveAvgPool2d(1), 1
        self.conv = conv_relu(in_channels, 128, 1, batch_norm=batch_norm)
        self.fc1 = nn.Linear(128 * side * side, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.avgpool(x)), 1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class GoogLeNet(ClassifierMixin):
    """Features: inception (5b)'s output; head: global average pool, dropout, ``fc``.

    ``reset_classifier`` also replaces the auxiliary heads' last layers (``aux1.fc2``, ``aux2.fc2``).
    """

    classifier_name = "fc"
    feature_module_name = "inception5b"

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 224,
        inception: str = "reduced",
        aux_logits: bool = True,
        batch_norm: bool = False,
        lrn: bool = True,
        dropout: float = 0.4,
        aux_dropout: float = 0.7,
        init: str = "xavier",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes)
        require_choice("inception", inception, INCEPTION_KINDS)
        require_probability("dropout", dropout)
        require_probability("aux_dropout", aux_dropout)
        require_min_input_size("GoogLeNet (a 7x7/2 conv and four 3x3/2 max pools)", input_size,
                               minimum_input_size(ALL_WINDOWS), 224)
        naive = inception == "naive"
        self.aux_logits = bool(aux_logits)

        def norm() -> nn.Module:
            return nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0) if lrn else nn.Identity()

        self.conv1 = conv_relu(in_channels, 64, 7, stride=2, batch_norm=batch_norm)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = norm()
        self.conv2 = conv_relu(64, 64, 1, batch_norm=batch_norm)
        self.conv3 = conv_relu(64, 192, 3, batch_norm=batch_norm)
        self.lrn2 = norm()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        channels = 192
        for name in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
            module = Inception(channels, TABLE_1[name], naive=naive, batch_norm=batch_norm)
            self.add_module(f"inception{name}", module)
            channels = module.out_channels
            if name == "3b":
                self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            if name == "4e":
                self.maxpool4 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        if self.aux_logits:
            side = feature_size(input_size, TO_STAGE4)
            self.aux1 = AuxClassifier(self.inception4a.out_channels, num_classes, side, aux_dropout, batch_norm)
            self.aux2 = AuxClassifier(self.inception4d.out_channels, num_classes, side, aux_dropout, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # the paper's 7x7/1 average pool at 224
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self.init_scheme = init
        init_weights(self, init)

    @property
    def aux_classifier_names(self) -> tuple[str, ...]:
        return ("aux1.fc2", "aux2.fc2") if self.aux_logits else ()

    def _features_and_aux(self, x: torch.Tensor, with_aux: bool
                          ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The feature map, and the auxiliary logits (after 4a and 4d) when ``with_aux``."""
        x = self.maxpool2(self.lrn2(self.conv3(self.conv2(self.lrn1(self.maxpool1(self.conv1(x)))))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        return self.inception5b(self.inception5a(x)), aux1, aux2

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features_and_aux(x, with_aux=False)[0]

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(features), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The logits; in training mode with auxiliary heads, ``(main, aux1, aux2)``."""
        use_aux = self.aux_logits and self.training
        features, aux1, aux2 = self._features_and_aux(x, with_aux=use_aux)
        logits = self.forward_head(features)
        if use_aux:
            return logits, aux1, aux2
        return logits
