"""Class model visualisation (Simonyan, Vedaldi & Zisserman 2014): the image that maximises a class
score, arg max_I S_c(I) - lambda ||I||^2 (+ optional total variation), by gradient ascent from a blank
(the mean image, 0 after normalisation) or a noise start. The score is the unnormalised logit, as in
the paper: maximising the softmax could succeed by lowering the other classes instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from experiments.analysis.common import AnalysisContext, Count, Logits, NonNegative, Positive, analysis_mode
from experiments.analysis.figures import image_rows
from experiments.analysis.image_optimization import maximize, start_image
from experiments.core.errors import UserError


def class_model(model: nn.Module, shape: tuple[int, int, int], target: int, steps: Count = 200, lr: Positive = 0.1,
                l2: NonNegative = 1e-3, tv: NonNegative = 0.0, start: str = "blank", seed: int = 0) -> tuple[torch.Tensor, list[float]]:
    """(image in model-input space, per-step objective S_c - penalties) for class ``target``."""
    wrapped = Logits(model)
    with analysis_mode(model):
        image, curve = maximize(lambda x: wrapped(x)[0, target], start_image(shape, start, seed), steps, lr, l2, tv)
    return image[0], curve


def run(ctx: AnalysisContext, classes: Sequence[int] | None = None, steps: Count = 200, lr: Positive = 0.1,
        l2: NonNegative = 1e-3, tv: NonNegative = 0.0, start: str = "blank", seed: int = 0) -> dict:
    if start not in ("blank", "noise"):
        raise UserError(f"analysis.{ctx.name}.start", start, "is not a start image.", "Use blank or noise.")
    names = ctx.class_names
    chosen = list(range(min(10, len(names)))) if classes is None else [int(c) for c in classes]
    bad = [c for c in chosen if not 0 <= c < len(names)]
    if bad:
        raise UserError(f"analysis.{ctx.name}.classes", bad, f"are not class indices (0..{len(names) - 1}).",
                        "List class indices, e.g. classes=[0,1,2].")
    data = ctx.trained.cfg.data
    shape = (int(data.in_channels), int(data.image_size), int(data.image_size))
    images, records = [], []
    for c in chosen:
        image, curve = class_model(ctx.model, shape, c, steps, lr, l2, tv, start, seed)
        with torch.no_grad(), analysis_mode(ctx.model):
            probabilities = Logits(ctx.model)(image.unsqueeze(0)).softmax(1)[0]
        images.append(image)
        records.append({"class": names[c], "objective_start": round(curve[0], 4), "objective_end": round(curve[-1], 4),
                        "probability": round(float(probabilities[c]), 4),
                        "top_class": names[int(probabilities.argmax())]})
    from callbacks.plotting import normalise_each

    figure = image_rows([list(normalise_each(torch.stack(images)))], column_titles=[names[c] for c in chosen],
                        title=f"class models (L2 {l2:g}, TV {tv:g}, {steps} steps from {start})")
    ctx.save_figure("classes", figure, "class_models.png")
    return {"steps": steps, "lr": lr, "l2": l2, "tv": tv, "start": start, "classes": records}
