"""Inception-v4 and Inception-ResNet-v2 (Szegedy, Ioffe, Vanhoucke & Alemi 2016, "Inception-v4,
Inception-ResNet and the Impact of Residual Connections on Learning"), built from the paper's figures.

Inception-v4 (Fig. 9): stem (Fig. 3) -> 4 x Inception-A -> Reduction-A -> 7 x Inception-B -> Reduction-B
-> 3 x Inception-C -> average pool -> dropout (keep 0.8) -> softmax; 42.7 M parameters, which is what
the reference implementations have (TF-slim's ``inception_v4`` and timm's port of it match the figures).

Inception-ResNet-v2 replaces the Inception modules by residual ones whose branch output is scaled by
0.1-0.3 before the sum (Sec. 3.3). The paper's own description cannot be built as drawn: Fig. 17's
closing 1x1 conv has 1154 channels where its input has 1152, Fig. 19's has 2048 where Reduction-B
(Fig. 18) delivers 2144. The network Google released and every port uses (TF-slim's
``inception_resnet_v2``, the checkpoint behind its 80.4% top-1; Keras' and timm's copies) is another
one again, which the TF-slim maintainers say "was done under the advice of the authors of the paper"
(tensorflow/models#1553). Hence ``layout``:

- ``reference`` (default): TF-slim's network, 55.8 M parameters: the Inception-ResNet-v1-style stem
  plus an Inception module (35x35x320, ``ReferenceStem``), 10 x A (scale 0.17), Reduction-A (k, l, m, n)
  = (256, 256, 384, 384) -> 1088, 20 x B (0.10), Reduction-B (Fig. 18) -> 2080, 10 x C (0.20; the last
  one unscaled and without ReLU), a 1x1 conv to 1536, pool, dropout, FC.
- ``paper``: Fig. 15 with the v2 modules, read literally where it can be: the Fig. 3 stem (384),
  5 x A, Reduction-A -> 1152, 10 x B, Reduction-B -> 2144, 5 x C, pool, dropout, FC; each residual 1x1
  conv restores its input width (1152 and 2144, not 1154 and 2048), the only reading under which the
  sums exist.

``residual_scales`` are the scales of the A, B and C blocks (the paper: "between 0.1 and 0.3"). Neither
network has auxiliary heads: the paper draws none (TF-slim adds one; timm leaves it out).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from models.errors import (
    ModelConfigError,
    require_choice,
    require_io,
    require_min_input_size,
    require_probability,
)
from models.geometry import minimum_input_size
from models.inception_v4_blocks import (
    REDUCTION,
    InceptionA,
    InceptionB,
    InceptionC,
    InceptionResNetA,
    InceptionResNetB,
    InceptionResNetC,
    ReductionA,
    ReductionB,
    ReferenceStem,
    ResidualReductionB,
    Stem,
    conv_bn,
    repeat,
)
from models.init import init_weights
from models.interface import FeaturesClassifierMixin

# Stem, Reduction-A and Reduction-B: every valid window between the input and the 8x8 grid.
WINDOWS = [*Stem.WINDOWS, REDUCTION, REDUCTION]
LAYOUTS = ("reference", "paper")
# Reference scales of the A, B and C blocks (TF-slim's block35, block17, block8).
REFERENCE_SCALES = (0.17, 0.10, 0.20)


class InceptionV4(FeaturesClassifierMixin):
    """Features: the last Inception-C's 8x8x1536 maps (at 299); head: global average pool, dropout, ``fc``."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 299,
        dropout: float = 0.2,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        _check_common(in_channels, num_classes, input_size, dropout, "Inception-v4")
        self.features = nn.Sequential(OrderedDict(
            stem=Stem(in_channels),
            inception_a=repeat(InceptionA, 4),
            reduction_a=ReductionA(384, k=192, l=224, m=256, n=384),
            inception_b=repeat(InceptionB, 7),
            reduction_b=ReductionB(),
            inception_c=repeat(InceptionC, 3),
        ))
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # the paper's 8x8 average pool at 299
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1536, num_classes))
        self.init_scheme = init
        init_weights(self, init)


class InceptionResNetV2(FeaturesClassifierMixin):
    """Features: the 8x8 maps before the global pool (1536 channels in the reference layout, 2144 in
    the paper's); head: global average pool, dropout, ``fc``."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int = 299,
        layout: str = "reference",
        residual_scales: Sequence[float] = REFERENCE_SCALES,
        dropout: float = 0.2,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        _check_common(in_channels, num_classes, input_size, dropout, "Inception-ResNet-v2")
        require_choice("layout", layout, LAYOUTS)
        scale_a, scale_b, scale_c = _require_scales(residual_scales)
        self.layout = layout
        if layout == "reference":
            stem: nn.Module = ReferenceStem(in_channels)
            repeats, channels = (10, 20, 10), 320
        else:
            stem, repeats, channels = Stem(in_channels), (5, 10, 5), 384
        stages: OrderedDict[str, nn.Module] = OrderedDict(stem=stem)
        stages["inception_resnet_a"] = repeat(InceptionResNetA, repeats[0], channels, scale_a)
        stages["reduction_a"] = ReductionA(channels, k=256, l=256, m=384, n=384)
        channels = stages["reduction_a"].out_channels
        stages["inception_resnet_b"] = repeat(InceptionResNetB, repeats[1], channels, scale_b)
        stages["reduction_b"] = ResidualReductionB(channels)
        channels = stages["reduction_b"].out_channels
        if layout == "reference":  # TF-slim: the last block is unscaled and linear, then a 1x1 conv to 1536
            stages["inception_resnet_c"] = repeat(InceptionResNetC, repeats[2], channels, scale_c,
                                                  last=(channels, 1.0, False))
            stages["conv"] = conv_bn(channels, 1536, 1)
            channels = 1536
        else:
            stages["inception_resnet_c"] = repeat(InceptionResNetC, repeats[2], channels, scale_c)
        self.features = nn.Sequential(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        self.init_scheme = init
        init_weights(self, init)


def _check_common(in_channels: int, num_classes: int, input_size: int, dropout: float, name: str) -> None:
    require_io(in_channels, num_classes)
    require_probability("dropout", dropout)
    require_min_input_size(f"{name} (its stem and two grid reductions: seven unpadded 3x3 windows, five "
                           "with stride 2)", input_size, minimum_input_size(WINDOWS), 299)


def _require_scales(scales: object) -> tuple[float, float, float]:
    """Three scale factors in (0, 1], for the A, B and C blocks."""
    values = list(scales) if isinstance(scales, Sequence) and not isinstance(scales, str) else None
    if values is None or len(values) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1 for v in values):
        raise ModelConfigError(
            "residual_scales", scales,
            "must be three numbers in (0, 1]: the scales of the Inception-ResNet-A, -B and -C residuals.",
            "The paper scales by 0.1 to 0.3; the reference network uses model.residual_scales=[0.17,0.1,0.2].",
        )
    return float(values[0]), float(values[1]), float(values[2])
