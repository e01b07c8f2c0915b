"""Stop a diverging run cleanly, before the step that would put NaN/inf into the weights.

A non-finite loss (or non-finite gradients) is checked right before the optimizer step. When it is
found, the step is skipped (every gradient is set to ``None``, which torch optimizers skip: weights,
momentum and Adam moments stay as they were), the trainer is told to stop (``trainer.should_stop``,
so Lightning ends the run normally instead of crashing), and a message says what happened and what
to try. So no checkpoint written afterwards holds NaN weights. And because the weights of a run that
just produced a NaN loss are not good ones either, the ``last.ckpt`` that existed when divergence was
detected is put back in place at the end of fit: "last" stays the last good checkpoint.

Under fp16 mixed precision inf/NaN gradients are routine (the grad scaler skips those steps and lowers
its scale), so there only the loss is checked. Under DDP the decision is reduced over ranks, so every
rank stops at the same step. A stopped run has ``diagnostics/nonfinite_stop.json`` in its folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from callbacks import media

log = logging.getLogger("callbacks")

_KEPT_SUFFIX = ".good"
STOP_FILE = "nonfinite_stop.json"


class NonFiniteGuard:
    """The guard's state and checks; :class:`callbacks.gradient_flow.GradientFlow` calls its hooks."""

    def __init__(self, check_every_n_steps: int = 1) -> None:
        self.check_every_n_steps = max(1, int(check_every_n_steps))
        self.stopped_at: int | None = None  # global step of the skipped update
        self.message: str | None = None
        self._loss: torch.Tensor | None = None
        self._kept: list[tuple[Path, Path]] = []  # (moved last checkpoint, its own path)

    def before_backward(self, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def before_optimizer_step(self, trainer: pl.Trainer, optimizer: torch.optim.Optimizer) -> bool:
        """Check the step about to be taken; returns True (and cancels it) when it is not finite."""
        if self.stopped_at is not None:
            _drop_gradients(optimizer)  # a later optimizer of the same step, or a step before stopping
            return True
        if trainer.global_step % self.check_every_n_steps:
            return False
        bad = self._is_bad(trainer, optimizer)
        if trainer.world_size > 1:  # collective: every rank runs this hook on every step
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return False
        _drop_gradients(optimizer)
        loss = float(self._loss) if self._loss is not None else math.nan
        self.stopped_at = trainer.global_step
        trainer.should_stop = True
        if trainer.is_global_zero:
            self._keep_last_checkpoints(trainer)
            kept = ", ".join(str(p) for _, p in self._kept) or "none had been saved yet"
            self.message = (
                f"Non-finite training loss/gradients (loss = {loss}) at epoch {trainer.current_epoch}, step "
                f"{trainer.global_step}: the training diverged, so the run stops here and this update was not "
                f"applied (the weights stay finite). Last good checkpoint kept: {kept}. Usual causes: a "
                "too-high learning rate (try 10x lower, or a warm-up), no gradient clipping "
                "(trainer.gradient_clip_val), fp16 overflow, or bad inputs (NaN in the data).")
            log.error(self.message)
            self._record(trainer, loss, kept)
            media.log_scalars(trainer, {"alerts/nonfinite_loss": 1.0})
            media.log_text(trainer, "alerts/nonfinite_loss", self.message)
        return True

    def _record(self, trainer: pl.Trainer, loss: float, kept: str) -> None:
        """``diagnostics/nonfinite_stop.json``: tools that read run folders can tell a diverged run apart."""
        folder = media.run_dir(trainer) / media.DIAGNOSTICS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        record = {"epoch": trainer.current_epoch, "step": trainer.global_step,
                  "loss": None if math.isnan(loss) else str(loss), "kept_checkpoints": kept, "message": self.message}
        (folder / STOP_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def _is_bad(self, trainer: pl.Trainer, optimizer: torch.optim.Optimizer) -> bool:
        checks = []
        if self._loss is not None:
            checks.append(torch.isfinite(self._loss).all())
        if str(trainer.precision) != "16-mixed":
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                norms = torch._foreach_norm(grads)
                checks.append(torch.isfinite(torch.stack([n.float() for n in norms])).all())
        if not checks:
            return False
        ok = torch.stack([c.to(checks[0].device) for c in checks]).all()
        return not bool(ok)  # the one host sync of the guard

    def _keep_last_checkpoints(self, trainer: pl.Trainer) -> None:
        """Move aside every checkpoint that holds the latest state (``last.ckpt`` whether written by
        ``save_last`` or by a monitor-less checkpoint callback); :meth:`fit_end` puts them back over
        whatever is saved after the divergence."""
        paths: set[Path] = set()
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint):
                continue
            if callback.last_model_path:
                paths.add(Path(callback.last_model_path))
            if callback.monitor is None and callback.best_model_path:
                paths.add(Path(callback.best_model_path))
            if callback.dirpath:
                paths.add(Path(callback.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}")
        for path in sorted(paths):
            if path.is_file() and not path.is_symlink():
                aside = path.with_name(path.name + _KEPT_SUFFIX)
                os.replace(path, aside)
                self._kept.append((aside, path))

    def fit_end(self, trainer: pl.Trainer) -> None:
        """After the final checkpoints were written: restore the last good ones."""
        for aside, path in self._kept:
            if aside.is_file():
                os.replace(aside, path)
        self._kept.clear()


def _drop_gradients(optimizer: torch.optim.Optimizer) -> None:
    for group in optimizer.param_groups:
        for param in group["params"]:
            param.grad = None

