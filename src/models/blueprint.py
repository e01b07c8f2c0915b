"""The cs231n blueprint: ``INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC``.

One class spans the whole design space the lectures sweep: ``stage_widths`` gives M (one width per
stage), ``convs_per_stage`` N, ``fc_sizes`` K. ``N = M = K = 0`` is a linear classifier on the pixels.
Convolutions are "same"-padded (odd kernels only), so only the 2x2 pools shrink the image, and the first
FC layer is sized from ``input_size``. ``activation`` swaps every RELU for another nonlinearity
(:mod:`models.activations`: leaky_relu, elu, tanh, sigmoid).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.activations import Activation, make_activation, require_activation
from models.errors import (
    ModelConfigError,
    require_choice,
    require_io,
    require_positive_int,
    require_probability,
)
from models.init import init_weights
from models.interface import FeaturesClassifierMixin, run_classifier

POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def _require_count(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ModelConfigError(key, value, "must be a non-negative integer.", f"Set model.{key} to e.g. 2.")
    return value


def _require_sizes(key: str, values: object) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ModelConfigError(key, values, "must be a list of positive integers.", f"Set model.{key}=[64, 128].")
    return [require_positive_int(key, v) for v in values]


class ConvStage(nn.Sequential):
    """``[CONV -> (BN) -> RELU] * N -> POOL?``: one resolution of the blueprint (RELU: ``activation``)."""

    def __init__(self, in_channels: int, width: int, num_convs: int, kernel_size: int, batch_norm: bool,
                 pool: str | None, activation: str = "relu") -> None:
        layers: list[nn.Module] = []
        for _ in range(num_convs):
            layers.append(nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(make_activation(activation))
            in_channels = width
        if pool is not None:
            layers.append(POOLS[pool](kernel_size=2, stride=2))
        super().__init__(*layers)
        self.out_channels = in_channels


class Blueprint(FeaturesClassifierMixin):
    """Features: the last conv stage's output; with no conv stage (M = 0, the linear classifier) there is
    no learned map and ``forward_features`` returns the input image itself, the tensor the head flattens.
    Head: flatten, the K FC layers (the last one's output is the pre-logits vector), the output layer.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        input_size: int = 32,
        convs_per_stage: int = 1,
        stage_widths: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        pool: str | None = "max",
        fc_sizes: Sequence[int] = (128,),
        batch_norm: bool = False,
        activation: Activation = "relu",
        dropout: float = 0.0,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes, input_size)
        _require_count("convs_per_stage", convs_per_stage)
        widths = _require_sizes("stage_widths", stage_widths)
        fcs = _require_sizes("fc_sizes", fc_sizes)
        require_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ModelConfigError("kernel_size", kernel_size, "must be odd so that 'same' padding keeps the size.",
                                   "Use 1, 3, 5 or 7.")
        if pool is not None:
            require_choice("pool", pool, POOLS)
        require_probability("dropout", dropout)
        self.activation = require_activation(activation)
        if pool is not None and input_size < 2 ** len(widths):
            raise ModelConfigError(
                "input_size", input_size, f"is too small for {len(widths)} stages of 2x2 pooling.",
                f"Set data.image_size to at least {2 ** len(widths)}, or use fewer stages or pool: null.",
            )

        stages, channels, side = [], in_channels, input_size
        for width in widths:
            stages.append(ConvStage(channels, width, convs_per_stage, kernel_size, batch_norm, pool, activation))
            channels = stages[-1].out_channels
            side = side // 2 if pool is not None else side
        self.features = nn.Sequential(*stages)

        head: list[nn.Module] = [nn.Flatten()]
        features = channels * side * side
        for size in fcs:
            head += [nn.Linear(features, size), make_activation(activation)]
            if dropout > 0:
                head.append(nn.Dropout(dropout))
            features = size
        head.append(nn.Linear(features, num_classes))
        self.classifier = nn.Sequential(*head)
        self.init_scheme = init
        init_weights(self, init)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return run_classifier(self.classifier, features, pre_logits)  # no pooling; it starts with nn.Flatten
