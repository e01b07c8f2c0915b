"""Training and validation (and test) error per epoch, drawn as the papers draw it.

He et al. 2015 (Fig. 4, 6): thin curves for training error, bold curves for validation/test error,
error in percent against epochs. The curve is ``plots/error_curves.png`` in the run folder (rewritten
every ``every_n_epochs`` epochs, after training and after testing) and an ``error_curves`` image in
TensorBoard and W&B. The history comes from the metrics the module logs (``train/err``, ``val/err``,
``test/err``); a resumed run starts from the epochs already in its ``metrics.csv``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from callbacks import media, plotting

FILENAME = "error_curves.png"


def _value(metrics: dict, key: str) -> float | None:
    if key not in metrics:
        return None
    value = float(metrics[key])
    return value if math.isfinite(value) else None


def read_history(metrics_csv: Path, keys: tuple[str, ...], through_epoch: int) -> dict[str, dict[int, float]]:
    """Per-epoch values of ``keys`` from a run's metrics.csv (epochs <= ``through_epoch``)."""
    history: dict[str, dict[int, float]] = {k: {} for k in keys}
    if not metrics_csv.is_file():
        return history
    with metrics_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            if epoch > through_epoch:
                continue
            for key in keys:
                if row.get(key):
                    history[key][epoch] = float(row[key])
    return history


class ErrorCurves(pl.Callback):
    KEYS = ("train/err", "val/err", "test/err")

    def __init__(self, every_n_epochs: int = 5, filename: str = FILENAME) -> None:
        """
        Args:
            every_n_epochs: redraw after every n-th epoch (0: only after training and testing).
            filename: the PNG's name under ``plots/``.
        """
        self.every_n_epochs = int(every_n_epochs)
        self.filename = filename
        # key -> {epoch (0-based) -> error %}
        self.history: dict[str, dict[int, float]] = {k: {} for k in self.KEYS}
        self._drawn: tuple = ()

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Not on_fit_start: a resumed run's epoch counter is restored only after that hook.
        if trainer.current_epoch > 0:  # resumed: the finished epochs are in metrics.csv
            previous = read_history(media.run_dir(trainer) / "metrics.csv", self.KEYS, trainer.current_epoch - 1)
            for key, values in previous.items():
                self.history[key].update(values)

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here, not at epoch end: with check_val_every_n_epoch > 1 the epoch-end value would be stale.
        value = _value(trainer.callback_metrics, "val/err")
        if value is not None and not trainer.sanity_checking:
            self.history["val/err"][trainer.current_epoch] = value

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = _value(trainer.callback_metrics, "train/err")  # aggregated over the epoch by now
        if value is not None:
            self.history["train/err"][trainer.current_epoch] = value
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.plot(trainer)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.plot(trainer)

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = _value(trainer.callback_metrics, "test/err")
        if value is not None:
            last_epoch = max((e for v in self.history.values() for e in v), default=trainer.current_epoch)
            self.history["test/err"][last_epoch] = value
            self.plot(trainer)

    def plot(self, trainer: pl.Trainer) -> Path | None:
        """Draw and log the curves; skipped when nothing changed since the last drawing."""
        state = tuple(sorted((k, e, v) for k, values in self.history.items() for e, v in values.items()))
        if not state or state == self._drawn:
            return None
        self._drawn = state
        from matplotlib.ticker import MaxNLocator

        figure = plotting.new_figure(6.4, 4.0)
        axes = figure.add_subplot()
        styles = {"train/err": ("train", 0.8, "C0"), "val/err": ("validation", 2.5, "C1"),
                  "test/err": ("test", 2.5, "C3")}
        for key, (label, width, colour) in styles.items():
            points = sorted(self.history[key].items())
            if not points:
                continue
            epochs = [e + 1 for e, _ in points]
            errors = [v for _, v in points]
            axes.plot(epochs, errors, linewidth=width, color=colour, label=f"{label} ({errors[-1]:.2f}%)",
                      marker="o" if len(points) == 1 else None)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel("error (%)")
        axes.grid(True, alpha=0.3)
        axes.legend()
        axes.set_title("thin: training error, bold: validation/test error")
        figure.tight_layout()
        return media.log_figure(trainer, "error_curves", figure, self.filename)
