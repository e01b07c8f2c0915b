"""What every analysis shares: the trained run, where its files go, and a model held safely in eval mode.

An analysis is a function ``run(ctx: AnalysisContext, **settings) -> dict`` named by the ``_target_``
of its config in ``conf/analysis/``; it writes its pictures through ``ctx.save_figure``/``ctx.save_image``
(``<run>/analysis/<name>/*.png`` and the run's TensorBoard/W&B) and returns the figures that go into
``<run>/analysis/<name>.json``. The computations themselves are plain functions of a model and tensors,
so tests can call them on hand-built models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import torch
from annotated_types import Ge, Gt
from torch import nn

from experiments.core.errors import UserError

# Ranges of analysis settings, in the signatures (experiments.training.schema checks them before a run).
Count = Annotated[int, Ge(1)]               # a number of images, steps, channels, ...
NonNegativeInt = Annotated[int, Ge(0)]
NonNegative = Annotated[float, Ge(0)]
Positive = Annotated[float, Gt(0)]

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from experiments.evaluation.trained import TrainedRun

POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.MaxPool2d)
# Modules that only resample or pass maps on: never the default layer to look at.
PASS_THROUGH = (*POOLS, nn.Dropout, nn.Dropout2d, nn.Identity)


@contextmanager
def analysis_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen weights for the block; every submodule's mode and every flag restored after.

    Gradient methods need autograd through the model but must neither update BN statistics nor leave
    gradients on the weights; a Lightning module handed back must be in the mode it came in.
    """
    modes = {module: module.training for module in model.modules()}
    flags = {param: param.requires_grad for param in model.parameters()}
    model.eval()
    for param in flags:
        param.requires_grad_(False)
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training
        for param, flag in flags.items():
            param.requires_grad_(flag)


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Main logits (GoogLeNet/Inception return auxiliary outputs too when training)."""
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


class Logits(nn.Module):
    """A model whose forward returns only the main logits, for libraries that expect a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model, x)


def collect_in_batches(model: nn.Module, layer: nn.Module, images: torch.Tensor,
                       read: Callable[[torch.Tensor], Any], on_input: bool = False,
                       batch_size: int = 256) -> list[Any]:
    """Run ``images`` through the frozen model in batches and keep ``read(tensor)`` for each batch, where
    the tensor is what ``layer`` outputs (or, with ``on_input``, what it receives)."""
    kept: list[Any] = []
    if on_input:
        handle = layer.register_forward_pre_hook(lambda module, inputs: kept.append(read(inputs[0].detach())))
    else:
        handle = layer.register_forward_hook(lambda module, inputs, output: kept.append(read(output.detach())))
    try:
        with analysis_mode(model), torch.no_grad():
            for start in range(0, len(images), batch_size):
                Logits(model)(images[start:start + batch_size])
    finally:
        handle.remove()
    return kept


def find_layer(model: nn.Module, name: str, key: str) -> nn.Module:
    """The submodule called ``name``; a wrong name is a user error listing the names there are."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    top = [n for n, _ in model.named_children()]
    raise UserError(key, name, "is not a layer of this model.",
                    f"Use a dotted module name, e.g. one of: {', '.join(top)} (or deeper, such as {top[0]}.0).")


def executed_modules(model: nn.Module, x: torch.Tensor, leaves_only: bool = True
                     ) -> list[tuple[str, nn.Module, Any, Any, int]]:
    """(name, module, input, output, call count) of every module an eval forward pass runs, in the order
    the calls finish (a container after its children)."""
    from callbacks.probe import hooks

    chosen = {n: m for n, m in model.named_modules()
              if n and (not leaves_only or not any(True for _ in m.children()))}
    calls: list[tuple[str, nn.Module, Any, Any]] = []

    def record(name: str, module: nn.Module, inputs: tuple, output: Any) -> None:
        calls.append((name, module, inputs[0] if inputs else None, output))

    with analysis_mode(model), torch.no_grad(), hooks(chosen, record):
        logits_of(model, x[:1])
    counts: dict[str, int] = {}
    for name, *_ in calls:
        counts[name] = counts.get(name, 0) + 1
    return [(n, m, i, o, counts[n]) for n, m, i, o in calls]


def executed_leaves(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, Any, Any, int]]:
    return executed_modules(model, x, leaves_only=True)


def head_layer(model: nn.Module, x: torch.Tensor) -> tuple[str, nn.Module]:
    """The layer that produces the logits: the model's final classifier layer (the model interface,
    :func:`models.interface.classifier_module`); for a model from outside the zoo without the interface,
    the last conv/linear layer an eval forward pass runs."""
    from models.interface import classifier_module

    declared = classifier_module(model)
    if declared is not None:
        return declared
    weighted = [(n, m) for n, m, *_ in executed_leaves(model, x) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not weighted:
        raise UserError("model", type(model).__name__, "has no linear or conv layer to analyse.",
                        "Analyse a run of a CNN from conf/model.")
    return weighted[-1]


def feature_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The default layer for CAMs and unit visualisations: the last spatial feature map.

    A zoo model names it (:func:`models.interface.feature_module`: the module whose output is
    ``forward_features``). A model from outside the zoo is traced: the module whose output feeds the
    global average pooling when there is one (what CAM needs); of the modules returning that very
    tensor, the outermost (a ResNet block rather than its last ReLU, which the block calls twice);
    otherwise the last module, run once, whose output is still larger than 1x1.
    """
    from models.interface import feature_module

    declared = feature_module(model)
    if declared is not None:
        return declared[0]
    calls = executed_modules(model, x, leaves_only=False)
    head_name, _ = head_layer(model, x)
    head_at = max(i for i, c in enumerate(calls) if c[0] == head_name)
    for position, (_, module, inputs, _, _) in enumerate(calls):
        if isinstance(module, POOLS) and isinstance(inputs, torch.Tensor) and _is_global(module, inputs):
            # A module run more than once (ResNet's shared stem ReLU) cannot be hooked unambiguously:
            # step back to what fed it (for ResNet's final ReLU, an idempotent one, the same maps).
            wanted, end = inputs, position
            while True:
                found = next((i for i in range(end - 1, -1, -1) if calls[i][3] is wanted), None)
                if found is None or calls[found][4] == 1:
                    break
                wanted, end = calls[found][2], found
            if found is not None and found < head_at:  # SqueezeNet pools its class maps: not features
                return calls[found][0]
    spatial = [c for c in calls[:head_at] if isinstance(c[3], torch.Tensor) and c[3].ndim == 4
               and c[3].shape[-1] > 1 and c[4] == 1 and not isinstance(c[1], PASS_THROUGH)]
    if not spatial:
        raise UserError("layer", None, "could not be chosen: no layer of this model outputs a spatial map.",
                        "Set the analysis's layer=<module name> explicitly.")
    return spatial[-1][0]


def _is_global(pool: nn.Module, inputs: torch.Tensor) -> bool:
    if isinstance(pool, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        size = pool.output_size
        return size in (1, (1, 1))
    kernel = pool.kernel_size if isinstance(pool.kernel_size, tuple) else (pool.kernel_size,) * 2
    return tuple(kernel) == tuple(inputs.shape[-2:])


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) maps to (N, H, W), bilinear."""
    return torch.nn.functional.interpolate(maps.unsqueeze(1).float(), size=size, mode="bilinear",
                                           align_corners=False).squeeze(1)


def heat_overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """A (C, H, W) image in [0, 1] with a (H, W) map blended on top in the jet colour map."""
    from matplotlib import colormaps

    from callbacks.plotting import normalise_each

    heat = normalise_each(heat.unsqueeze(0))[0]
    colours = torch.from_numpy(colormaps["jet"](heat.cpu().numpy())[..., :3]).permute(2, 0, 1).float()
    base = image.detach().float().cpu()
    base = base.expand(3, -1, -1) if base.shape[0] == 1 else base[:3]
    return (1 - alpha) * base + alpha * colours


def to_display(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> an array matplotlib's imshow draws (grey images as grey)."""
    array = image.detach().float().cpu().clamp(0, 1)
    return array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()


@dataclass
class AnalysisContext:
    """One analysis's view of the trained run."""

    trained: TrainedRun
    name: str
    out_dir: Path  # <run>/analysis
    loggers: list[Any] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    stem: str | None = None  # the output's name in out_dir (``name``, or ``name-2`` when an earlier one exists)

    @property
    def model(self) -> nn.Module:
        return self.trained.model

    @property
    def class_names(self) -> list[str]:
        return self.trained.class_names()

    def images(self, count: int, split: str = "test"):
        """The first ``count`` images of a split: (model inputs, [0, 1] display images, labels)."""
        if split not in ("train", "val", "test"):
            raise UserError(f"analysis.{self.name}.split", split, "is not a split.", "Use train, val or test.")
        loader_name = f"{split}_dataloader"
        self.trained.prepare_split(split)
        if getattr(self.trained.datamodule, f"{split}_set", True) is None:
            raise UserError(f"analysis.{self.name}.split", split, "is empty for this run's data.",
                            "Use split=test.")
        if not hasattr(self.trained.datamodule, loader_name):
            raise UserError(f"analysis.{self.name}.split", split, "has no loader.", "Use split=test.")
        return self.trained.test_images(limit=count, split=split)

    def normalise(self, display: torch.Tensor) -> torch.Tensor:
        """[0, 1] images at the model's input size -> model inputs (the run's mean/std)."""
        mean, std = self.mean_std(display)
        return (display - mean) / std

    def mean_std(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.trained.cfg.data
        channels = like.shape[1]
        mean = torch.tensor(list(data.get("mean") or [0.0] * channels), dtype=like.dtype).view(1, -1, 1, 1)
        std = torch.tensor(list(data.get("std") or [1.0] * channels), dtype=like.dtype).view(1, -1, 1, 1)
        return mean, std

    def path(self, filename: str) -> Path:
        folder = self.out_dir / (self.stem or self.name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / filename

    def save_image(self, tag: str, image: torch.Tensor | np.ndarray, filename: str) -> Path:
        from callbacks.media import save_png, send_image, to_uint8_hwc

        pixels = to_uint8_hwc(image)
        path = self.path(filename)
        save_png(pixels, path)
        send_image(self.loggers, f"analysis/{self.name}/{tag}", pixels, step=0)
        self.files.append(str(path.relative_to(self.out_dir.parent)))
        return path

    def save_figure(self, tag: str, figure: Figure, filename: str) -> Path:
        from callbacks.plotting import render

        return self.save_image(tag, render(figure), filename)


def rectified_layers(model: nn.Module, x: torch.Tensor, count: int = 3) -> list[str]:
    """``count`` layers spread over the depth, the last the deepest: modules run once, before the classifier,
    whose output is a non-negative spatial map (of modules returning the very same tensor, the outermost;
    when fewer than two exist, any module run once with a spatial map), taken from the shallowest nesting
    level that has ``count`` of them."""
    calls = executed_modules(model, x, leaves_only=False)
    head_name, _ = head_layer(model, x)
    head_at = min((i for i, c in enumerate(calls) if c[0] == head_name), default=len(calls))
    spatial = [c for c in calls[:head_at] if c[0] and isinstance(c[3], torch.Tensor) and c[3].ndim == 4
               and min(c[3].shape[-2:]) > 1 and c[4] == 1 and not isinstance(c[1], PASS_THROUGH)
               and not isinstance(c[1], nn.modules.batchnorm._NormBase)]
    rectified = [c for c in spatial if float(c[3].min()) >= 0]
    chosen = rectified if len(rectified) >= min(count, 2) else spatial
    names: list[str] = []
    for position, (name, _, _, output, _) in enumerate(chosen):  # the outermost of one tensor: the last call
        if not any(later[3] is output for later in chosen[position + 1:]):
            names.append(name)
    if not names:
        raise UserError("layers", None, "could not be chosen: no layer of this model outputs a spatial map.",
                        "Set the analysis's layers=[<module name>, ...] explicitly.")
    # The shallowest modules that give enough maps: a ResNet's stages, VGG's ReLUs, GoogLeNet's blocks.
    for depth in range(max(n.count(".") for n in names) + 1):
        shallow = [n for n in names if n.count(".") <= depth]
        if len(shallow) >= count:
            names = shallow
            break
    if len(names) <= count:
        return names
    picks = sorted({len(names) - 1 - (i * len(names)) // count for i in range(count)})  # even steps back from the deepest
    return [names[i] for i in picks]


def choose_channels(activity: torch.Tensor, channels: Sequence[int] | None, num_channels: int, key: str,
                    layer: str, hint: str = "") -> list[int]:
    """The channels to show: the ``num_channels`` most active (``activity``: one number per channel; a
    dead channel has nothing to show), or the given ``channels``, checked against the layer's count."""
    count = int(activity.shape[0])
    if channels is None:
        return activity.argsort(descending=True)[:num_channels].tolist()
    chosen = [int(c) for c in channels]
    bad = [c for c in chosen if not 0 <= c < count]
    if bad:
        raise UserError(key, bad, f"are not channels of {layer} (it has {count}).", f"Use indices 0..{count - 1}{hint}.")
    return chosen
