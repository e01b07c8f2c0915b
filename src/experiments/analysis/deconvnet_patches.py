"""Zeiler & Fergus 2014, Fig. 2: for chosen channels of several layers, the top-9 image patches that
excite each channel most, beside their deconvnet projections.

The search and the receptive-field patches are :mod:`experiments.analysis.max_activating`'s; the
projection of one activation is the deconvnet (captum's ``Deconvolution``) of that single unit, the
channel's strongest response in that image, with every other unit of the layer at zero, as in the
paper: back through the layers below with max-pooling "switches" (the max-pool gradient), rectified
signals at every ReLU and transposed filters. It is cropped to the same receptive-field patch.

Without ``layers``, three rectified feature maps spread over the depth of the network are chosen (the
outputs of ReLUs, ResNet blocks or stages: modules run once whose maps are non-negative), the last one
being the deepest before the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from experiments.analysis.common import (
    AnalysisContext,
    Count,
    Logits,
    analysis_mode,
    choose_channels,
    find_layer,
    rectified_layers,
)
from experiments.analysis.figures import image_rows, mosaic
from experiments.analysis.guided import quiet_captum, require_relu_modules, signed_display
from experiments.analysis.max_activating import channel_maxima, receptive_field


class _Stop(Exception):
    """Raised by the hook once the layer has run: nothing above it matters for a projection."""


class UnitOutput(nn.Module):
    """The response of one channel of ``layer`` at one flat position per image: (N, 1)."""

    def __init__(self, model: nn.Module, layer: nn.Module, channel: int, positions: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self._layer = [layer]  # not a child: captum hooks the ReLUs of ``model`` once
        self.channel = channel
        self.register_buffer("positions", positions.long().view(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def keep(module, inputs, output):
            captured.append(output)
            raise _Stop

        handle = self._layer[0].register_forward_hook(keep)
        try:
            Logits(self.model)(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError("the layer did not run in the forward pass")
        return captured[0].flatten(2)[:, self.channel].gather(1, self.positions)


def unit_projections(model: nn.Module, layer: nn.Module, images: torch.Tensor, channel: int,
                     positions: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) deconvnet projections of unit (``channel``, ``positions[i]``) of ``layer`` in image i."""
    from captum.attr import Deconvolution

    unit = UnitOutput(model, layer, channel, positions)
    with analysis_mode(model), quiet_captum(), torch.enable_grad():
        maps = Deconvolution(unit).attribute(images.detach().clone().requires_grad_(True), target=0)
    return maps.detach()


def run(ctx: AnalysisContext, layers: Sequence[str] | None = None, num_layers: Count = 3,
        channels: Sequence[int] | None = None, num_channels: Count = 4, top_k: Count = 9,
        num_images: Count = 1000, split: str = "val", patch_px: Count = 32) -> dict:
    if split == "val":  # a run without a validation split shows test patches
        ctx.trained.prepare_split(split)
        split = split if getattr(ctx.trained.datamodule, "val_set", None) is not None else "test"
    images, display, labels = ctx.images(num_images, split)
    model = ctx.model
    require_relu_modules(model, images, "deconvnet")
    names = [str(n) for n in layers] if layers else rectified_layers(model, images, num_layers)
    shape = tuple(images.shape[1:])
    k = min(top_k, len(images))
    rows, row_titles, tile_titles, records = [], [], [], []
    for name in names:
        module = find_layer(model, name, f"analysis.{ctx.name}.layers")
        maxima, positions = channel_maxima(model, module, images)
        count = maxima.shape[1]
        chosen = choose_channels(maxima.mean(0), channels, num_channels, f"analysis.{ctx.name}.channels", name,
                                 " (they apply to every layer), or channels=null")
        boxes: dict[int, tuple[int, int, int, int]] = {}  # by position: the same for every channel
        row, titles, entries_of_layer = [], [], []
        for channel in chosen:
            top = maxima[:, channel].topk(k)
            index = top.indices
            where = positions[index, channel]
            projections = signed_display(unit_projections(model, module, images[index], channel, where))
            patches, projected, entries = [], [], []
            for i, (image_index, position, value) in enumerate(zip(index.tolist(), where.tolist(), top.values.tolist())):
                if position not in boxes:
                    boxes[position] = receptive_field(model, name, shape, channel, position)
                box = boxes[position]
                patches.append(_crop(display[image_index], box, patch_px))
                projected.append(_crop(projections[i], box, patch_px))
                entries.append({"image": int(image_index), "label": ctx.class_names[int(labels[image_index])],
                                "activation": round(value, 5), "receptive_field": list(box)})
            row += [mosaic(projected), mosaic(patches)]
            titles += [f"ch {channel}: deconvnet", f"ch {channel}: top-{k} patches"]
            entries_of_layer.append({"channel": channel, "top": entries})
        rows.append(row)
        row_titles.append(name)
        tile_titles.append(titles)
        records.append({"layer": name, "channels_in_layer": count, "channels": entries_of_layer})
    figure = image_rows(rows, row_titles=row_titles, tile_titles=tile_titles, tile=2.2,
                        title=f"deconvnet projections and top-{k} {split} patches (Zeiler & Fergus 2014, Fig. 2)")
    ctx.save_figure("patches", figure, "deconvnet_patches.png")
    return {"split": split, "images_searched": len(images), "layers": records}


def _crop(image: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    top, left, bottom, right = box
    patch = image[:, top:bottom + 1, left:right + 1].unsqueeze(0).float()
    return nn.functional.interpolate(patch, size=(size, size), mode="nearest")[0]
