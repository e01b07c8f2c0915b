"""Lesion study: residual networks behave like ensembles of shallow paths (Veit, Wilber & Belongie 2016).

At test time, with the trained weights, blocks are deleted one at a time and then several at random
(``1..max_deleted`` blocks, ``draws`` different random sets of each size from a seeded generator, or
every set when there are fewer), and the test
error is measured each time. Deleting a residual block removes its residual branch: the block outputs
its shortcut, ``relu(x)`` = ``x`` for a post-activation block (its input is already rectified) and ``x``
for a pre-activation one. As in Veit et al., only blocks that keep the shape of their input are deleted;
downsampling blocks (stride 2 or more channels, with a projection or option-A shortcut) are kept, since
without them the following blocks would not receive maps of the size they were trained on. With option C
(a projection on every block) a shape-keeping block outputs its projected shortcut.

For the plain twin (``model.residual=false``) deleting a block replaces the whole block by the identity
where the shapes allow: there is no other path for the signal, and the error should jump to about chance
even for one block, where a ResNet's error rises smoothly with the number deleted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from experiments.analysis.common import AnalysisContext, Count, Logits, NonNegativeInt, analysis_mode
from experiments.core.errors import UserError


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, block) of every ResNet block (``models.resnet.ResidualBlock``, residual or plain), in order."""
    from models.resnet import ResidualBlock

    return [(n, m) for n, m in model.named_modules() if isinstance(m, ResidualBlock)]


def shape_keeping(model: nn.Module, blocks: Sequence[tuple[str, nn.Module]], x: torch.Tensor) -> dict[str, bool]:
    """Whether each block's output has its input's shape (found by running ``x[:1]`` through the model)."""
    shapes: dict[str, bool] = {}

    def compare(name: str, inputs: tuple, output: torch.Tensor) -> None:  # a hook returning a value replaces the output
        shapes.setdefault(name, tuple(inputs[0].shape) == tuple(output.shape))

    handles = [block.register_forward_hook(lambda m, inputs, output, name=name: compare(name, inputs, output))
               for name, block in blocks]
    try:
        with analysis_mode(model), torch.no_grad():
            Logits(model)(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return {name: shapes.get(name, False) for name, _ in blocks}


def _zero_branch(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@contextmanager
def deleted(blocks: Sequence[nn.Module]) -> Iterator[None]:
    """The blocks deleted for the duration: a residual block's branch outputs zero (the block outputs its
    shortcut), a plain block is the identity. Shape-keeping blocks only; restored afterwards."""
    patched: list[tuple[nn.Module, str]] = []
    try:
        for block in blocks:
            attribute = "branch" if getattr(block, "residual", True) else "forward"
            setattr(block, attribute, _zero_branch if attribute == "branch" else _identity)  # shadows the method
            patched.append((block, attribute))
        yield
    finally:
        for block, attribute in patched:
            block.__dict__.pop(attribute, None)


def error_rate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 error (%) of the model as it is now."""
    wrong = 0
    with analysis_mode(model), torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = Logits(model)(images[start:start + batch_size])
            wrong += int((logits.argmax(1) != labels[start:start + batch_size]).sum())
    return 100.0 * wrong / max(1, len(images))


def lesion_study(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, max_deleted: int = 10,
                 draws: int = 5, seed: int = 0) -> dict:
    """Errors with no block deleted, each shape-keeping block deleted alone, and random sets of 1..k."""
    blocks = residual_blocks(model)
    if not blocks:
        raise UserError("analysis", "lesion", f"deletes ResNet blocks, and {type(model).__name__} has none.",
                        "Analyse a run of a ResNet or its plain twin (model=resnet20, resnet56, plain20, ...).")
    keeps = shape_keeping(model, blocks, images)
    deletable = [(n, b) for n, b in blocks if keeps[n]]
    if not deletable:
        raise UserError("analysis", "lesion", "found no block that keeps the shape of its input: every block of "
                        f"this {type(model).__name__} downsamples.", "Use a deeper ResNet (e.g. resnet20).")
    residual = bool(getattr(deletable[0][1], "residual", True))
    baseline = error_rate(model, images, labels)
    single = []
    for name, block in deletable:
        with deleted([block]):
            single.append({"block": name, "error": round(error_rate(model, images, labels), 3)})
    rng = np.random.default_rng(seed)
    random_sets = []
    for count in range(1, min(max_deleted, len(deletable)) + 1):
        errors, sets = [], []
        for chosen in _subsets(len(deletable), count, draws, rng):
            with deleted([deletable[i][1] for i in chosen]):
                errors.append(round(error_rate(model, images, labels), 3))
            sets.append([deletable[i][0] for i in chosen])
        random_sets.append({"deleted": count, "errors": errors, "mean_error": round(float(np.mean(errors)), 3),
                            "std_error": round(float(np.std(errors)), 3), "blocks": sets})
    return {"residual": residual, "blocks": [n for n, _ in blocks], "deletable": [n for n, _ in deletable],
            "kept": [{"block": n, "reason": "changes the shape (downsampling block): kept, as in Veit et al."}
                     for n, _ in blocks if not keeps[n]],
            "deletion": "residual branch -> 0 (the block outputs its shortcut)" if residual
            else "whole block -> identity (plain network: no shortcut)",
            "baseline_error": round(baseline, 3), "single": single, "random": random_sets}


def _subsets(total: int, size: int, draws: int, rng: np.random.Generator) -> list[list[int]]:
    """``draws`` different random sets of ``size`` of ``range(total)``, or all of them when there are fewer."""
    if math.comb(total, size) <= draws:
        return [list(c) for c in itertools.combinations(range(total), size)]
    chosen: list[list[int]] = []
    while len(chosen) < draws:
        subset = sorted(rng.choice(total, size=size, replace=False).tolist())
        if subset not in chosen:
            chosen.append(subset)
    return chosen


def run(ctx: AnalysisContext, num_images: Count = 2000, split: str = "test", max_deleted: NonNegativeInt = 10,
        draws: Count = 5, seed: NonNegativeInt = 0) -> dict:
    images, _, labels = ctx.images(num_images, split)
    study = lesion_study(ctx.model, images, labels, int(max_deleted), int(draws), int(seed))
    classes = len(ctx.class_names)
    study.update({"split": split, "images": len(labels), "draws": int(draws), "seed": int(seed),
                  "chance_error": round(100.0 * (1 - 1 / classes), 3)})
    _plot(ctx, study)
    return study


def _plot(ctx: AnalysisContext, study: dict) -> None:
    from callbacks.plotting import new_figure

    kind = "ResNet" if study["residual"] else "plain net"
    figure = new_figure(10, 3.8)
    left, right = figure.subplots(1, 2)
    names = [s["block"] for s in study["single"]]
    left.plot(range(len(names)), [s["error"] for s in study["single"]], marker="o", label="block deleted")
    left.set_xticks(range(len(names)))
    left.set_xticklabels(names, rotation=90, fontsize=6)
    left.set_ylabel("test error (%)")
    left.set_title(f"{kind}: one block deleted", fontsize=9)
    counts = [0] + [r["deleted"] for r in study["random"]]
    means = [study["baseline_error"]] + [r["mean_error"] for r in study["random"]]
    stds = [0.0] + [r["std_error"] for r in study["random"]]
    for r in study["random"]:
        right.scatter([r["deleted"]] * len(r["errors"]), r["errors"], s=8, alpha=0.4, color="grey")
    right.errorbar(counts, means, yerr=stds, marker="o", capsize=3, label="mean of random draws")
    right.set_xlabel("blocks deleted")
    right.set_ylabel("test error (%)")
    right.set_title(f"{kind}: random blocks deleted (Veit et al. 2016, Fig. 5)", fontsize=9)
    for axis in (left, right):
        axis.axhline(study["baseline_error"], color="green", linestyle="--", linewidth=1, label="nothing deleted")
        axis.axhline(study["chance_error"], color="red", linestyle=":", linewidth=1, label="chance")
        axis.set_ylim(0, 100)
        axis.grid(alpha=0.3)
    right.legend(fontsize=7)
    figure.tight_layout()
    ctx.save_figure("lesion", figure, "lesion.png")
