"""Occlusion sensitivity (Zeiler & Fergus 2014): slide a grey square over the image and map the
probability of the true class with that part hidden.

captum's ``Occlusion`` does the sliding, batching and per-pixel averaging of overlapping windows; it
reports the probability DROP, so the map drawn is p(true class) minus that drop: the average
probability of the true class over the occluder positions that hid the pixel. Low = important.
"""

from __future__ import annotations

import torch
from torch import nn

from experiments.analysis.common import AnalysisContext, Count, Logits, analysis_mode, heat_overlay
from experiments.analysis.figures import image_rows
from experiments.core.errors import UserError


def occlusion_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, window: int, stride: int,
                   fill: torch.Tensor) -> torch.Tensor:
    """(N, H, W) probability of ``targets`` with the pixel occluded by a ``window`` square of ``fill``.

    ``fill`` is the occluder's value in model-input space, one per channel.
    """
    from captum.attr import Occlusion

    channels = images.shape[1]
    wrapped = Logits(model)

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        return wrapped(x).softmax(dim=1)

    with analysis_mode(model), torch.no_grad():
        clean = probabilities(images).gather(1, targets.view(-1, 1)).view(-1, 1, 1)
        drop = Occlusion(probabilities).attribute(
            images, sliding_window_shapes=(channels, window, window), strides=(channels, stride, stride),
            baselines=fill.view(1, -1, 1, 1).expand_as(images).contiguous(), target=targets,
            perturbations_per_eval=64)
    return clean - drop[:, 0]


def run(ctx: AnalysisContext, num_images: Count = 8, split: str = "test", window: int | None = None,
        stride: int | None = None, grey: float = 0.5) -> dict:
    images, display, labels = ctx.images(num_images, split)
    size = images.shape[-1]
    window = int(window or max(2, size // 4))
    stride = int(stride or max(1, window // 2))
    for key, value in (("window", window), ("stride", stride)):
        if value < 1 or value > size:
            raise UserError(f"analysis.{ctx.name}.{key}", value, f"must be between 1 and the image size {size}.",
                            f"Use e.g. window={max(2, size // 4)} stride={max(1, size // 8)}.")
    mean, std = ctx.mean_std(images)
    fill = ((torch.full_like(mean, grey) - mean) / std).flatten()
    maps = occlusion_maps(ctx.model, images, labels, window, stride, fill)
    names = ctx.class_names
    figure = image_rows([list(display), [m.unsqueeze(0) for m in maps],
                         [heat_overlay(d, 1 - m) for d, m in zip(display, maps)]],
                        row_titles=["image", "p(true class), occluded", "importance (1 - p)"],
                        column_titles=[names[int(y)] for y in labels], cmaps=[None, "viridis", None],
                        value_range=[None, (0.0, 1.0), None])
    ctx.save_figure("maps", figure, "occlusion.png")
    records = []
    for i, (m, y) in enumerate(zip(maps, labels)):
        lowest = int(m.flatten().argmin())
        records.append({"index": i, "label": names[int(y)], "p_min": round(float(m.min()), 4),
                        "p_max": round(float(m.max()), 4), "most_important_pixel": [lowest // size, lowest % size]})
    return {"window": window, "stride": stride, "grey": grey, "images": records}
