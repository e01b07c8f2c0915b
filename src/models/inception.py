"""Inception v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture"), via torchvision.

torchvision's ``Inception3`` already is the paper's network: 5x5 convs factorised into two 3x3 (Fig. 5),
n x n into 1 x n + n x 1 on the 17x17 grid (Fig. 6, n = 7), expanded filter banks on the 8x8 grid
(Fig. 7), grid reduction by parallel stride-2 conv and pool branches, BN everywhere and one auxiliary
classifier on the 17x17 grid. This class adds the project's contract around it: ``in_channels`` other
than 3, the ``input_size`` check, ``(main, aux)`` as a plain tuple in training mode, and the paper's
"BN-auxiliary" variant, whose auxiliary FC output is batch-normalised too.

Label smoothing (Sec. 7) is a property of the loss, not of the network: set it on the training loss.
State dicts of torchvision's ``inception_v3`` load with ``aux_batch_norm: false`` and 3 input channels.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.inception import BasicConv2d, Inception3

from models.errors import ModelConfigError, require_io, require_probability
from models.geometry import Window, minimum_input_size
from models.init import init_weights
from models.interface import ClassifierMixin

# Stem and grid reductions up to the 17x17 grid (where the auxiliary head sits), then to 8x8.
TO_GRID_17: list[Window] = [(3, 2, 0, False), (3, 1, 0, False), (3, 2, 0, False), (3, 1, 0, False),
                            (3, 2, 0, False), (3, 2, 0, False)]
TO_GRID_8: list[Window] = [*TO_GRID_17, (3, 2, 0, False)]
# The auxiliary head pools 5x5/3 and then applies a 5x5 valid conv.
TO_AUX: list[Window] = [*TO_GRID_17, (5, 3, 0, False), (5, 1, 0, False)]
# torchvision's modules in forward order, before and after the auxiliary head's branch point.
BEFORE_AUX = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
              "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
              "Mixed_6e")
AFTER_AUX = ("Mixed_7a", "Mixed_7b", "Mixed_7c")


class InceptionV3(ClassifierMixin, Inception3):
    """Features: ``Mixed_7c``'s 8x8 maps (at 299); head: global average pool, dropout, ``fc``.

    ``reset_classifier`` also replaces the auxiliary head's last layer (``AuxLogits.fc``, with its
    BatchNorm in the BN-auxiliary variant). A reset layer is initialised by the ``init`` scheme, so with
    ``init: default`` it gets PyTorch's default initialisation rather than torchvision's truncated normal.
    """

    classifier_name = "fc"
    feature_module_name = "Mixed_7c"

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 299,
        aux_logits: bool = True,
        aux_batch_norm: bool = False,
        dropout: float = 0.5,
        init: str = "default",
        transform_input: bool = False,
    ) -> None:
        """``transform_input``: re-scale ImageNet-normalised inputs to the (x - 0.5) / 0.5 range that
        Google's Inception v3 weights were trained on, as torchvision's ``inception_v3(weights=...)`` does;
        only for those weights (a network trained here learns on the data's own normalisation)."""
        require_io(in_channels, num_classes, input_size)
        require_probability("dropout", dropout)
        minimum = minimum_input_size(TO_AUX if aux_logits else TO_GRID_8)
        if input_size < minimum:
            why = "its auxiliary head needs a 17x17 grid" if aux_logits else "its stem and grid reductions"
            raise ModelConfigError(
                "input_size", input_size, f"is too small for Inception v3 ({why}).",
                f"Set data.image_size to at least {minimum} (the paper's input is 299x299)"
                + (", or aux_logits: false." if aux_logits else "."),
            )
        if transform_input and in_channels != 3:
            raise ModelConfigError("transform_input", transform_input, "re-scales ImageNet's 3 RGB channels only.",
                                   "Set model.transform_input=false for other inputs.")
        super().__init__(num_classes=num_classes, aux_logits=aux_logits, transform_input=transform_input,
                         init_weights=init == "default", dropout=dropout)
        if in_channels != 3:
            self.Conv2d_1a_3x3 = BasicConv2d(in_channels, 32, kernel_size=3, stride=2)
        if aux_logits and aux_batch_norm:
            self.AuxLogits.fc = nn.Sequential(OrderedDict(
                linear=nn.Linear(768, num_classes, bias=False), bn=nn.BatchNorm1d(num_classes),
            ))
        self.init_scheme = init
        if init != "default":
            init_weights(self, init)

    @property
    def aux_classifier_names(self) -> tuple[str, ...]:
        return ("AuxLogits.fc",) if self.AuxLogits is not None else ()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_features(x, with_aux=False)[0]

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.dropout(self.avgpool(features)), 1)  # torchvision's order
        return x if pre_logits else self.fc(x)

    def _forward_features(self, x: torch.Tensor, with_aux: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The feature map, and the auxiliary logits on the 17x17 grid when ``with_aux``.

        ``transform_input`` (torchvision's ``_transform_input``) re-scales the channels first: it is part
        of the network's function, so ``forward_features`` and every tool that starts from it see it too.
        """
        x = self._transform_input(x)
        for name in BEFORE_AUX:
            x = getattr(self, name)(x)
        aux = self.AuxLogits(x) if with_aux else None
        for name in AFTER_AUX:
            x = getattr(self, name)(x)
        return x, aux

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """torchvision's ``(logits, aux)`` step, rebuilt from the interface's two halves."""
        features, aux = self._forward_features(x, with_aux=self.AuxLogits is not None and self.training)
        return self.forward_head(features), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The logits; in training mode with the auxiliary head, ``(main, aux)`` as a plain tuple."""
        logits, aux = self._forward(x)
        if self.training and self.aux_logits:
            return logits, aux
        return logits
