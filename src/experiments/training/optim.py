"""Optimizer and learning-rate schedule from their config groups.

Schedules are written in the config in the unit a paper uses (`unit: epoch | step | fraction` of
training) and run per optimizer step, so a warm-up of a few hundred iterations composes with any
schedule. Warm-up multiplies the lr by `warmup_factor` (constant, as He et al. 2016) or ramps it
linearly from there, then hands over.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from experiments.core.errors import UserError

# Our keys in the optimizer/scheduler groups: read here, never passed to torch.
OPTIMIZER_KEYS = ("exclude_norm_and_bias",)
SCHEDULER_KEYS = ("unit", "warmup_steps", "warmup_factor", "warmup_mode", "monitor")
# Scheduler arguments that are lengths of time, converted from `unit` to optimizer steps.
DURATION_ARGS = ("step_size", "milestones", "T_max", "total_iters", "T_0")
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def parameter_groups(model: nn.Module, weight_decay: float, exclude_norm_and_bias: bool,
                     lr_scales: Mapping[str, float] | None = None) -> list[dict]:
    """One group, or two when norm weights and biases must be spared from weight decay.

    ``lr_scales`` (parameter name -> multiplier, fine-tuning's backbone vs head) splits the groups further
    by multiplier; each such group carries ``lr_scale``, the scale-1 groups come first, and parameters not
    named there are left out (they are frozen).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if lr_scales is not None:
        named = [(n, p) for n, p in named if n in lr_scales]
    params = [p for _, p in named]
    no_decay: set[int] = set()
    if exclude_norm_and_bias:
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                if name == "bias" or isinstance(module, _NORM_TYPES):
                    no_decay.add(id(param))

    def split(members: list[nn.Parameter]) -> list[dict]:
        if not exclude_norm_and_bias:
            return [{"params": members}]
        return [
            {"params": [p for p in members if id(p) not in no_decay], "weight_decay": weight_decay},
            {"params": [p for p in members if id(p) in no_decay], "weight_decay": 0.0},
        ]

    if lr_scales is None:
        return split(params)
    scales = sorted({float(lr_scales[n]) for n, _ in named}, key=lambda s: (s != 1.0, -s))
    groups = []
    for scale in scales:
        for group in split([p for n, p in named if float(lr_scales[n]) == scale]):
            if group["params"]:
                groups.append({**group, "lr_scale": scale})
    return groups


def build_optimizer(cfg: DictConfig, model: nn.Module,
                    lr_scales: Mapping[str, float] | None = None) -> torch.optim.Optimizer:
    """The configured optimizer over ``model``'s trainable parameters; with ``lr_scales`` each group's lr
    is ``optimizer.lr`` times its ``lr_scale`` (schedulers then scale each group's own lr)."""
    from experiments.core.errors import instantiate_or_explain

    settings = OmegaConf.to_container(cfg, resolve=True)
    exclude = bool(settings.pop("exclude_norm_and_bias", False))
    factory = instantiate_or_explain(OmegaConf.create(settings), "optimizer")
    groups = parameter_groups(model, settings.get("weight_decay", 0.0), exclude, lr_scales)
    base_lr = settings.get("lr")
    for group in groups:
        if group.get("lr_scale", 1.0) != 1.0 and isinstance(base_lr, (int, float)):
            group["lr"] = base_lr * group["lr_scale"]
    try:
        return factory(groups)
    except RuntimeError as error:  # torch's own refusals of fused kernels (with foreach, differentiable, ...)
        if not settings.get("fused") or "fused" not in str(error):
            raise
        said = str(error).strip().rstrip(".")
        raise UserError("optimizer.fused", True, f"cannot be used here: {settings.get('_target_')} says "
                        f"\"{said}\".", "Set optimizer.fused=false to use the other options (fused is on by "
                        "default in conf/optimizer/ for speed).") from None
    except (TypeError, ValueError) as error:
        raise UserError("optimizer", settings.get("_target_"), f"rejected its arguments: {error}.",
                        "Check the keys under `optimizer` (python -m experiments.train --cfg job).") from None


def _to_steps(value: Any, unit: str, steps_per_epoch: int, total_steps: int, key: str) -> Any:
    if isinstance(value, (list, tuple)):
        return [_to_steps(v, unit, steps_per_epoch, total_steps, key) for v in value]
    if value is None:
        return None
    scale = {"step": 1, "epoch": steps_per_epoch, "fraction": total_steps}[unit]
    if unit == "fraction" and not 0 < value <= 1:
        raise UserError(f"scheduler.{key}", value, "is a fraction of training and must lie in (0, 1].",
                        "Use e.g. [0.5, 0.75], or set scheduler.unit=epoch for epoch counts.")
    if value <= 0:
        raise UserError(f"scheduler.{key}", value, f"is a length of time in {unit}s and must be positive.",
                        f"Use e.g. scheduler.{key}=30 (scheduler.unit={unit}).")
    steps = max(1, round(value * scale))
    if key in ("milestones", "step_size") and steps > total_steps:
        raise UserError(f"scheduler.{key}", value, f"lies beyond the end of the run ({value} {unit}s = optimizer "
                        f"step {steps}; the run has {total_steps}), so that lr decay would never happen.",
                        "Train longer (trainer.max_epochs), or put the decay inside the run (scheduler.unit=fraction "
                        "takes fractions of training, e.g. [0.5, 0.75]).")
    return steps


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, total_steps: int,
                    steps_per_epoch: int) -> dict | None:
    """A Lightning ``lr_scheduler`` dict for ``configure_optimizers``, or None for a constant lr."""
    from experiments.core.errors import instantiate_or_explain

    settings = OmegaConf.to_container(cfg, resolve=True)
    if not settings.get("_target_"):
        return None
    ours = {key: settings.pop(key) for key in SCHEDULER_KEYS if key in settings}
    if settings["_target_"].endswith("ReduceLROnPlateau"):
        scheduler = instantiate_or_explain(OmegaConf.create(settings), "scheduler")(optimizer)
        return {"scheduler": scheduler, "interval": "epoch", "monitor": ours.get("monitor", "val/err")}
    unit = ours.get("unit", "epoch")
    if unit not in ("epoch", "step", "fraction"):
        raise UserError("scheduler.unit", unit, "is not a unit of time.", "Use epoch, step or fraction.")
    for key in DURATION_ARGS:
        if key in settings:
            settings[key] = _to_steps(settings[key], unit, steps_per_epoch, total_steps, key)
    if "T_max" in settings and settings["T_max"] is None:
        settings["T_max"] = total_steps
    main = instantiate_or_explain(OmegaConf.create(settings), "scheduler")(optimizer)
    warmup_steps = int(ours.get("warmup_steps", 0) or 0)
    _check_warmup_fits(warmup_steps, settings, total_steps)
    if warmup_steps > 0:
        factor = float(ours.get("warmup_factor", 0.1))
        if not 0 < factor <= 1:
            raise UserError("scheduler.warmup_factor", factor, "must be in (0, 1].", "Use e.g. 0.1.")
        mode = ours.get("warmup_mode", "linear")
        if mode == "constant":
            warmup = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=factor, total_iters=warmup_steps)
        elif mode == "linear":
            warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=factor, total_iters=warmup_steps)
        else:
            raise UserError("scheduler.warmup_mode", mode, "is not a warm-up shape.", "Use constant or linear.")
        # Both are chainable: each multiplies the lr the other set, so they compose step by step.
        main = torch.optim.lr_scheduler.ChainedScheduler([warmup, main], optimizer=optimizer)
    return {"scheduler": main, "interval": "step", "frequency": 1}


def _check_warmup_fits(warmup_steps: int, settings: dict, total_steps: int) -> None:
    """A warm-up that outlasts training or a decay milestone silently gives a schedule no paper uses
    (the two multiply: lr/10 x lr/10, then back up x10 when the warm-up ends)."""
    if warmup_steps <= 0:
        return
    if warmup_steps >= total_steps:
        raise UserError("scheduler.warmup_steps", warmup_steps, f"is not shorter than the whole run ({total_steps} "
                        "optimizer steps).", "Shorten the warm-up or train longer (trainer.max_epochs).")
    first_decay = min(settings.get("milestones") or [settings.get("step_size") or total_steps])
    if first_decay <= warmup_steps:
        raise UserError("scheduler.warmup_steps", warmup_steps, f"ends after the first lr decay at optimizer step "
                        f"{first_decay} (of {total_steps}), so the two would overlap.",
                        "Shorten the warm-up or train longer (trainer.max_epochs, or more data per epoch).")


def steps_per_epoch_of(total_steps: int, max_epochs: int | None) -> int:
    if not max_epochs or max_epochs <= 0:
        return max(1, total_steps)
    return max(1, math.ceil(total_steps / max_epochs))
