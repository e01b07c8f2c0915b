"""Input-gradient saliency maps (Simonyan, Vedaldi & Zisserman 2014), SmoothGrad optional (Smilkov et al. 2017).

The map of an image is max over colour channels of |d score_c / d pixel|: which pixels, changed a
little, change the class score most. Gradients come from captum's ``Saliency``; SmoothGrad averages
them over noisy copies with captum's ``NoiseTunnel``.
"""

from __future__ import annotations

import torch
from torch import nn

from experiments.analysis.common import (
    AnalysisContext,
    Count,
    Logits,
    NonNegative,
    NonNegativeInt,
    analysis_mode,
    heat_overlay,
)
from experiments.analysis.figures import image_rows


def saliency_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, smoothgrad_samples: NonNegativeInt = 0,
                  noise: NonNegative = 0.15) -> torch.Tensor:
    """(N, H, W) saliency of each image for its target class; ``noise`` is a fraction of the input range."""
    from captum.attr import NoiseTunnel, Saliency

    with analysis_mode(model):
        method = Saliency(Logits(model))
        if smoothgrad_samples > 0:
            spread = float(images.max() - images.min()) * noise
            attributions = NoiseTunnel(method).attribute(
                images, nt_type="smoothgrad", nt_samples=int(smoothgrad_samples),
                nt_samples_batch_size=max(1, 256 // max(1, len(images))), stdevs=spread,
                target=targets, abs=True)
        else:
            attributions = method.attribute(images, target=targets, abs=True)
    return attributions.detach().abs().amax(dim=1)


def concentration(maps: torch.Tensor, top_fraction: float = 0.1) -> torch.Tensor:
    """Share of each map's total in its top ``top_fraction`` of pixels (1/top_fraction x uniform = 1)."""
    flat = maps.flatten(1)
    k = max(1, int(flat.shape[1] * top_fraction))
    return flat.topk(k, dim=1).values.sum(1) / flat.sum(1).clamp_min(1e-12)


def run(ctx: AnalysisContext, num_images: Count = 8, split: str = "test", smoothgrad_samples: NonNegativeInt = 0,
        noise: NonNegative = 0.15, target: str = "label") -> dict:
    images, display, labels = ctx.images(num_images, split)
    with torch.no_grad(), analysis_mode(ctx.model):
        predicted = Logits(ctx.model)(images).argmax(1)
    if target not in ("label", "predicted"):
        from experiments.core.errors import UserError

        raise UserError(f"analysis.{ctx.name}.target", target, "is not a choice.", "Use label or predicted.")
    classes = labels if target == "label" else predicted
    maps = saliency_maps(ctx.model, images, classes, smoothgrad_samples, noise)
    names = ctx.class_names
    overlays = [heat_overlay(d, m) for d, m in zip(display, maps)]
    kind = "SmoothGrad" if smoothgrad_samples else "saliency"
    figure = image_rows([list(display), [m.unsqueeze(0) for m in maps], overlays],
                        row_titles=["image", f"|gradient| ({kind})", "overlay"],
                        column_titles=[f"{names[int(y)]} -> {names[int(p)]}" for y, p in zip(labels, predicted)],
                        cmaps=[None, "hot", None])
    ctx.save_figure("maps", figure, "saliency.png")
    share = concentration(maps)
    return {"method": kind, "target": target, "images": [
        {"index": i, "label": names[int(y)], "predicted": names[int(p)], "top10pct_share": round(float(s), 4)}
        for i, (y, p, s) in enumerate(zip(labels, predicted, share))],
        "mean_top10pct_share": round(float(share.mean()), 4)}
