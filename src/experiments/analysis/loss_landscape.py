"""Loss surface around the trained weights (Li et al. 2018, "Visualizing the Loss Landscape of Neural
Nets"): L(theta + a d1 + b d2) along random directions with FILTER normalisation — each filter of d
rescaled to the norm of the same filter of theta, so networks with different weight scales compare
fairly; biases and BatchNorm parameters get no direction (d = 0), as in the paper. Compare a plain net
and its ResNet twin: the plain one is sharper and less convex. Written by hand (no maintained library).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from experiments.analysis.common import AnalysisContext, Count, Logits, Positive, analysis_mode
from experiments.core.errors import UserError

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def filter_normalised_direction(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random direction per parameter; conv/linear weights filter-normalised, the rest zero."""
    norm_params = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    direction = {}
    for name, param in model.named_parameters():
        if param.ndim <= 1 or id(param) in norm_params:
            direction[name] = torch.zeros_like(param)
            continue
        d = torch.randn(param.shape, generator=generator, dtype=param.dtype)
        d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        p_norm = param.detach().flatten(1).norm(dim=1)
        direction[name] = d * (p_norm / d_norm).view(-1, *([1] * (param.ndim - 1)))
    return direction


def surface(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, directions: list[dict[str, torch.Tensor]],
            coordinates: list[np.ndarray], batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(loss, error %) on a grid: one axis per direction. The trained model is never modified."""
    probe = copy.deepcopy(model)
    origin = {n: p.detach().clone() for n, p in probe.named_parameters()}
    params = dict(probe.named_parameters())
    shape = tuple(len(c) for c in coordinates)
    losses, errors = np.zeros(shape), np.zeros(shape)
    with analysis_mode(probe), torch.no_grad():
        for index in np.ndindex(*shape):
            for name, param in params.items():
                shifted = origin[name].clone()
                for axis, direction in enumerate(directions):
                    shifted += float(coordinates[axis][index[axis]]) * direction[name]
                param.copy_(shifted)
            total, wrong = 0.0, 0
            for start in range(0, len(images), batch_size):
                logits = Logits(probe)(images[start:start + batch_size])
                y = labels[start:start + batch_size]
                total += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
                wrong += int((logits.argmax(1) != y).sum())
            losses[index] = total / len(images)
            errors[index] = 100.0 * wrong / len(images)
    return losses, errors


def run(ctx: AnalysisContext, num_images: Count = 1024, split: str = "train", span: Positive = 1.0,
        points_1d: int = 21, points_2d: int = 11, two_d: bool = True, seed: int = 0) -> dict:
    if points_1d < 3 or (two_d and points_2d < 3):
        raise UserError(f"analysis.{ctx.name}.points_1d", points_1d, "must be at least 3 (points_2d too).",
                        "Use e.g. points_1d=21 points_2d=11.")
    images, _, labels = ctx.images(num_images, split)
    generator = torch.Generator().manual_seed(seed)
    d1 = filter_normalised_direction(ctx.model, generator)
    line = np.linspace(-span, span, points_1d)
    loss_1d, err_1d = surface(ctx.model, images, labels, [d1], [line])
    result = {"split": split, "images": len(labels), "span": span, "seed": seed,
              "alphas": line.round(4).tolist(), "loss_1d": loss_1d.round(5).tolist(), "err_1d": err_1d.round(3).tolist(),
              "loss_at_minimum": round(float(loss_1d[points_1d // 2]), 5),
              "sharpness_half_span": round(float(np.interp([-span / 2, span / 2], line, loss_1d).mean()
                                                 - loss_1d[points_1d // 2]), 5)}
    _plot_1d(ctx, line, loss_1d, err_1d)
    if two_d:
        d2 = filter_normalised_direction(ctx.model, generator)
        grid = np.linspace(-span, span, points_2d)
        loss_2d, _ = surface(ctx.model, images, labels, [d1, d2], [grid, grid])
        result.update({"grid": grid.round(4).tolist(), "loss_2d": loss_2d.round(5).tolist()})
        _plot_2d(ctx, grid, loss_2d)
    return result


def _plot_1d(ctx: AnalysisContext, line: np.ndarray, loss: np.ndarray, err: np.ndarray) -> None:
    from callbacks.plotting import new_figure

    figure = new_figure(5.5, 3.6)
    axis = figure.subplots()
    axis.plot(line, loss, color="tab:blue", label="loss")
    axis.set_xlabel("alpha (filter-normalised direction)")
    axis.set_ylabel("loss", color="tab:blue")
    twin = axis.twinx()
    twin.plot(line, err, color="tab:red", linestyle="--", label="error")
    twin.set_ylabel("error (%)", color="tab:red")
    axis.set_title("1-D loss landscape", fontsize=9)
    figure.tight_layout()
    ctx.save_figure("1d", figure, "loss_landscape_1d.png")


def _plot_2d(ctx: AnalysisContext, grid: np.ndarray, loss: np.ndarray) -> None:
    from callbacks.plotting import new_figure

    figure = new_figure(5, 4.4)
    axis = figure.subplots()
    levels = np.linspace(loss.min(), min(loss.max(), loss.min() + 10 * max(np.ptp(loss) / 10, 1e-6)), 20)
    contour = axis.contour(grid, grid, loss.T, levels=levels, cmap="viridis")
    axis.clabel(contour, fontsize=6)
    axis.plot([0], [0], "k+")
    axis.set_xlabel("alpha")
    axis.set_ylabel("beta")
    axis.set_title("2-D loss landscape (contours)", fontsize=9)
    figure.tight_layout()
    ctx.save_figure("2d", figure, "loss_landscape_2d.png")
