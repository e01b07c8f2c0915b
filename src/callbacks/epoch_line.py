"""One line per epoch: train and validation error, the best so far, the learning rate, the time."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only


class EpochLine(pl.Callback):
    def __init__(self) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        m = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1:>3}/{trainer.max_epochs}"]
        for key, label in (("train/err", "train err"), ("val/err", "val err"), ("val/err_best", "best")):
            if key in m:
                parts.append(f"{label} {float(m[key]):6.2f}%")
        if "train/loss" in m:
            parts.append(f"loss {float(m['train/loss']):.4f}")
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.3g}")
        parts.append(f"{time.perf_counter() - self._start:5.1f}s")
        line = "  ".join(parts)
        progress = trainer.progress_bar_callback
        if progress is not None and hasattr(progress, "_console") and progress._console is not None:
            progress._console.print(line)  # above the live rich bar, not through it
        else:
            print(line, flush=True)
