"""Maximally activating images (Zeiler & Fergus 2014; the lectures' "which images excite this unit"):
for chosen channels of a layer, the top-k images of a split by the channel's strongest response, with
the receptive-field patch around the strongest position.

The receptive field is found, not assumed: on a float64 copy of the network with every weight set to
a positive average, norms made identities, activations removed and max-pooling turned into average
pooling, the gradient of one output unit is positive exactly on the input pixels it can see. That
works for any architecture (branches, concatenations, residual sums) without a per-model table.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from experiments.analysis.common import (
    AnalysisContext,
    Count,
    Logits,
    analysis_mode,
    choose_channels,
    collect_in_batches,
    feature_layer,
    find_layer,
)
from experiments.analysis.figures import image_rows
from experiments.core.errors import UserError

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def channel_maxima(model: nn.Module, layer: nn.Module, images: torch.Tensor, batch_size: int = 256
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) strongest response of each channel per image and (N, C) flat position of it."""
    best = collect_in_batches(model, layer, images, lambda output: output.flatten(2).max(dim=2), batch_size=batch_size)
    return torch.cat([b.values for b in best]), torch.cat([b.indices for b in best])


def _linearised(model: nn.Module) -> nn.Module:
    """A float64 copy whose unit gradients are positive on, and only on, each unit's receptive field."""
    probe = copy.deepcopy(model).double()
    for module in list(probe.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.MaxPool2d):
                setattr(module, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                         ceil_mode=child.ceil_mode))
            elif isinstance(child, (*_NORMS, nn.ReLU, nn.ReLU6, nn.Dropout, nn.Hardswish, nn.SiLU, nn.GELU)):
                setattr(module, child_name, nn.Identity())
    with torch.no_grad():
        for module in probe.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.ndim > 1:
                fan_in = weight[0].numel()
                weight.fill_(1.0 / fan_in)
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.Tensor):
                bias.zero_()
    return probe


def receptive_field(model: nn.Module, layer_name: str, input_shape: tuple[int, int, int], channel: int,
                    position: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), inclusive, of the input pixels unit (channel, position) depends on."""
    probe = _linearised(model)
    layer = dict(probe.named_modules())[layer_name]
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o))
    x = torch.ones(1, *input_shape, dtype=torch.float64, requires_grad=True)
    try:
        with analysis_mode(probe), torch.enable_grad():
            Logits(probe)(x)
            captured[0].flatten(2)[0, channel, position].backward()
    finally:
        handle.remove()
    seen = (x.grad[0].abs().sum(0) > 0).nonzero()
    if len(seen) == 0:
        return 0, 0, input_shape[1] - 1, input_shape[2] - 1
    (top, left), (bottom, right) = seen.min(0).values.tolist(), seen.max(0).values.tolist()
    return top, left, bottom, right


def run(ctx: AnalysisContext, layer: str | None = None, channels: Sequence[int] | None = None, num_channels: Count = 8,
        top_k: Count = 9, num_images: Count = 2000, split: str = "val", patch_px: Count = 32) -> dict:
    if top_k < 1 or num_channels < 1:
        raise UserError(f"analysis.{ctx.name}.top_k", top_k, "and num_channels must be at least 1.", "Use e.g. top_k=9.")
    ctx.trained.prepare_split(split)  # a run is loaded with its test split only: load this one first
    split = split if getattr(ctx.trained.datamodule, f"{split}_set", None) is not None else "test"
    images, display, labels = ctx.images(num_images, split)
    model = ctx.model
    layer = layer or feature_layer(model, images)
    module = find_layer(model, layer, f"analysis.{ctx.name}.layer")
    maxima, positions = channel_maxima(model, module, images)
    count = maxima.shape[1]
    chosen = choose_channels(maxima.mean(0), channels, num_channels, f"analysis.{ctx.name}.channels", layer)
    k = min(top_k, len(images))
    shape = tuple(images.shape[1:])
    rows, boxes_rows, records = [], [], []
    for channel in chosen:
        top = maxima[:, channel].topk(k)
        patches, framed, entries = [], [], []
        for value, index in zip(top.values.tolist(), top.indices.tolist()):
            box = receptive_field(model, layer, shape, channel, int(positions[index, channel]))
            t, left, b, r = box
            patch = display[index][:, t:b + 1, left:r + 1].unsqueeze(0).float()
            patches.append(torch.nn.functional.interpolate(patch, size=(patch_px, patch_px), mode="nearest")[0])
            framed.append(_framed(display[index], box))
            entries.append({"image": int(index), "label": ctx.class_names[int(labels[index])],
                            "activation": round(value, 5), "receptive_field": list(box)})
        rows.append(patches)
        boxes_rows.append(framed)
        records.append({"channel": channel, "top": entries})
    titles = [f"ch {c}" for c in chosen]
    figure = image_rows(rows, row_titles=titles, title=f"top-{k} receptive-field patches @ {layer} ({split})")
    ctx.save_figure("patches", figure, "patches.png")
    figure = image_rows(boxes_rows, row_titles=titles, title=f"top-{k} {split} images @ {layer}")
    ctx.save_figure("images", figure, "images.png")
    return {"layer": layer, "split": split, "images_searched": len(images), "channels_in_layer": count,
            "channels": records}


def _framed(image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """The image in colour with a red frame around the receptive field."""
    framed = image.detach().float().clone()
    framed = framed.expand(3, -1, -1).clone() if framed.shape[0] == 1 else framed[:3].clone()
    t, left, b, r = box
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1)
    framed[:, t, left:r + 1] = red
    framed[:, b, left:r + 1] = red
    framed[:, t:b + 1, left] = red
    framed[:, t:b + 1, r] = red
    return framed
