"""Adversarial examples (Goodfellow et al. 2015; Madry et al. 2018): FGSM and its iterative form, PGD.

Perturbations are sized in PIXEL units (epsilon 0.1 = a tenth of the [0, 1] range) and kept inside
[0, 1], so the normalisation is part of the attacked function. captum.robust does the attacks, set
to the papers' definitions: captum's FGSM leaves every pixel whose gradient is at most 1e-6 in size
unchanged (its ``zero_thresh``), so on an input the model is sure of only a few pixels would move and
the curve would flatter the model; Goodfellow's FGSM moves every pixel by epsilon times the sign of
the loss gradient, so the threshold is 0 here. PGD starts at a uniformly random point of the epsilon
ball, as Madry et al. do (captum's default starts at the image itself), from a seeded generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from experiments.analysis.common import AnalysisContext, Count, Logits, NonNegativeInt, analysis_mode
from experiments.analysis.figures import image_rows
from experiments.core.errors import UserError


class Normalised(nn.Module):
    """The model applied to [0, 1] images: normalisation first, then the network."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = Logits(model)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.mean) / self.std)


def perturb(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, epsilon: float, steps: int = 0,
            step_size: float | None = None, seed: int = 0) -> torch.Tensor:
    """Adversarial images in [0, 1]: one FGSM step (``steps=0``) or PGD with ``steps`` L-inf steps from a
    random start in the epsilon ball (drawn with ``seed``; the global random state is left as it was)."""
    from captum.robust import FGSM, PGD

    if epsilon == 0:
        return pixels.clone()
    # captum's default loss is -log(output), made for a model returning probabilities; ours returns logits.
    loss = nn.CrossEntropyLoss(reduction="none")
    if steps > 0:
        attack = PGD(model, loss_func=loss, lower_bound=0.0, upper_bound=1.0)
        attack.fgsm.zero_thresh = 0.0
        devices = [pixels.device] if pixels.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            # 2.5 epsilon / steps per step (Madry et al.'s ratio): from any start, a corner of the ball is reachable.
            return attack.perturb(pixels, radius=epsilon, step_size=step_size or 2.5 * epsilon / steps, step_num=steps,
                                  target=labels, random_start=True)
    attack = FGSM(model, loss_func=loss, lower_bound=0.0, upper_bound=1.0)
    attack.zero_thresh = 0.0
    return attack.perturb(pixels, epsilon=epsilon, target=labels)


def accuracy_curve(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, epsilons: Sequence[float],
                   steps: int = 0, batch_size: int = 256) -> list[float]:
    """Accuracy (%) on adversarial images at each epsilon."""
    curve = []
    for epsilon in epsilons:
        correct = 0
        for start in range(0, len(pixels), batch_size):
            x, y = pixels[start:start + batch_size], labels[start:start + batch_size]
            with torch.enable_grad():
                adversarial = perturb(model, x, y, float(epsilon), steps)
            with torch.no_grad():
                correct += int((model(adversarial).argmax(1) == y).sum())
        curve.append(100.0 * correct / max(1, len(pixels)))
    return curve


def run(ctx: AnalysisContext, epsilons: Sequence[float] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2),
        num_images: Count = 512, split: str = "test", pgd_steps: NonNegativeInt = 0, show_epsilon: float | None = None,
        num_examples: NonNegativeInt = 6) -> dict:
    epsilons = [float(e) for e in epsilons]
    if not epsilons or any(not 0 <= e <= 1 for e in epsilons):
        raise UserError(f"analysis.{ctx.name}.epsilons", epsilons, "must be a non-empty list of pixel-unit sizes in [0, 1].",
                        "Use e.g. [0,0.01,0.02,0.05,0.1].")
    if int(pgd_steps) < 0:
        raise UserError(f"analysis.{ctx.name}.pgd_steps", pgd_steps, "must be >= 0.", "Use 0 for FGSM, e.g. 10 for PGD.")
    _, display, labels = ctx.images(num_images, split)
    mean, std = ctx.mean_std(display)
    attacked = Normalised(ctx.model, mean, std)
    method = f"PGD-{pgd_steps}" if pgd_steps else "FGSM"
    with analysis_mode(ctx.model):
        curve = accuracy_curve(attacked, display, labels, epsilons, int(pgd_steps))
        shown = float(show_epsilon) if show_epsilon is not None else max(epsilons)
        x, y = display[:num_examples], labels[:num_examples]
        with torch.enable_grad():
            adversarial = perturb(attacked, x, y, shown, int(pgd_steps))
        with torch.no_grad():
            before, after = attacked(x).argmax(1), attacked(adversarial).argmax(1)
    _plot_curve(ctx, epsilons, curve, method)
    names = ctx.class_names
    difference = adversarial - x
    scale = max(float(difference.abs().max()), 1e-12)
    figure = image_rows([list(x), list(0.5 + 0.5 * difference / scale), list(adversarial)],
                        row_titles=["image", f"perturbation (x{0.5 / scale:.0f})", f"adversarial, eps={shown:g}"],
                        column_titles=[f"{names[int(a)]} -> {names[int(b)]}" for a, b in zip(before, after)])
    ctx.save_figure("examples", figure, "examples.png")
    return {"method": method, "images": len(labels), "epsilons": epsilons,
            "accuracy": [round(a, 3) for a in curve], "example_epsilon": shown,
            "examples": [{"label": names[int(t)], "clean": names[int(a)], "adversarial": names[int(b)]}
                         for t, a, b in zip(y, before, after)]}


def _plot_curve(ctx: AnalysisContext, epsilons: list[float], curve: list[float], method: str) -> None:
    from callbacks.plotting import new_figure

    figure = new_figure(5, 3.4)
    axis = figure.subplots()
    axis.plot(epsilons, curve, marker="o")
    axis.set_xlabel("epsilon (pixel units, L-inf)")
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, 100)
    axis.set_title(f"{method}: accuracy against perturbation size")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    ctx.save_figure("accuracy", figure, "accuracy_vs_epsilon.png")
