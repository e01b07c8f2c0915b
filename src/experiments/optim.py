"""Optimizer and learning-rate schedule from their config groups.

Schedules are written in the config in the unit a paper uses (`unit: epoch | step | fraction` of
training) and run per optimizer step, so a warm-up of a few hundred iterations composes with any
schedule. Warm-up multiplies the lr by `warmup_factor` (constant, as He et al. 2016) or ramps it
linearly from there, then hands over.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from experiments.errors import UserError

# Our keys in the optimizer/scheduler groups: read here, never passed to torch.
OPTIMIZER_KEYS = ("exclude_norm_and_bias",)
SCHEDULER_KEYS = ("unit", "warmup_steps", "warmup_factor", "warmup_mode", "monitor")
# Scheduler arguments that are lengths of time, converted from `unit` to optimizer steps.
DURATION_ARGS = ("step_size", "milestones", "T_max", "total_iters", "T_0")
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def parameter_groups(model: nn.Module, weight_decay: float, exclude_norm_and_bias: bool) -> list[dict]:
    """One group, or two when norm weights and biases must be spared from weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not exclude_norm_and_bias:
        return [{"params": params}]
    no_decay: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if name == "bias" or isinstance(module, _NORM_TYPES):
                no_decay.add(id(param))
    return [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]


def build_optimizer(cfg: DictConfig, model: nn.Module) -> torch.optim.Optimizer:
    from experiments.build import instantiate_or_explain

    settings = OmegaConf.to_container(cfg, resolve=True)
    exclude = bool(settings.pop("exclude_norm_and_bias", False))
    factory = instantiate_or_explain(OmegaConf.create(settings), "optimizer")
    groups = parameter_groups(model, settings.get("weight_decay", 0.0), exclude)
    try:
        return factory(groups)
    except (TypeError, ValueError) as error:
        raise UserError("optimizer", settings.get("_target_"), f"rejected its arguments: {error}.",
                        "Check the keys under `optimizer` (python -m experiments.train --cfg job).") from None


def _to_steps(value: Any, unit: str, steps_per_epoch: int, total_steps: int, key: str) -> Any:
    if isinstance(value, (list, tuple)):
        return [_to_steps(v, unit, steps_per_epoch, total_steps, key) for v in value]
    if value is None:
        return None
    scale = {"step": 1, "epoch": steps_per_epoch, "fraction": total_steps}[unit]
    if unit == "fraction" and not 0 <= value <= 1:
        raise UserError(f"scheduler.{key}", value, "is a fraction of training and must lie in [0, 1].",
                        "Use e.g. [0.5, 0.75], or set scheduler.unit=epoch for epoch counts.")
    return max(1, round(value * scale))


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer, total_steps: int,
                    steps_per_epoch: int) -> dict | None:
    """A Lightning ``lr_scheduler`` dict for ``configure_optimizers``, or None for a constant lr."""
    from experiments.build import instantiate_or_explain

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


def steps_per_epoch_of(total_steps: int, max_epochs: int | None) -> int:
    if not max_epochs or max_epochs <= 0:
        return max(1, total_steps)
    return max(1, math.ceil(total_steps / max_epochs))
