"""ResNet as one configurable family: He et al. 2015 and the variants built on it.

One class, :class:`ResNet`, covers

- ``form: imagenet`` — Table 1 of He et al. 2015: a 7x7/2 stem, a 3x3/2 max pool and four stages of
  basic (18, 34) or bottleneck (50, 101, 152) blocks. ``stride_in_1x1: true`` puts a bottleneck's stride
  on its first 1x1 conv as the paper (v1) does; ``false`` puts it on the 3x3 (v1.5, torchvision's
  choice, ~0.3 G more multiply-adds at 224 but better accuracy). State-dict keys match torchvision.
- ``form: cifar`` — Sec. 4.2: a 3x3 stem with 16 filters and three stages of 2n layers with 16/32/64
  filters (depth = 6n+2; 9n+2 with bottleneck blocks), global average pooling, so any input size works.
- ``form: wide`` — Zagoruyko & Komodakis 2016: the CIFAR layout widened by ``widen_factor``, depth 6n+4,
  pre-activation blocks with projection shortcuts and optional dropout between the two convs.
- ``residual: false`` — the plain twin: the same layers without any shortcut. With ``shortcut: A`` the
  residual network has exactly the plain twin's parameters, which is what makes the comparison fair.
- ``shortcut`` A (identity, zero-padded channels, no parameters), B (1x1 projection only where the
  shape changes) or C (a projection on every block).
- ``groups`` / ``width_per_group`` — ResNeXt's cardinality and bottleneck width (32x4d, ...).
- ``se_reduction`` — squeeze-and-excitation on every residual branch (SE-ResNet-50 uses 16).
- ``stochastic_depth`` — Huang et al. 2016: block l of L is dropped with probability
  ``stochastic_depth * l / L`` during training (linear decay of the survival probability down to
  ``1 - stochastic_depth``); at test time every block is kept, so the network is the plain deterministic one.
- ``activation`` — the nonlinearity after every BN (:mod:`models.activations`; ``relu``, the paper's, by
  default): stem, blocks, the final pre-activation one. Squeeze-and-excitation keeps its own ReLU/sigmoid gate.
- ``zero_init_residual`` — Goyal et al. 2017: the last BN of every residual branch starts at gamma = 0, so
  a deep ResNet starts as a shallow one and trains faster in a short budget; plain twins ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.ops import SqueezeExcitation, StochasticDepth

from models.activations import Activation, make_activation, require_activation
from models.errors import (
    ModelConfigError,
    require_choice,
    require_io,
    require_positive_int,
    require_probability,
)
from models.init import init_weights
from models.interface import ClassifierMixin

FORMS = ("imagenet", "cifar", "wide")
SHORTCUTS = ("A", "B", "C")
BLOCKS = ("auto", "basic", "bottleneck")

# Table 1 of He et al. 2015: depth -> (block, blocks per stage).
IMAGENET_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """Option A: the identity, subsampled by ``stride`` and zero-padded to ``out_channels``; no parameters."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride, self.extra_channels = stride, extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


@dataclass(frozen=True)
class BlockOptions:
    """What every block of one network shares; per-block values (stride, drop rate) are arguments."""

    shortcut: str = "B"
    residual: bool = True
    preactivation: bool = False
    groups: int = 1
    width_per_group: int | None = 64
    widen_factor: int = 1
    stride_in_1x1: bool = False
    se_reduction: int = 0
    block_dropout: float = 0.0
    activation: str = "relu"


def make_shortcut(in_channels: int, out_channels: int, stride: int, options: BlockOptions) -> nn.Module | None:
    """The block's shortcut path, or ``None`` for the identity (and for plain blocks, which have none)."""
    if not options.residual:
        return None
    changes_shape = stride != 1 or in_channels != out_channels
    if options.shortcut == "C" or (options.shortcut == "B" and changes_shape):
        if options.preactivation:  # the pre-activated input is already normalised
            return nn.Sequential(conv1x1(in_channels, out_channels, stride))
        return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    if changes_shape:  # option A
        return PadShortcut(stride, out_channels - in_channels)
    return None


class ResidualBlock(nn.Module):
    """What basic and bottleneck blocks share: shortcut, SE, stochastic depth and the final addition.

    ``downsample`` is torchvision's name for the shortcut module, kept so state dicts load.
    """

    expansion = 1
    last_bn: str = "bn2"

    def _finish_init(self, in_channels: int, out_channels: int, stride: int, options: BlockOptions,
                     drop_prob: float) -> None:
        self.residual = options.residual
        self.preactivation = options.preactivation
        self.downsample = make_shortcut(in_channels, out_channels, stride, options)
        # SE recalibrates the residual branch's channels before the addition (Hu et al., Fig. 3).
        self.se = (SqueezeExcitation(out_channels, max(1, out_channels // options.se_reduction))
                   if options.se_reduction else None)
        self.stochastic_depth = StochasticDepth(drop_prob, "row") if drop_prob > 0 else None
        self.relu = make_activation(options.activation)  # torchvision's name for it, whatever it computes

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut_input = x
        if self.preactivation:
            # He et al. 2016: BN-ReLU before each conv; a projection sees the pre-activated input,
            # an identity shortcut the raw one (the "clean" information path).
            x = self.relu(self.bn1(x))
            if isinstance(self.downsample, nn.Sequential):
                shortcut_input = x
        out = self.branch(x)
        if self.se is not None:
            out = self.se(out)
        if not self.residual:
            return out if self.preactivation else self.relu(out)
        if self.stochastic_depth is not None:
            out = self.stochastic_depth(out)
        out = out + (shortcut_input if self.downsample is None else self.downsample(shortcut_input))
        return out if self.preactivation else self.relu(out)


class BasicBlock(ResidualBlock):
    """Two 3x3 convs (Fig. 2 of He et al.); ``widen_factor`` multiplies both and ``block_dropout``
    sits between them (WRN)."""

    expansion = 1
    last_bn = "bn2"

    def __init__(self, in_channels: int, planes: int, stride: int, options: BlockOptions,
                 drop_prob: float = 0.0) -> None:
        super().__init__()
        width = planes * options.widen_factor
        if options.preactivation:
            self.bn1 = nn.BatchNorm2d(in_channels)
            self.conv1 = conv3x3(in_channels, width, stride)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv2 = conv3x3(width, width)
        else:
            self.conv1 = conv3x3(in_channels, width, stride)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = conv3x3(width, width)
            self.bn2 = nn.BatchNorm2d(width)
        self.dropout = nn.Dropout(options.block_dropout) if options.block_dropout > 0 else nn.Identity()
        self.out_channels = width
        self._finish_init(in_channels, width, stride, options, drop_prob)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.preactivation:
            return self.conv2(self.dropout(self.relu(self.bn2(self.conv1(x)))))
        return self.bn2(self.conv2(self.dropout(self.relu(self.bn1(self.conv1(x))))))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand by 4 (Fig. 5 right of He et al.)."""

    expansion = 4
    last_bn = "bn3"

    def __init__(self, in_channels: int, planes: int, stride: int, options: BlockOptions,
                 drop_prob: float = 0.0) -> None:
        super().__init__()
        width = bottleneck_width(planes, options)
        out_channels = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if options.stride_in_1x1 else (1, stride)
        if options.preactivation:
            self.bn1 = nn.BatchNorm2d(in_channels)
            self.conv1 = conv1x1(in_channels, width, stride_1x1)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv2 = conv3x3(width, width, stride_3x3, options.groups)
            self.bn3 = nn.BatchNorm2d(width)
            self.conv3 = conv1x1(width, out_channels)
        else:
            self.conv1 = conv1x1(in_channels, width, stride_1x1)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = conv3x3(width, width, stride_3x3, options.groups)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = conv1x1(width, out_channels)
            self.bn3 = nn.BatchNorm2d(out_channels)
        self.out_channels = out_channels
        self._finish_init(in_channels, out_channels, stride, options, drop_prob)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        if self.preactivation:
            out = self.conv2(self.relu(self.bn2(self.conv1(x))))
            return self.conv3(self.relu(self.bn3(out)))
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


def bottleneck_width(planes: int, options: BlockOptions) -> int:
    """Channels of the bottleneck's 3x3 conv: ``planes * width_per_group / 64 * groups`` as in ResNeXt.

    ``width_per_group: null`` keeps the plain ResNet width and splits it into ``groups`` groups instead.
    """
    if options.width_per_group is None:
        return planes * options.widen_factor
    return planes * options.widen_factor * options.width_per_group // 64 * options.groups


class ResidualStage(nn.Sequential):
    """Blocks sharing one output size; the first one downsamples by ``stride`` (conv3_1, conv4_1, ...)."""

    def __init__(self, block: type[ResidualBlock], in_channels: int, planes: int, num_blocks: int,
                 stride: int, options: BlockOptions, drop_probs: list[float]) -> None:
        blocks = []
        for index in range(num_blocks):
            blocks.append(block(in_channels, planes, stride if index == 0 else 1, options, drop_probs[index]))
            in_channels = blocks[-1].out_channels
        super().__init__(*blocks)
        self.out_channels = in_channels


class ResNet(ClassifierMixin):
    """A residual network (or its plain twin) in ImageNet, CIFAR or Wide-ResNet form. See the module doc.

    Features: the last stage's output (after the final BN-ReLU for pre-activation nets); head: global
    average pool, dropout, ``fc``.
    """

    classifier_name = "fc"

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: int | None = None,
        form: str = "imagenet",
        depth: int = 50,
        block: str = "auto",
        residual: bool = True,
        shortcut: str = "B",
        preactivation: bool | None = None,
        stride_in_1x1: bool = False,
        groups: int = 1,
        width_per_group: int | None = 64,
        widen_factor: int = 1,
        se_reduction: int = 0,
        stochastic_depth: float = 0.0,
        block_dropout: float = 0.0,
        dropout: float = 0.0,
        activation: Activation = "relu",
        zero_init_residual: bool = False,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        require_io(in_channels, num_classes)
        require_choice("form", form, FORMS)
        require_choice("block", block, BLOCKS)
        require_choice("shortcut", shortcut, SHORTCUTS)
        require_choice("residual", residual, (True, False))
        require_positive_int("groups", groups)
        require_positive_int("widen_factor", widen_factor)
        if width_per_group is not None:
            require_positive_int("width_per_group", width_per_group)
        if se_reduction != 0:
            require_positive_int("se_reduction", se_reduction)
        require_probability("stochastic_depth", stochastic_depth)
        require_probability("block_dropout", block_dropout)
        require_probability("dropout", dropout)
        self.activation = require_activation(activation)
        if preactivation is None:
            preactivation = form == "wide"
        block_name, stage_blocks = resolve_depth(form, depth, block)
        block_cls = BasicBlock if block_name == "basic" else Bottleneck
        widths = IMAGENET_WIDTHS if form == "imagenet" else CIFAR_WIDTHS
        options = BlockOptions(
            shortcut=shortcut, residual=bool(residual), preactivation=bool(preactivation), groups=groups,
            width_per_group=width_per_group, widen_factor=widen_factor, stride_in_1x1=bool(stride_in_1x1),
            se_reduction=se_reduction, block_dropout=block_dropout, activation=activation,
        )
        check_groups(block_name, widths, options)
        if block_dropout > 0 and block_name != "basic":
            raise ModelConfigError("block_dropout", block_dropout, "applies between the two convs of basic blocks "
                                   "(Wide ResNets) only.", "Set block_dropout: 0.0, or use basic blocks.")
        if stochastic_depth > 0 and not residual:
            raise ModelConfigError("stochastic_depth", stochastic_depth, "drops residual branches, and a plain "
                                   "network (residual: false) has none to fall back on.",
                                   "Set stochastic_depth: 0.0 or residual: true.")
        self.total_stride = (4 if form == "imagenet" else 1) * 2 ** (len(widths) - 1)
        if input_size is not None:
            require_positive_int("input_size", input_size)
            if input_size < self.total_stride:
                raise ModelConfigError(
                    "input_size", input_size,
                    f"is too small for the {form} ResNet, which downsamples by {self.total_stride}.",
                    f"Set data.image_size to at least {self.total_stride}"
                    f" (its native input is {224 if form == 'imagenet' else 32}).",
                )
        self.form, self.depth, self.preactivation = form, depth, bool(preactivation)
        self.block_options = options  # what the blocks share (models.torchvision_twins reads it)

        stem_width = widths[0]
        if form == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = conv3x3(in_channels, stem_width)
            self.maxpool = nn.Identity()
        # A pre-activation CIFAR network starts straight with the first block's BN-ReLU.
        pre_cifar = self.preactivation and form != "imagenet"
        self.bn1: nn.Module = nn.Identity() if pre_cifar else nn.BatchNorm2d(stem_width)
        self.relu = make_activation(activation)

        total_blocks = sum(stage_blocks)
        channels, seen = stem_width, 0
        for index, (planes, num_blocks) in enumerate(zip(widths, stage_blocks)):
            drops = [stochastic_depth * (seen + i + 1) / total_blocks for i in range(num_blocks)]
            stage = ResidualStage(block_cls, channels, planes, num_blocks, 1 if index == 0 else 2, options, drops)
            self.add_module(f"layer{index + 1}", stage)
            channels, seen = stage.out_channels, seen + num_blocks
        self.num_stages = len(widths)
        # Pre-activation blocks leave their output un-normalised: one BN-ReLU before pooling. The ReLU is a
        # module of its own (no parameters, no state-dict keys) so the final feature map has a hookable name.
        self.final_bn: nn.Module = nn.BatchNorm2d(channels) if self.preactivation else nn.Identity()
        self.final_relu: nn.Module = make_activation(activation) if self.preactivation else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)

        self.init_scheme = init
        init_weights(self, init)
        if zero_init_residual and residual and not self.preactivation:
            # Goyal et al. 2017: every residual branch starts at zero, so each block starts as its shortcut.
            # A plain twin has no shortcut (zeroing its blocks would cut the signal), so it keeps He init:
            # one study config can then set the option for a sweep over plain and residual nets alike.
            for module in self.modules():
                if isinstance(module, ResidualBlock):
                    nn.init.zeros_(getattr(module, module.last_bn).weight)

    @property
    def stages(self) -> list[ResidualStage]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if not isinstance(self.bn1, nn.Identity):
            x = self.relu(self.bn1(x))
        return self.maxpool(x)

    @property
    def feature_module_name(self) -> str:
        return "final_relu" if self.preactivation else f"layer{self.num_stages}"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.final_relu(self.final_bn(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(features), 1))
        return x if pre_logits else self.fc(x)


def resolve_depth(form: str, depth: object, block: str) -> tuple[str, tuple[int, ...]]:
    """The block type and blocks per stage for ``depth``, or a ModelConfigError listing valid depths."""
    if form == "imagenet":
        if depth not in IMAGENET_DEPTHS:
            valid = ", ".join(str(d) for d in IMAGENET_DEPTHS)
            raise ModelConfigError("depth", depth, f"is not an ImageNet ResNet depth ({valid}).",
                                   f"Use one of: {valid}, or form: cifar for 6n+2 depths.")
        block_name, stages = IMAGENET_DEPTHS[depth]
        if block not in ("auto", block_name):
            raise ModelConfigError("block", block, f"does not match depth {depth}, which uses {block_name} blocks.",
                                   "Leave model.block=auto for the ImageNet form.")
        return block_name, stages
    block_name = "basic" if block == "auto" else block
    layers_per_block = 2 if block_name == "basic" else 3
    offset = 4 if form == "wide" else 2
    per_stage = layers_per_block * 3
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < per_stage + offset \
            or (depth - offset) % per_stage:
        rule = f"{per_stage}n+{offset}"
        examples = ", ".join(str(per_stage * n + offset) for n in (1, 3, 5, 9, 18))
        raise ModelConfigError(
            "depth", depth, f"is not a valid {form} ResNet depth with {block_name} blocks (depth = {rule}, n >= 1).",
            f"Use e.g. one of: {examples}.",
        )
    n = (depth - offset) // per_stage
    return block_name, (n, n, n)


def check_groups(block_name: str, widths: tuple[int, ...], options: BlockOptions) -> None:
    """ResNeXt's grouped 3x3 needs bottleneck blocks and a width that the cardinality divides."""
    if options.groups == 1 and options.width_per_group in (None, 64):
        return
    if block_name != "bottleneck":
        raise ModelConfigError(
            "groups", options.groups, "and width_per_group apply to bottleneck blocks only (ResNeXt).",
            "Use a bottleneck depth (50, 101, 152) or block: bottleneck, or set groups: 1, width_per_group: 64.",
        )
    for planes in widths:
        if options.width_per_group is None:
            width = planes * options.widen_factor
            if width % options.groups:
                raise ModelConfigError(
                    "groups", options.groups, f"(the cardinality) does not divide the bottleneck width {width}.",
                    f"Choose groups among the divisors of {width}, or set width_per_group.",
                )
        elif (planes * options.widen_factor * options.width_per_group) % 64:
            raise ModelConfigError(
                "width_per_group", options.width_per_group,
                f"gives a fractional bottleneck width for a stage of {planes} planes.",
                f"Choose width_per_group so that {planes} * width_per_group is a multiple of 64.",
            )
