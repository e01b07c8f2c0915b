"""Feature inversion (Mahendran & Vedaldi 2015): the image whose code at a layer matches a given image's
code, min_x ||phi(x) - phi(x0)||^2 / ||phi(x0)||^2 + lambda_tv TV(x) + lambda_l2 ||x||^2, from noise.
Shallow layers give back the picture; deep ones keep what the class needs and lose the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from experiments.analysis.common import (
    AnalysisContext,
    Count,
    Logits,
    NonNegative,
    Positive,
    analysis_mode,
    find_layer,
    rectified_layers,
)
from experiments.analysis.figures import image_rows
from experiments.analysis.image_optimization import optimize_image, total_variation


def code_at(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        Logits(model)(x)
    finally:
        handle.remove()
    return captured[-1]


def invert(model: nn.Module, layer: nn.Module, image: torch.Tensor, steps: int = 200, lr: float = 0.05,
           tv: float = 0.05, l2: float = 1e-4, seed: int = 0) -> tuple[torch.Tensor, float]:
    """(reconstruction in model-input space, final relative code error)."""
    with analysis_mode(model):
        with torch.no_grad():
            target = code_at(model, layer, image.unsqueeze(0))
        scale = target.pow(2).sum().clamp_min(1e-12)
        start = 0.1 * torch.randn(1, *image.shape, generator=torch.Generator().manual_seed(seed))

        def loss(x: torch.Tensor) -> torch.Tensor:
            return (code_at(model, layer, x) - target).pow(2).sum() / scale + tv * total_variation(x) + l2 * x.pow(2).mean()

        reconstruction, _ = optimize_image(loss, start, steps, lr)
        with torch.no_grad():
            error = float((code_at(model, layer, reconstruction) - target).pow(2).sum() / scale)
    return reconstruction[0], error


def default_layers(model: nn.Module, x: torch.Tensor, count: int = 3) -> list[str]:
    """``count`` representations spread over the depth, as Mahendran & Vedaldi invert them: rectified
    maps (after BN and ReLU; in a ResNet whole blocks, shortcut included), not a conv's raw output."""
    return rectified_layers(model, x, count)


def run(ctx: AnalysisContext, layers: Sequence[str] | None = None, num_images: Count = 2, split: str = "test",
        steps: Count = 200, lr: Positive = 0.05, tv: NonNegative = 0.05, l2: NonNegative = 1e-4, seed: int = 0) -> dict:
    images, display, labels = ctx.images(num_images, split)
    names = list(layers) if layers else default_layers(ctx.model, images)
    modules = [find_layer(ctx.model, n, f"analysis.{ctx.name}.layers") for n in names]
    rows = [list(display)]
    records = []
    for name, module in zip(names, modules):
        row = []
        for i, image in enumerate(images):
            reconstruction, error = invert(ctx.model, module, image, steps, lr, tv, l2, seed)
            row.append(ctx.trained.unnormalize(reconstruction.unsqueeze(0))[0])
            records.append({"layer": name, "image": i, "relative_code_error": round(error, 5)})
        rows.append(row)
    figure = image_rows(rows, row_titles=["image", *names],
                        column_titles=[ctx.class_names[int(y)] for y in labels])
    ctx.save_figure("reconstructions", figure, "feature_inversion.png")
    return {"layers": names, "steps": steps, "tv": tv, "l2": l2, "reconstructions": records}
