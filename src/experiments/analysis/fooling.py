"""Fooling images (Nguyen, Yosinski & Clune 2015): images of nothing that the network calls a class with
near certainty.

Nguyen et al. evolved such images and also made them "by gradient ascent" on the posterior of a class:
from random noise, the input is changed to raise the class's soft-max probability until the network is
at least 99% sure, with no prior that would keep the image natural. Here: from uniform noise in [0, 1]
(seeded), Adam steps of ``lr`` pixel units on ``log p(class | x)`` (:func:`~.image_optimization.optimize_image`),
the image clamped back into [0, 1] after every step, so each fooling image is a valid picture the
network could be shown. Unlike the class model (:mod:`.class_model`), which raises the raw score and is
regularised toward a natural image, this objective is the log-probability (it can also rise by lowering
the other classes, which is the point: confidence) and there is no regulariser. One image per class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from annotated_types import Gt, Lt
from torch import nn

from experiments.analysis.adversarial import Normalised
from experiments.analysis.common import AnalysisContext, Count, Positive, analysis_mode
from experiments.analysis.figures import image_rows
from experiments.analysis.image_optimization import optimize_image
from experiments.core.errors import UserError


def fooling_images(model: nn.Module, shape: tuple[int, int, int], classes: Sequence[int], steps: int = 200,
                   lr: float = 0.01, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images in [0, 1] ``(len(classes), *shape)``, their soft-max probabilities) after gradient ascent on
    each image's ``log p(class)`` from seeded uniform noise; ``model`` takes [0, 1] images.

    The images are optimised together (one batch, the sum of their objectives): in eval mode no image's
    output depends on another's, and Adam's step is per pixel, so this is ``len(classes)`` separate ascents."""
    targets = torch.as_tensor(list(classes), dtype=torch.long)
    start = torch.rand(len(targets), *shape, generator=torch.Generator().manual_seed(seed))

    def loss(x: torch.Tensor) -> torch.Tensor:
        return -model(x).log_softmax(dim=1).gather(1, targets.view(-1, 1)).sum()

    def stay_valid(step: int, x: torch.Tensor) -> None:
        x.clamp_(0.0, 1.0)

    images, _ = optimize_image(loss, start, steps, lr, stay_valid)
    with torch.no_grad():
        probabilities = model(images).softmax(dim=1)
    return images, probabilities


def run(ctx: AnalysisContext, classes: Sequence[int] | None = None, steps: Count = 200, lr: Positive = 0.01,
        confidence: Annotated[float, Gt(0), Lt(1)] = 0.99, seed: int = 0) -> dict:
    names = ctx.class_names
    chosen = list(range(len(names))) if classes is None else [int(c) for c in classes]
    bad = [c for c in chosen if not 0 <= c < len(names)]
    if bad or not chosen:
        raise UserError(f"analysis.{ctx.name}.classes", bad or chosen, f"are not class indices (0..{len(names) - 1}).",
                        "List class indices, e.g. classes=[0,1,2], or null for every class.")
    data = ctx.trained.cfg.data
    shape = (int(data.in_channels), int(data.image_size), int(data.image_size))
    mean, std = ctx.mean_std(torch.zeros(1, *shape))
    with analysis_mode(ctx.model):
        images, probabilities = fooling_images(Normalised(ctx.model, mean, std), shape, chosen, steps, lr, seed)
    records = []
    for image_probs, c in zip(probabilities, chosen):
        records.append({"class": names[c], "confidence": round(float(image_probs[c]), 5),
                        "top_class": names[int(image_probs.argmax())],
                        "fooled": bool(image_probs[c] >= confidence and image_probs.argmax() == c)})
    columns = min(10, len(chosen))
    rows = [list(images[i:i + columns]) for i in range(0, len(chosen), columns)]
    titles = [[f"{r['class']} {r['confidence']:.1%}" for r in records[i:i + columns]]
              for i in range(0, len(chosen), columns)]
    figure = image_rows(rows, tile_titles=titles, tile=1.5,
                        title=f"fooling images: {sum(r['fooled'] for r in records)}/{len(records)} classes at "
                              f">= {confidence:.0%} from noise ({steps} steps of {lr:g})")
    ctx.save_figure("fooling", figure, "fooling_images.png")
    return {"steps": steps, "lr": lr, "confidence": confidence, "seed": seed,
            "fooled": sum(r["fooled"] for r in records), "min_confidence": min(r["confidence"] for r in records),
            "classes": records}
