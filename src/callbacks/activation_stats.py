"""Activation statistics of every conv/linear layer on a fixed probe batch (lecture 1: "visualize
activations during training").

ReLU activations should start dense and grow sparser as training goes on; a channel that is zero for
every probe input is a dead unit, and many dead units after a few steps usually mean the learning rate
is too high. tanh and sigmoid units cannot die but saturate: pushed into their flat tails they pass
almost no gradient (lecture 2). For each conv/linear layer's post-activation output this logs, every
``every_n_epochs`` epochs (and every ``every_n_steps`` steps when set) and once before training starts:

- ``activation_mean/<layer>``, ``activation_std/<layer>`` for every layer;
- by the kind of the layer's activation module (:data:`callbacks.probe.RECTIFIERS`, ``SATURATING``):

  - rectifiers (ReLU, leaky ReLU, ELU, ...): ``activation_sparsity/<layer>`` (fraction of outputs that
    are not positive: the exact zeros of a ReLU, the negative branch of a leaky ReLU or ELU) and
    ``activation_dead/<layer>`` (fraction of channels/units never positive for ANY probe input: zero
    output and zero gradient for a ReLU, only the negative branch's gradient for the others);
  - saturating units (tanh, sigmoid, ...): ``activation_saturation/<layer>``, the fraction of outputs
    within :data:`SATURATION_MARGIN` of the output range's ends (for tanh ``|y| >= 0.98`` and for
    sigmoid ``y <= 0.01`` or ``y >= 0.99``: where the local derivative is below ~4% of its peak);
  - a layer with no activation (the logits): ``sparsity`` (exact zeros) and ``dead`` (zero for all inputs);

- ``activation_hist/<layer>`` histograms (TensorBoard, W&B);
- activation maps of one probe image for the first and the deepest conv layer
  (``plots/activations/<layer>_stepNNNNNN.png``);
- an ``alerts/dead_units`` warning when a layer's dead fraction exceeds ``dead_threshold``, and an
  ``alerts/saturated_units`` one when a layer's saturation exceeds ``saturation_threshold``.

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

# A saturating unit's output within this fraction of its range from either end counts as saturated.
SATURATION_MARGIN = 0.01
SCALAR_KEYS = ("mean", "std", "sparsity", "dead", "saturation")


def output_range(module: nn.Module) -> tuple[float, float] | None:
    """(lowest, highest) output of a saturating activation module; ``None`` for any other module."""
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val), float(module.max_val)
    if isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)):
        return 0.0, 1.0
    if isinstance(module, (nn.Tanh, nn.Softsign)):
        return -1.0, 1.0
    return None


def unit_kind(module: nn.Module) -> str:
    """``rectifier``, ``saturating``, ``other`` (another activation) or ``none`` (a conv/linear itself)."""
    if isinstance(module, probe.RECTIFIERS):
        return "rectifier"
    if isinstance(module, probe.SATURATING):
        return "saturating"
    return "other" if isinstance(module, probe.ACTIVATIONS) else "none"


def _per_unit_any(mask: torch.Tensor) -> torch.Tensor:
    """Per unit (channel of a conv map, feature of a linear layer): is ``mask`` true for some input?"""
    return mask.transpose(0, 1).reshape(mask.shape[1], -1).any(dim=1) if mask.ndim >= 2 else mask


def reduce_activation(output: torch.Tensor, bins: int, kind: str = "none",
                      bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """Statistics of one layer output (N, C, ...) as device tensors; nothing refers to ``output`` after.

    ``kind`` (:func:`unit_kind`) decides what is measured: dead units for rectifiers and raw outputs,
    saturation (with the activation's output ``bounds``) for saturating units; see the module docstring.
    """
    y = output.detach().float()
    stats = {"mean": y.mean(), "std": y.std() if y.numel() > 1 else torch.zeros((), device=y.device),
             "hist": media.Histogram.reduce(y, bins)}
    if kind in ("rectifier", "none"):
        # "Off" is <= 0 for a rectifier (for a ReLU exactly the zeros), == 0 for a raw output.
        off = y <= 0 if kind == "rectifier" else y == 0
        stats["sparsity"] = off.float().mean()
        stats["dead"] = 1 - _per_unit_any(~off).float().mean()
    elif kind == "saturating" and bounds is not None:
        low, high = bounds
        margin = SATURATION_MARGIN * (high - low)
        stats["saturation"] = ((y <= low + margin) | (y >= high - margin)).float().mean()
    return stats


class ActivationStats(pl.Callback):
    def __init__(self, every_n_epochs: int = 1, every_n_steps: int = 0, probe_size: int = 64,
                 dead_threshold: float = 0.5, histograms: bool = True, bins: int = 64,
                 maps: bool = True, map_image: int = 0, max_maps: int = 64,
                 saturation_threshold: float = 0.5) -> None:
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
            saturation_threshold: warn when more than this fraction of a tanh/sigmoid layer's outputs is
                saturated.
        """
        self.every_n_epochs, self.every_n_steps = int(every_n_epochs), int(every_n_steps)
        self.probe_size, self.dead_threshold = int(probe_size), float(dead_threshold)
        self.saturation_threshold = float(saturation_threshold)
        self.histograms, self.bins = bool(histograms), int(bins)
        self.maps, self.map_image, self.max_maps = bool(maps), int(map_image), int(max_maps)
        self.alerts = Alerts()
        self.history: list[dict[str, Any]] = []  # one entry per sample: step, epoch, {layer: {stat: value}}
        self._probe: torch.Tensor | None = None
        self._targets: dict[str, tuple[str, int]] = {}
        self._kinds: dict[str, tuple[str, tuple[float, float] | None]] = {}  # layer -> (kind, output range)
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
        for layer, (name, _) in self._targets.items():
            target = model.get_submodule(name)
            self._kinds[layer] = (unit_kind(target), output_range(target))
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
            reduced[layer] = reduce_activation(output, self.bins, *self._kinds.get(layer, ("none", None)))
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
        cells = [(n, k) for n in names for k in SCALAR_KEYS if k in reduced[n]]
        values = torch.stack([reduced[n][k] for n, k in cells]).cpu().tolist() if cells else []  # one transfer
        stats: dict[str, dict[str, float]] = {n: {} for n in names}
        for (name, key), value in zip(cells, values):
            stats[name][key] = value
        media.log_scalars(trainer, {f"activation_{k}/{n}": v for n, s in stats.items() for k, v in s.items()})
        if self.histograms:
            for name in names:
                media.log_histogram(trainer, f"activation_hist/{name}", media.Histogram.from_reduced(reduced[name]["hist"]))
        for name, activation in maps.items():
            image = plotting.grid(plotting.normalise_each(activation.unsqueeze(1)), min_tile_px=32)
            media.log_image(trainer, f"activation_maps/{name}", image,
                            f"activations/{media.safe_name(name)}_step{trainer.global_step:06d}.png")
        for name, values in stats.items():
            if values.get("dead", 0.0) > self.dead_threshold:
                self.alerts.warn(
                    trainer, "dead_units", name,
                    f"{100 * values['dead']:.0f}% of the units of layer {name} are dead (never positive for any "
                    f"probe input; threshold {100 * self.dead_threshold:.0f}%). A too-high learning rate is the "
                    "usual cause with ReLUs: lower it (or add warm-up), check the init, or try "
                    "model.activation=leaky_relu.",
                    value=values["dead"])
            if values.get("saturation", 0.0) > self.saturation_threshold:
                self.alerts.warn(
                    trainer, "saturated_units", name,
                    f"{100 * values['saturation']:.0f}% of the outputs of layer {name} are saturated (within "
                    f"{100 * SATURATION_MARGIN:.0f}% of the activation's range from its ends, where it passes almost "
                    f"no gradient; threshold {100 * self.saturation_threshold:.0f}%). Inputs to the tanh/sigmoid "
                    "are too large: try model.init=xavier, batch normalisation or a lower learning rate, or "
                    "model.activation=relu.",
                    value=values["saturation"])
        self.history.append({"step": trainer.global_step, "epoch": trainer.current_epoch, "stats": stats})
        return stats
