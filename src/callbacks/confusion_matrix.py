"""Per-class errors on the validation set: which classes the network confuses with which.

The confusion matrix is accumulated on the device from the logits the validation steps already
computed (:class:`callbacks.capture.ValidationTap`) and summed over DDP ranks. Every validation epoch
this logs ``val_class_err/<class>`` (error in % of that class's validation images); every
``every_n_epochs`` epochs and after training it draws the row-normalised matrix to
``plots/confusion/epochNNN.png`` (and the ``confusion_matrix`` image in TensorBoard/W&B). The counts of
the last validation epoch are in ``diagnostics/confusion_matrix.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from callbacks import media, plotting
from callbacks.capture import ValidationTap

JSON_FILE = "confusion_matrix.json"


def class_names(trainer: pl.Trainer, count: int) -> list[str]:
    """The datamodule's ``classes`` when it has them, else "0", "1", ..."""
    names = getattr(trainer.datamodule, "classes", None) if trainer.datamodule is not None else None
    if names is not None and len(names) == count:
        return [str(n) for n in names]
    return [str(i) for i in range(count)]


def num_classes_of(trainer: pl.Trainer, pl_module: pl.LightningModule) -> int | None:
    for owner in (pl_module, trainer.datamodule):
        value = getattr(owner, "num_classes", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def per_class_error(matrix: torch.Tensor) -> torch.Tensor:
    """Error in % per true class (rows); NaN for a class with no validation image."""
    matrix = matrix.double()
    totals = matrix.sum(dim=1)
    correct = matrix.diagonal()
    return torch.where(totals > 0, 100 * (1 - correct / totals.clamp_min(1)), torch.full_like(totals, float("nan")))


class ConfusionMatrix(pl.Callback):
    def __init__(self, every_n_epochs: int = 5, max_classes_to_draw: int = 30) -> None:
        """
        Args:
            every_n_epochs: draw the matrix after every n-th validation epoch (0: only after training).
            max_classes_to_draw: above this many classes, draw only the classes with the highest errors.
        """
        self.every_n_epochs = int(every_n_epochs)
        self.max_classes_to_draw = int(max_classes_to_draw)
        self.matrix: torch.Tensor | None = None  # the last complete validation epoch's, on the CPU
        self.errors: dict[str, float] = {}
        self._tap = ValidationTap()
        self._running: torch.Tensor | None = None
        self._classes = 0
        self._drawn_epoch: int | None = None
        self._epoch: int | None = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._classes = num_classes_of(trainer, pl_module) or 0
        if trainer.sanity_checking or not self._classes:
            return
        self._running = torch.zeros(self._classes * self._classes, dtype=torch.long, device=pl_module.device)
        self._tap.start(pl_module)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._running is None:
            return
        got = self._tap.take(batch)
        if got is None:
            return
        _, logits, labels = got
        index = labels.to(self._running.device) * self._classes + logits.argmax(dim=1).to(self._running.device)
        self._running += torch.bincount(index, minlength=self._classes * self._classes)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._tap.stop()
        if self._running is None:
            return
        running, self._running = self._running, None
        if trainer.world_size > 1:  # every rank runs this hook: the reduction is not inside rank-zero code
            running = trainer.strategy.reduce(running, reduce_op="sum")
        if not trainer.is_global_zero:
            return
        self.matrix = running.view(self._classes, self._classes).cpu()
        self._epoch = trainer.current_epoch
        names = class_names(trainer, self._classes)
        errors = per_class_error(self.matrix).tolist()
        self.errors = dict(zip(names, errors))
        media.log_scalars(trainer, {f"val_class_err/{n}": e for n, e in self.errors.items() if e == e})
        self._write_json(trainer, names)
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.plot(trainer)

    def _write_json(self, trainer: pl.Trainer, names: list[str]) -> None:
        """The counts themselves, for tools that read run folders (rows: true class, columns: predicted)."""
        folder = media.run_dir(trainer) / media.DIAGNOSTICS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        record = {"epoch": trainer.current_epoch, "classes": names, "matrix": self.matrix.tolist(),
                  "class_error_pct": [e if e == e else None for e in (self.errors[n] for n in names)]}
        (folder / JSON_FILE).write_text(json.dumps(record) + "\n")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.plot(trainer)

    def plot(self, trainer: pl.Trainer) -> Path | None:
        if self.matrix is None or self._drawn_epoch == self._epoch:
            return None
        self._drawn_epoch = self._epoch
        names = class_names(trainer, self._classes)
        matrix = self.matrix.double()
        rows = 100 * matrix / matrix.sum(dim=1, keepdim=True).clamp_min(1)
        errors = per_class_error(self.matrix)
        keep = list(range(self._classes))
        if self._classes > self.max_classes_to_draw:  # the worst classes, in class order
            keep = sorted(torch.nan_to_num(errors, nan=-1).argsort(descending=True)[: self.max_classes_to_draw].tolist())
            rows = rows[keep][:, keep]
        size = max(4.8, 0.45 * len(keep) + 2)
        figure = plotting.new_figure(size + 1.2, size)
        axes = figure.add_subplot()
        image = axes.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=100)
        figure.colorbar(image, ax=axes, label="% of the true class")
        labels = [f"{names[i]} ({errors[i]:.1f}%)" for i in keep]
        axes.set_yticks(range(len(keep)), labels, fontsize=7)
        axes.set_xticks(range(len(keep)), [names[i] for i in keep], rotation=90, fontsize=7)
        axes.set_ylabel("true class (its error)")
        axes.set_xlabel("predicted class")
        if len(keep) <= 15:
            for r in range(len(keep)):
                for c in range(len(keep)):
                    value = float(rows[r, c])
                    if value >= 0.5:
                        axes.text(c, r, f"{value:.0f}", ha="center", va="center", fontsize=6,
                                  color="white" if value > 50 else "black")
        epochs_done = (self._epoch or 0) + 1
        axes.set_title(f"validation confusion matrix after epoch {epochs_done}")
        figure.tight_layout()
        return media.log_figure(trainer, "confusion_matrix", figure, f"confusion/epoch{epochs_done:03d}.png")
