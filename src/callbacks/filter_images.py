"""Learned filters as images (lecture 1: "visualize the weights"; "filters shouldn't look noisy").

The first conv layer's kernels are shown as one grid, in colour when the layer sees 3 input channels,
each kernel scaled to its own min..max so a small filter is as visible as a large one. Over training
they should turn from noise into smooth edge and colour detectors; filters that stay noisy point to
too little training, too high a learning rate or too little regularisation. Optionally a deeper conv
layer is shown in grayscale, one tile per (filter, input channel).

Every ``every_n_epochs`` epochs and once before training:
``plots/filters/<layer>_epochNNN.png`` and ``filters/<layer>`` images in TensorBoard and W&B.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from callbacks import media, plotting, probe

log = logging.getLogger(__name__)


def first_layer_grid(weight: torch.Tensor, max_filters: int = 256) -> torch.Tensor:
    """Kernels (out, in, kh, kw) as a CxHxW grid, one tile per filter (RGB for 3 input channels, gray for
    1); for any other channel count, one row per filter and one column per input channel."""
    weight = weight.detach().float().cpu()[:max_filters]
    if weight.shape[1] in (1, 3):  # one tile per filter: grayscale or colour
        return plotting.grid(plotting.normalise_each(weight))
    return per_channel_grid(weight)


def per_channel_grid(weight: torch.Tensor, max_filters: int = 32, max_channels: int = 16) -> torch.Tensor:
    """Grayscale kernels: row = output filter, column = input channel; each filter scaled on its own."""
    weight = weight.detach().float().cpu()[:max_filters, :max_channels]
    scaled = plotting.normalise_each(weight)  # per output filter, across its input channels
    out, inp, kh, kw = scaled.shape
    return plotting.grid(scaled.reshape(out * inp, 1, kh, kw), columns=inp)


class FilterImages(pl.Callback):
    def __init__(self, every_n_epochs: int = 1, deep_layer: str | None = None, max_filters: int = 256) -> None:
        """
        Args:
            every_n_epochs: save the grids at the end of every n-th epoch (and before training).
            deep_layer: also show this conv layer (module name, e.g. ``features.3``), or ``second`` for the
                second conv layer; ``null`` shows only the first layer.
            max_filters: at most this many first-layer filters.
        """
        self.every_n_epochs = int(every_n_epochs)
        self.deep_layer = deep_layer
        self.max_filters = int(max_filters)
        self.saved: list[str] = []
        self._layers: dict[str, str] = {}  # role -> module name

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = probe.plain_model(pl_module)
        convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
        if not convs:
            log.info("FilterImages: the model has no conv layer; disabled.")
            return
        self._layers = {"first": convs[0]}
        if self.deep_layer == "second" and len(convs) > 1:
            self._layers["deep"] = convs[1]
        elif self.deep_layer and self.deep_layer != "second":
            if self.deep_layer not in convs:
                log.warning(f"FilterImages: deep_layer={self.deep_layer!r} is not a conv layer of this model "
                            f"(conv layers: {', '.join(convs[:8])}...); showing the first layer only.")
            else:
                self._layers["deep"] = self.deep_layer
        self.save(trainer, pl_module, epochs_done=trainer.current_epoch)

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._layers and self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.save(trainer, pl_module, epochs_done=trainer.current_epoch + 1)

    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epochs_done: int) -> None:
        """Log the grids; files are named by the number of finished epochs (000: before training)."""
        model = probe.plain_model(pl_module)
        for role, name in self._layers.items():
            weight = model.get_submodule(name).weight
            image = first_layer_grid(weight, self.max_filters) if role == "first" else per_channel_grid(weight)
            path = media.log_image(trainer, f"filters/{name}", image,
                                   f"filters/{media.safe_name(name)}_epoch{epochs_done:03d}.png")
            self.saved.append(str(path))
