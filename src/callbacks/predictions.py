"""A grid of misclassified validation images with their true and predicted labels.

Looking at the mistakes tells what no error rate does: ambiguous classes, label noise, a colour or
scale the augmentation does not cover. The first ``max_images`` misclassified images of a validation
epoch are kept (from the logits the validation steps already computed, see
:class:`callbacks.capture.ValidationTap`), shown denormalised with the datamodule's ``mean``/``std``,
every ``every_n_epochs`` epochs and after training: ``plots/predictions/misclassified_epochNNN.png``
and the ``misclassified`` image in TensorBoard/W&B. Rank zero only (its share of the validation set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from callbacks import media, plotting
from callbacks.capture import ValidationTap
from callbacks.confusion_matrix import class_names, num_classes_of


class Predictions(pl.Callback):
    def __init__(self, every_n_epochs: int = 5, max_images: int = 32, columns: int = 8) -> None:
        """
        Args:
            every_n_epochs: draw after every n-th validation epoch (0: only after training).
            max_images: at most this many misclassified images per grid.
            columns: images per row.
        """
        self.every_n_epochs, self.max_images, self.columns = int(every_n_epochs), int(max_images), int(columns)
        # The last complete validation epoch's mistakes: images (CPU, normalised), true, predicted, confidence.
        self.mistakes: dict[str, torch.Tensor] | None = None
        self.examined = 0
        self._tap = ValidationTap()
        self._collecting: list[tuple[torch.Tensor, ...]] | None = None
        self._count = 0
        self._epoch: int | None = None
        self._drawn_epoch: int | None = None

    @rank_zero_only
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._collecting, self._count, self.examined = [], 0, 0
        self._tap.start(pl_module)

    @rank_zero_only
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._collecting is None:
            return
        got = self._tap.take(batch)
        if got is None:
            return
        images, logits, labels = got
        self.examined += len(labels)
        if self._count >= self.max_images:
            return
        probs = logits.float().softmax(dim=1)
        confidence, predicted = probs.max(dim=1)
        wrong = (predicted != labels).nonzero().flatten()[: self.max_images - self._count]
        if len(wrong):
            self._collecting.append((images[wrong].detach().float().cpu(), labels[wrong].cpu(),
                                     predicted[wrong].cpu(), confidence[wrong].cpu()))
            self._count += len(wrong)

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._tap.stop()
        if self._collecting is None:
            return
        parts, self._collecting = self._collecting, None
        keys = ("images", "true", "predicted", "confidence")
        self.mistakes = {k: torch.cat([p[i] for p in parts]) for i, k in enumerate(keys)} if parts else None
        self._epoch = trainer.current_epoch
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.plot(trainer)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.plot(trainer)

    def plot(self, trainer: pl.Trainer) -> Path | None:
        if self.mistakes is None or self._drawn_epoch == self._epoch:
            return None
        self._drawn_epoch = self._epoch
        datamodule = trainer.datamodule
        images = plotting.denormalise(self.mistakes["images"], getattr(datamodule, "mean", None),
                                      getattr(datamodule, "std", None))
        names = class_names(trainer, num_classes_of(trainer, trainer.lightning_module) or 0)
        figure = self.figure(images, self.mistakes, names, self.columns)
        epochs_done = (self._epoch or 0) + 1
        figure.axes[0].set_title(f"misclassified validation images after epoch {epochs_done}", fontsize=9)
        return media.log_figure(trainer, "misclassified", figure,
                                f"predictions/misclassified_epoch{epochs_done:03d}.png")

    @staticmethod
    def figure(images: torch.Tensor, mistakes: dict[str, torch.Tensor], names: list[str], columns: int):
        """One axes showing all images as a single grid, each labelled above: one image and a few
        dozen text labels to draw, instead of one subplot per image (10x slower)."""
        count, _, height, width = images.shape
        columns = max(1, min(columns, count))
        label_px = max(12, height // 2)  # room above each image for its two-line label
        pad = 2
        tiles = torch.ones(count, images.shape[1], height + label_px, width)
        tiles[:, :, label_px:] = images
        canvas = plotting.grid(tiles, columns=columns, min_tile_px=0, padding=pad)
        zoom = max(1.0, 64 / width)  # each image shown at least 64 px wide (figure at 100 dpi)
        figure = plotting.new_figure(max(3.0, canvas.shape[2] * zoom / 100),
                                     max(2.0, canvas.shape[1] * zoom / 100 / 0.94))
        axes = figure.add_axes((0, 0, 1, 0.94))
        picture = canvas.permute(1, 2, 0).numpy()
        axes.imshow(picture[..., 0] if picture.shape[2] == 1 else picture, cmap="gray", vmin=0, vmax=1,
                    interpolation="nearest")
        axes.axis("off")

        def label(k: int) -> str:
            return names[k] if k < len(names) else str(k)

        for i in range(count):
            r, c = divmod(i, columns)
            x = pad + c * (width + pad) + width / 2
            y = pad + r * (height + label_px + pad) + label_px / 2
            true, predicted = int(mistakes["true"][i]), int(mistakes["predicted"][i])
            axes.text(x, y, f"{label(true)} -> {label(predicted)}\n{100 * float(mistakes['confidence'][i]):.0f}%",
                      ha="center", va="center", fontsize=6, color="C3")
        return figure
