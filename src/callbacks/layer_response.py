"""Standard deviation of every 3x3 layer's response on a probe batch: He et al. 2016, Fig. 7.

The response of a 3x3 conv is the output of the BatchNorm right after it: after BN, before the
nonlinearity and before the residual addition. He et al. found ResNets' responses smaller than their
plain twins', and smaller in deeper ResNets: the residual functions stay close to zero, which is what
makes identity shortcuts a good preconditioning. This callback shows that per run; an analysis that
overlays several runs (plain vs residual) reads ``diagnostics/layer_response_std.json``.

Every ``every_n_epochs`` epochs and after training: ``layer_response_std/<bn>`` scalars,
``plots/layer_response_std.png`` (top: layers in network order, bottom: sorted in descending order,
as in the paper) and the same image in TensorBoard/W&B.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from callbacks import media, plotting, probe

log = logging.getLogger(__name__)

FILENAME = "layer_response_std.png"
JSON_FILE = "layer_response_std.json"


class LayerResponseStd(pl.Callback):
    def __init__(self, every_n_epochs: int = 5, probe_size: int = 128) -> None:
        """
        Args:
            every_n_epochs: measure (and redraw) after every n-th epoch; always after training (0: only then).
            probe_size: number of validation images in the probe batch.
        """
        self.every_n_epochs, self.probe_size = int(every_n_epochs), int(probe_size)
        self.pairs: list[tuple[str, str]] = []  # (3x3 conv, module whose output is its response)
        self.latest: dict[str, float] = {}  # conv name -> std
        self._probe: torch.Tensor | None = None
        self._measured_step: int | None = None

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = probe.plain_model(pl_module)
        if not any(isinstance(m, torch.nn.Conv2d) and tuple(m.kernel_size) == (3, 3) for m in model.modules()):
            log.info("LayerResponseStd: the model has no 3x3 conv layer; nothing to measure.")
            return
        batch = probe.take_probe_batch(trainer, pl_module, self.probe_size)
        if batch is None:
            return
        self._probe = batch[0]
        self.pairs = probe.trace(model, self._probe).conv3x3_responses()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.measure_and_log(trainer, pl_module)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._measured_step != trainer.global_step:
            self.measure_and_log(trainer, pl_module)

    def measure(self, pl_module: pl.LightningModule) -> dict[str, float]:
        """std of each 3x3 layer's response on the probe batch (eval mode), keyed by the conv's name."""
        if self._probe is None or not self.pairs:
            return {}
        model = probe.plain_model(pl_module)
        conv_of = {response: conv for conv, response in self.pairs}
        modules = {response: model.get_submodule(response) for response in conv_of}
        stds: dict[str, torch.Tensor] = {}

        def hook(name: str, module: Any, inputs: tuple, output: Any) -> None:
            conv = conv_of[name]
            if conv not in stds and isinstance(output, torch.Tensor):
                stds[conv] = output.detach().float().std()

        with probe.evaluation(model), probe.hooks(modules, hook):
            probe.forward(model, self._probe)
        names = [conv for conv, _ in self.pairs if conv in stds]
        values = torch.stack([stds[n] for n in names]).cpu().tolist() if names else []
        return dict(zip(names, values))

    def measure_and_log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        stds = self.measure(pl_module)
        if not stds:
            return None
        self.latest, self._measured_step = stds, trainer.global_step
        media.log_scalars(trainer, {f"layer_response_std/{name}": v for name, v in stds.items()})
        folder = media.run_dir(trainer) / media.DIAGNOSTICS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        record = {"epoch": trainer.current_epoch, "step": trainer.global_step, "layers": list(stds),
                  "responses": [r for c, r in self.pairs if c in stds], "std": list(stds.values())}
        (folder / JSON_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return media.log_figure(trainer, "layer_response_std", self.figure(stds), FILENAME)

    @staticmethod
    def figure(stds: dict[str, float]):
        values = list(stds.values())
        figure = plotting.new_figure(6.4, 5.6)
        top, bottom = figure.subplots(2, 1)
        index = range(1, len(values) + 1)
        top.plot(index, values, marker=".", linewidth=1.2)
        top.set_xlabel("layer index (original order)")
        bottom.plot(index, sorted(values, reverse=True), marker=".", linewidth=1.2)
        bottom.set_xlabel("layer index (sorted by magnitude)")
        for axes in (top, bottom):
            axes.set_ylabel("std")
            axes.grid(True, alpha=0.3)
        top.set_title("std of 3x3 layer responses (after BN, before nonlinearity)")
        figure.tight_layout()
        return figure
