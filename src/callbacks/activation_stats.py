"""Activation statistics of every conv/linear layer on a fixed probe batch (lecture 1: "visualize
activations during training").

ReLU activations should start dense and grow sparser as training goes on; a channel that is zero for
every probe input is a dead unit, and many dead units after a few steps usually mean the learning rate
is too high. For each conv/linear layer's post-activation output this logs, every ``every_n_epochs``
epochs (and every ``every_n_steps`` steps when set) and once before training starts:

- ``activation_mean/<layer>``, ``activation_std/<layer>``, ``activation_sparsity/<layer>`` (fraction
  of exact zeros), ``activation_dead/<layer>`` (fraction of channels/units zero for ALL probe inputs);
- ``activation_hist/<layer>`` histograms (TensorBoard, W&B);
- activation maps of one probe image for the first and the deepest conv layer
  (``plots/activations/<layer>_stepNNNNNN.png``);
- an ``alerts/dead_units`` warning when a layer's dead fraction exceeds ``dead_threshold``.

Hooks exist only while the probe runs and reduce each output on its device inside the hook: an
in-place ReLU or a residual addition would change a stored tensor afterwards.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from callbacks import media, plotting, probe
from callbacks.alerts import Alerts

log = logging.getLogger(__name__)


def reduce_activation(output: torch.Tensor, bins: int) -> dict[str, Any]:
    """Statistics of one layer output (N, C, ...) as device tensors; nothing refers to ``output`` after."""
    y = output.detach().float()
    zero = y == 0
    # A unit (channel of a conv map, feature of a linear layer) is dead if it is 0 for every input.
    per_unit_active = (~zero).transpose(0, 1).reshape(y.shape[1], -1).any(dim=1) if y.ndim >= 2 else ~zero
    return {
        "mean": y.mean(),
        "std": y.std() if y.numel() > 1 else torch.zeros((), device=y.device),
        "sparsity": zero.float().mean(),
        "dead": 1 - per_unit_active.float().mean(),
        "hist": media.Histogram.reduce(y, bins),
    }


class ActivationStats(pl.Callback):
    def __init__(self, every_n_epochs: int = 1, every_n_steps: int = 0, probe_size: int = 64,
                 dead_threshold: float = 0.5, histograms: bool = True, bins: int = 64,
                 maps: bool = True, map_image: int = 0, max_maps: int = 64) -> None:
        """
        Args:
            every_n_epochs: sample at the end of every n-th training epoch (0: never by epoch).
            every_n_steps: also sample every n optimizer steps (0: off; each sample is one probe forward).
            probe_size: number of validation images in the fixed probe batch.
            dead_threshold: warn when more than this fraction of a layer's units is dead.
            histograms: log activation histograms.
            bins: histogram bins.
            maps: save activation-map grids of the first and the deepest conv layer.
            map_image: which probe image the maps show.
            max_maps: at most this many channels per map grid.
        """
        self.every_n_epochs, self.every_n_steps = int(every_n_epochs), int(every_n_steps)
        self.probe_size, self.dead_threshold = int(probe_size), float(dead_threshold)
        self.histograms, self.bins = bool(histograms), int(bins)
        self.maps, self.map_image, self.max_maps = bool(maps), int(map_image), int(max_maps)
        self.alerts = Alerts()
        self.history: list[dict[str, Any]] = []  # one entry per sample: step, epoch, {layer: {stat: value}}
        self._probe: torch.Tensor | None = None
        self._targets: dict[str, tuple[str, int]] = {}
        self._map_layers: list[str] = []

    # --- when --------------------------------------------------------------------------------------
    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        batch = probe.take_probe_batch(trainer, pl_module, self.probe_size)
        if batch is None:
            log.info("ActivationStats: no data to take a probe batch from; disabled.")
            return
        self._probe = batch[0]
        model = probe.plain_model(pl_module)
        traced = probe.trace(model, self._probe)
        self._targets = traced.activation_targets()
        convs = [name for name in self._targets if isinstance(model.get_submodule(name), nn.Conv2d)]
        self._map_layers = list(dict.fromkeys([convs[0], convs[-1]])) if convs else []
        self.sample(trainer, pl_module)  # the starting point: activations before any update

    @rank_zero_only
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0 and \
                self._last_step != trainer.global_step:
            self.sample(trainer, pl_module)

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0 and \
                self._last_step != trainer.global_step:
            self.sample(trainer, pl_module)

    @property
    def _last_step(self) -> int | None:
        return self.history[-1]["step"] if self.history else None

    # --- what --------------------------------------------------------------------------------------
    def sample(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, dict[str, float]]:
        """One probe forward with temporary hooks; logs and returns {layer: {stat: value}}."""
        if self._probe is None or not self._targets:
            return {}
        model = probe.plain_model(pl_module)
        by_call: dict[tuple[str, int], str] = {target: layer for layer, target in self._targets.items()}
        modules = {name: model.get_submodule(name) for name, _ in by_call}
        calls: dict[str, int] = {}
        reduced: dict[str, dict[str, Any]] = {}
        maps: dict[str, torch.Tensor] = {}

        def hook(name: str, module: nn.Module, inputs: tuple, output: Any) -> None:
            index = calls.get(name, 0)
            calls[name] = index + 1
            layer = by_call.get((name, index))
            if layer is None or not isinstance(output, torch.Tensor):
                return
            reduced[layer] = reduce_activation(output, self.bins)
            if self.maps and layer in self._map_layers and output.ndim == 4:
                index_in_batch = min(self.map_image, output.shape[0] - 1)
                maps[layer] = output[index_in_batch, : self.max_maps].detach().float().clone()

        with probe.evaluation(model), probe.hooks(modules, hook):
            probe.forward(model, self._probe)
        stats = self._log(trainer, reduced, maps)
        return stats

    def _log(self, trainer: pl.Trainer, reduced: dict[str, dict[str, Any]], maps: dict[str, torch.Tensor]
             ) -> dict[str, dict[str, float]]:
        names = list(reduced)
        scalar_keys = ("mean", "std", "sparsity", "dead")
        if names:  # one host transfer for every scalar of every layer
            table = torch.stack([torch.stack([reduced[n][k] for k in scalar_keys]) for n in names]).cpu().tolist()
        else:
            table = []
        stats = {n: dict(zip(scalar_keys, row)) for n, row in zip(names, table)}
        media.log_scalars(trainer, {f"activation_{k}/{n}": v for n, s in stats.items() for k, v in s.items()})
        if self.histograms:
            for name in names:
                media.log_histogram(trainer, f"activation_hist/{name}", media.Histogram.from_reduced(reduced[name]["hist"]))
        for name, activation in maps.items():
            image = plotting.grid(plotting.normalise_each(activation.unsqueeze(1)), min_tile_px=32)
            media.log_image(trainer, f"activation_maps/{name}", image,
                            f"activations/{media.safe_name(name)}_step{trainer.global_step:06d}.png")
        for name, values in stats.items():
            if values["dead"] > self.dead_threshold:
                self.alerts.warn(
                    trainer, "dead_units", name,
                    f"{100 * values['dead']:.0f}% of the units of layer {name} are dead (zero for every probe "
                    f"input; threshold {100 * self.dead_threshold:.0f}%). A too-high learning rate is the usual "
                    "cause with ReLUs: lower it (or add warm-up), check the init, or try LeakyReLU.",
                    value=values["dead"])
        self.history.append({"step": trainer.global_step, "epoch": trainer.current_epoch, "stats": stats})
        return stats
