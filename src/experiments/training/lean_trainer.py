"""A Trainer without the per-step work that buys nothing: idle callback hooks, the default profiler's
context per hook call, and a progress bar redrawn after every batch (issue 19: per-step overhead).

``build.build_trainer`` applies :func:`streamline` to every Trainer it makes and adds the throttled bar
when the output is a terminal.
"""

from __future__ import annotations

import contextlib
import math
import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from pytorch_lightning.profilers import PassThroughProfiler

# --- trainer construction: what Lightning spends per step that buys nothing here (issue 19) ------------
# Per-step callback hooks Lightning calls on EVERY callback, overridden or not. Each call costs ~1.5 us of
# Python (a profiler context, an f-string of the callback's state_key, the call of an empty method), a
# few dozen times a step with a dozen callbacks; Lightning skips a hook attribute that is not callable.
PER_STEP_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
                  "on_before_optimizer_step", "on_before_zero_grad", "on_validation_batch_start",
                  "on_validation_batch_end", "on_test_batch_start", "on_test_batch_end",
                  "on_predict_batch_start", "on_predict_batch_end")


class NoProfiler(PassThroughProfiler):
    """Lightning's default (no profiling) without a new generator-based context per hook call (~0.7 us,
    some 30 times a step): every ``profile()`` hands out one shared no-op context."""

    _context = contextlib.nullcontext()

    def profile(self, action_name: str):  # type: ignore[override]
        return self._context


def streamline(trainer: pl.Trainer) -> None:
    """Make ``trainer`` skip the per-step work that does nothing: callback hooks that are not overridden
    (or are Lightning no-ops in the configuration at hand) and the default profiler's context per hook.

    Lightning has no option for either (``barebones=True`` turns off logging and checkpoints instead),
    so the callbacks' idle hooks are set to ``None`` on the instances (Lightning then skips them) and
    the do-nothing profiler is swapped for :class:`NoProfiler`. A profiler asked for
    (``trainer.profiler=simple``) is kept, and then sees every hook as before.
    """
    if type(trainer.profiler) is not PassThroughProfiler:
        return
    trainer.profiler = NoProfiler()
    for callback in trainer.callbacks:
        for hook in PER_STEP_HOOKS:
            if idle_hook(callback, hook):
                setattr(callback, hook, None)


def idle_hook(callback: pl.Callback, hook: str) -> bool:
    """True when calling ``callback.<hook>`` can do nothing: not overridden, or a known no-op setting."""
    method = getattr(type(callback), hook, None)
    if method is None or method is getattr(pl.Callback, hook):
        return True
    if isinstance(callback, ModelCheckpoint) and hook == "on_train_batch_end":
        # It saves every n training steps or every time interval; with neither set it returns at once.
        steps = getattr(callback, "_every_n_train_steps", None)
        return isinstance(steps, int) and steps < 1 and getattr(callback, "_train_time_interval", 0) is None
    if isinstance(callback, LearningRateMonitor) and hook == "on_train_batch_start":
        return callback.logging_interval == "epoch"  # it logs per step only for "step" or None
    return False


class ThrottledRichProgressBar(RichProgressBar):
    """Lightning's Rich progress bar, redrawn at most every ``interval`` seconds during training.

    Lightning's redraws the bar and its metrics after every training batch (``refresh_rate`` only turns
    it on or off): measured ~0.3 ms a step on this project's CPU, more than a small model's whole step on
    a GPU. The last batch of an epoch is always drawn, so the bar ends complete.
    """

    def __init__(self, interval: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.interval = float(interval)
        self._drawn_at = -math.inf

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        now = time.monotonic()
        if now - self._drawn_at < self.interval and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        self._drawn_at = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
