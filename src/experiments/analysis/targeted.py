"""Targeted adversarial examples: the smallest perturbation that makes a chosen wrong class win.

Szegedy et al. (2014) find, for an image ``x`` and a target class ``t``, the smallest ``r`` with
``f(x + r) = t`` and ``x + r`` a valid image, minimising ``c |r| + loss(x + r, t)`` by box-constrained
L-BFGS (the lecture's "fooling ConvNets" slide). Here the same question is answered per image by a binary
search over the radius ``epsilon`` of a targeted iterative attack (captum's ``MinParamPerturbation``
in ``binary`` mode, to a resolution of ``tolerance``): the smallest radius at which the attack makes the
target the top class. Radii are in PIXEL units ([0, 1] images, the normalisation part of the attacked
function), and the adversarial image stays inside [0, 1].

* ``norm: linf``: captum's PGD with ``targeted=True`` (x' = x - alpha sign(grad of loss(x', t)), then
  projected onto the epsilon ball and [0, 1]): Kurakin et al. (2017)'s iterative target-class method.
  It starts at the image itself, as Kurakin's does, not at a random point of the ball (Madry's
  robustness curve, :mod:`.adversarial`): a random start adds noise the search would then charge to the
  perturbation. Every pixel moves (captum's ``zero_thresh`` set to 0, as in :mod:`.adversarial`).
* ``norm: l2``: captum's PGD with ``norm="L2"`` still steps along ``sign(grad)`` and only projects onto
  the L2 ball, which is not the L2 steepest-descent step (on a linear model it ends in the direction of
  ``sign(w)``, not ``w``, and overstates the minimal L2 distance). So the L2 attack is written here: steps
  along the L2-normalised gradient, projected onto the ball (``torch.renorm``) and [0, 1].

Both take ``steps`` steps of ``2.5 epsilon / steps`` (Madry et al.'s ratio, as :mod:`.adversarial`).
For a linear classifier the search finds the closed-form minimum (the tests check it): to move ``x``
from class ``i`` to ``j`` needs ``(b_i - b_j + (w_i - w_j) x) / ||w_i - w_j||`` in L2, along ``w_j - w_i``,
and the same margin over ``||w_i - w_j||_1`` in L-inf.

Only images the network classifies correctly are attacked (an attack on a mistake measures nothing), and
never toward their own class. Targets (``target``): a class index; ``least_likely``, the class the clean
image gives the lowest probability (Kurakin et al.'s iterative least-likely-class method, the hardest
target); ``runner_up``, its second most probable class (the easiest); ``next``, ``(label + 1) mod
classes`` (a fixed target that needs no model output).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from statistics import median
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt, Le
from torch import nn

from experiments.analysis.adversarial import Normalised
from experiments.analysis.common import AnalysisContext, Count, NonNegativeInt, analysis_mode
from experiments.analysis.figures import image_rows
from experiments.core.errors import UserError

TARGET_RULES = ("least_likely", "runner_up", "next")
Target = NonNegativeInt | Literal["least_likely", "runner_up", "next"]
Norm = Literal["linf", "l2"]


@dataclass
class Found:
    """One image's smallest targeted perturbation (``epsilon`` None when the search failed up to its max)."""

    epsilon: float | None
    adversarial: torch.Tensor | None  # (C, H, W) in [0, 1]

    def norms(self, image: torch.Tensor) -> tuple[float, float] | None:
        """(L-inf, L2) of the perturbation actually found, in pixel units."""
        if self.adversarial is None:
            return None
        delta = (self.adversarial - image).flatten()
        return float(delta.abs().max()), float(delta.norm())


def choose_targets(probabilities: torch.Tensor, labels: torch.Tensor, target: int | str) -> torch.Tensor:
    """The target class of every image under the rule ``target`` (see the module docstring)."""
    classes = probabilities.shape[1]
    if target == "least_likely":
        return probabilities.argmin(dim=1)
    if target == "runner_up":
        ranked = probabilities.argsort(dim=1, descending=True)
        return torch.where(ranked[:, 0] == labels, ranked[:, 1], ranked[:, 0])
    if target == "next":
        return (labels + 1) % classes
    return torch.full_like(labels, int(target))


def targeted_pgd(model: nn.Module, pixels: torch.Tensor, targets: torch.Tensor, epsilon: float, norm: str = "linf",
                 steps: int = 20) -> torch.Tensor:
    """Images in [0, 1] within ``epsilon`` of ``pixels`` (L-inf or L2) pushed toward ``targets``."""
    if epsilon <= 0:
        return pixels.clone()
    step_size = 2.5 * epsilon / steps
    loss = nn.CrossEntropyLoss(reduction="none")  # captum's default loss expects probabilities, not logits
    with torch.enable_grad():
        if norm == "linf":
            from captum.robust import PGD

            attack = PGD(model, loss_func=loss, lower_bound=0.0, upper_bound=1.0)
            attack.fgsm.zero_thresh = 0.0
            with warnings.catch_warnings():  # captum notes that it turned on the inputs' gradients, as asked
                warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
                return attack.perturb(pixels, radius=epsilon, step_size=step_size, step_num=steps, target=targets,
                                      targeted=True, random_start=False)
        # L2 steepest descent, by hand (captum's L2 PGD steps along the sign: see the module docstring).
        adversarial = pixels.clone()
        for _ in range(steps):
            adversarial.requires_grad_(True)
            (grad,) = torch.autograd.grad(loss(model(adversarial), targets).sum(), adversarial)
            length = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.ndim - 1))
            moved = adversarial.detach() - step_size * grad / length
            adversarial = (pixels + torch.renorm(moved - pixels, 2, 0, epsilon)).clamp(0.0, 1.0)
        return adversarial.detach()


def smallest_targeted(model: nn.Module, pixels: torch.Tensor, targets: torch.Tensor, norm: str = "linf",
                      max_epsilon: float = 1.0, tolerance: float = 1e-3, steps: int = 20) -> list[Found]:
    """Per image, the smallest ``epsilon`` (to ``tolerance``, at most ``max_epsilon``) at which
    :func:`targeted_pgd` makes its target the top class of ``model`` (a function of [0, 1] images)."""
    from captum.robust import MinParamPerturbation

    def attack(inputs: torch.Tensor, epsilon: float, target: torch.Tensor) -> torch.Tensor:
        return targeted_pgd(model, inputs, target, float(epsilon), norm, steps)

    def resists(outputs: torch.Tensor, target: torch.Tensor) -> bool:  # captum's "still correct"
        return bool((outputs.argmax(dim=1) != target).all())

    search = MinParamPerturbation(forward_func=model, attack=attack, arg_name="epsilon", arg_min=0.0,
                                  arg_max=float(max_epsilon) + tolerance, arg_step=float(tolerance), mode="binary",
                                  correct_fn=resists)
    found = []
    with torch.no_grad():
        for image, target in zip(pixels, targets):
            x, t = image.unsqueeze(0), target.view(1)
            adversarial, epsilon = search.evaluate(x, attack_kwargs={"target": t}, correct_fn_kwargs={"target": t})
            found.append(Found(None if epsilon is None else float(epsilon),
                               None if adversarial is None else adversarial[0].detach()))
    return found


def run(ctx: AnalysisContext, target: Target = "least_likely", norm: Norm = "linf",
        max_epsilon: Annotated[float, Gt(0)] | None = None, tolerance: Annotated[float, Gt(0), Le(0.1)] = 1e-3,
        steps: Count = 20, num_images: Count = 32, split: str = "test",
        num_examples: Annotated[int, Ge(0)] = 6) -> dict:
    names = ctx.class_names
    if isinstance(target, int) and not 0 <= target < len(names):
        raise UserError(f"analysis.{ctx.name}.target", target, f"is not a class index (0..{len(names) - 1}).",
                        f"Use a class index or one of {', '.join(TARGET_RULES)}.")
    if norm == "linf" and max_epsilon is not None and max_epsilon > 1:
        raise UserError(f"analysis.{ctx.name}.max_epsilon", float(max_epsilon), "is an L-inf radius past the whole "
                        "[0, 1] pixel range (1 already reaches every image) and would only make the attack's steps "
                        "coarser.", "Use a value <= 1 (or null), or norm=l2 for an L2 radius.")
    _, display, labels = ctx.images(num_images, split)
    pixels_total = display[0].numel()
    ceiling = 1.0 if norm == "linf" else pixels_total ** 0.5  # the whole [0, 1] cube: any image is reachable
    limit = float(max_epsilon) if max_epsilon is not None else ceiling
    mean, std = ctx.mean_std(display)
    attacked = Normalised(ctx.model, mean, std)
    with analysis_mode(ctx.model):
        with torch.no_grad():
            clean = attacked(display).softmax(dim=1)
        targets = choose_targets(clean, labels, target)
        chosen = ((clean.argmax(dim=1) == labels) & (targets != labels)).nonzero().flatten()
        x, y, t = display[chosen], labels[chosen], targets[chosen]
        found = smallest_targeted(attacked, x, t, norm, limit, tolerance, steps)
        adversarial = torch.stack([f.adversarial if f.adversarial is not None else image
                                   for f, image in zip(found, x)]) if found else x.clone()
        with torch.no_grad():
            after = attacked(adversarial).softmax(dim=1) if len(chosen) else clean[:0]
    records = []
    for k, (f, image) in enumerate(zip(found, x)):
        norms = f.norms(image)
        records.append({"index": int(chosen[k]), "label": names[int(y[k])], "target": names[int(t[k])],
                        "success": f.epsilon is not None, "epsilon": f.epsilon,
                        "linf": None if norms is None else round(norms[0], 5),
                        "l2": None if norms is None else round(norms[1], 5),
                        "target_probability_before": round(float(clean[chosen[k], t[k]]), 5),
                        "target_probability_after": round(float(after[k, t[k]]), 5),
                        "top_class_after": names[int(after[k].argmax())]})
    wins = [r for r in records if r["success"]]
    _plot_examples(ctx, x, adversarial, y, t, clean[chosen], after, found, num_examples, norm)
    return {"norm": norm, "target": target, "max_epsilon": limit, "tolerance": tolerance, "steps": steps,
            "images": len(labels), "attacked": len(records),
            "skipped_misclassified": int((clean.argmax(dim=1) != labels).sum()),
            "skipped_target_is_label": int(((clean.argmax(dim=1) == labels) & (targets == labels)).sum()),
            "success_rate": round(100.0 * len(wins) / max(1, len(records)), 3),
            "median_smallest_linf": round(median(r["linf"] for r in wins), 5) if wins else None,
            "median_smallest_l2": round(median(r["l2"] for r in wins), 5) if wins else None,
            "median_smallest_epsilon": round(median(r["epsilon"] for r in wins), 5) if wins else None,
            "per_image": records}


def _plot_examples(ctx: AnalysisContext, x: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor,
                   targets: torch.Tensor, clean: torch.Tensor, after: torch.Tensor, found: list[Found],
                   count: int, norm: str) -> None:
    """Original, amplified perturbation and adversarial image of the first ``count`` successes (or, when
    none succeeded, of the first images attacked)."""
    names = ctx.class_names
    wins = [k for k, f in enumerate(found) if f.epsilon is not None]
    shown = (wins or list(range(len(found))))[:count]
    if not shown:
        return
    rows: list[list[torch.Tensor]] = [[], [], []]
    titles: list[list[str]] = [[], [], []]
    for k in shown:
        delta = adversarial[k] - x[k]
        scale = max(float(delta.abs().max()), 1e-12)
        rows[0].append(x[k])
        rows[1].append(0.5 + 0.5 * delta / scale)
        rows[2].append(adversarial[k])
        label, target = int(labels[k]), int(targets[k])
        titles[0].append(f"{names[label]} {float(clean[k, label]):.0%}")
        norms = found[k].norms(x[k])
        titles[1].append(f"x{0.5 / scale:.0f}  Linf {norms[0]:.3f}  L2 {norms[1]:.2f}" if norms else "not found")
        titles[2].append(f"{names[int(after[k].argmax())]} {float(after[k].max()):.0%} (target {names[target]})")
    figure = image_rows(rows, row_titles=["image", "perturbation", "adversarial"], tile_titles=titles, tile=1.9,
                        title=f"smallest targeted {norm.upper().replace('LINF', 'L-inf')} perturbations (pixel units)")
    ctx.save_figure("examples", figure, "targeted_examples.png")
