"""How gradients flow through the layers, and a guard that stops a diverging run cleanly.

Every ``every_n_steps`` optimizer steps, for each conv/linear weight (in network order):

- ``grad_norm/<layer>``: the L2 norm of its gradient (plus ``grad_norm/total``);
- ``update_ratio/<layer>``: ||weight change of the step|| / ||weight||, whatever the optimizer
  (momentum, Adam) made of the gradient. Around 1e-3 is the usual healthy value (cs231n); much larger
  means a learning rate too high for that layer, much smaller one that barely learns.

``plots/gradient_flow.png`` shows the last sample per layer (after every ``plot_every_n_epochs``
epochs and after training). Warnings (``alerts/vanishing_gradients``, ``alerts/exploding_gradients``):
the first layer's RMS gradient below ``vanishing_ratio`` times the largest layer's (the classic deep
sigmoid/tanh net without BN or shortcuts), and a total gradient norm above ``exploding_factor`` times
its running median. The non-finite loss guard (:mod:`callbacks.nonfinite`) checks every step on the
device and reads its flag on the host at the logging steps.

No host sync per step: a sample is computed on the device at its step and read on the host, together
with the guard's flag, at the next logging step (``trainer.log_every_n_steps``: where Lightning's
logger reads its values too) or at the end of the epoch, in one transfer. Its scalars are logged
with the step they were taken at.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from callbacks import media, plotting, probe
from callbacks.alerts import Alerts
from callbacks.nonfinite import NonFiniteGuard

FILENAME = "gradient_flow.png"


def weight_layers(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Layer name -> weight for every trainable weight with >= 2 dims (conv and linear kernels)."""
    return {name.removesuffix(".weight"): p for name, p in model.named_parameters()
            if p.requires_grad and p.ndim >= 2 and name.endswith("weight")}


def _loggable(values) -> list[float]:
    """Values for a log axis: zero, negative and non-finite ones become gaps (NaN) instead of errors."""
    return [v if math.isfinite(v) and v > 0 else math.nan for v in values]


class GradientFlow(pl.Callback):
    def __init__(self, every_n_steps: int = 50, plot_every_n_epochs: int = 10, vanishing_ratio: float = 1e-3,
                 exploding_factor: float = 100.0, stop_on_nonfinite: bool = True,
                 nonfinite_check_every_n_steps: int | None = None) -> None:
        """
        Args:
            every_n_steps: sample gradient norms and update ratios every n optimizer steps.
            plot_every_n_epochs: redraw the per-layer plot after every n-th epoch (0: only after training).
            vanishing_ratio: warn when the first layer's RMS gradient is below this fraction of the largest.
            exploding_factor: warn when the total gradient norm exceeds this multiple of its running median.
            stop_on_nonfinite: stop the run cleanly at a non-finite loss or gradient (see callbacks.nonfinite).
            nonfinite_check_every_n_steps: how often the host reads the guard's device flag (None: on the
                logging steps, every ``trainer.log_every_n_steps``; 1: every step, one host sync each). A
                non-finite step never changes the weights whatever this is; it only sets how soon the run stops.
        """
        self.every_n_steps, self.plot_every_n_epochs = max(1, int(every_n_steps)), int(plot_every_n_epochs)
        self.vanishing_ratio, self.exploding_factor = float(vanishing_ratio), float(exploding_factor)
        self.guard = NonFiniteGuard(nonfinite_check_every_n_steps) if stop_on_nonfinite else None
        self.alerts = Alerts()
        self.history: list[dict[str, Any]] = []  # step, grad_norm {layer: v}, update_ratio {layer: v}, total
        self._layers: dict[str, torch.nn.Parameter] = {}
        self._pending: dict[str, Any] | None = None  # the sampled step's gradients, before its update
        self._unread: list[dict[str, Any]] = []  # samples still on the device
        self._plotted_step: int | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._layers = weight_layers(probe.plain_model(pl_module))

    # --- every step: the guard; on sampled steps: gradients before, weights after -------------------
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if self.guard is not None:
            self.guard.before_backward(loss)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.guard is not None and self.guard.before_optimizer_step(trainer, optimizer):
            self._pending = None
            return
        if not trainer.is_global_zero or trainer.global_step % self.every_n_steps or not self._layers:
            return
        names = [n for n, p in self._layers.items() if p.grad is not None]
        if not names:
            return
        params = [self._layers[n] for n in names]
        grads = [p.grad.detach().float() for p in params]
        self._pending = {
            "step": trainer.global_step,
            "names": names,
            "grad": torch.stack(torch._foreach_norm(grads)),
            "numel": [p.numel() for p in params],
            "before": [p.detach().float().clone() for p in params],
        }

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.guard is not None:
            self.guard.after_step()
        if self._pending is not None and trainer.is_global_zero:
            self._unread.append(self._measure(self._pending))
            self._pending = None
        every = max(1, trainer.log_every_n_steps)
        guard_due = self.guard is not None and self.guard.due(trainer, every)
        samples_due = bool(self._unread) and (trainer.global_step % every == 0 or
                                              trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
        if guard_due or samples_due:
            self._read(trainer, guard=guard_due, samples=samples_due)

    def _measure(self, pending: dict[str, Any]) -> dict[str, Any]:
        """The sample's update/weight ratios, on the device; its values stay there until :meth:`_read`."""
        params = [self._layers[n] for n in pending["names"]]
        after = [p.detach().float() for p in params]
        weight_norm = torch.stack(torch._foreach_norm(pending["before"]))
        update_norm = torch.stack(torch._foreach_norm(torch._foreach_sub(after, pending["before"])))
        ratio = update_norm / weight_norm.clamp_min(1e-12)
        return {"step": pending["step"], "names": pending["names"], "numel": pending["numel"],
                "values": torch.cat([pending["grad"], ratio])}

    def _read(self, trainer: pl.Trainer, guard: bool, samples: bool) -> None:
        """One host read for the guard's flag and every unread sample, then act on them."""
        parts = ([self.guard.readout()] if guard else []) + ([u["values"] for u in self._unread] if samples else [])
        values = torch.cat([p.float() for p in parts]).tolist()
        stopped_at = None
        if guard:
            if self.guard.decide(trainer, values[:3]):
                self._pending, stopped_at = None, self.guard.stopped_at
            values = values[3:]
        if samples:
            unread, self._unread = self._unread, []
            for item in unread:
                n = len(item["names"])
                if stopped_at is None or item["step"] < stopped_at:  # not a step that was undone
                    self._add_sample(trainer, item, values[:n], values[n:2 * n])
                values = values[2 * n:]

    def _flush(self, trainer: pl.Trainer) -> None:
        """At the end of an epoch or of fit: read what is still on the device."""
        guard = self.guard is not None and self.guard.pending()
        if guard or self._unread:
            self._read(trainer, guard=guard, samples=bool(self._unread))

    def _add_sample(self, trainer: pl.Trainer, item: dict[str, Any], grad: list[float], ratio: list[float]) -> None:
        names = item["names"]
        sample = {"step": item["step"], "grad_norm": dict(zip(names, grad)),
                  "update_ratio": dict(zip(names, ratio)),
                  "grad_rms": {n: g / max(1, k) ** 0.5 for n, g, k in zip(names, grad, item["numel"])},
                  "total": sum(g * g for g in grad) ** 0.5}
        self.history.append(sample)
        scalars = {f"grad_norm/{n}": v for n, v in sample["grad_norm"].items()}
        scalars.update({f"update_ratio/{n}": v for n, v in sample["update_ratio"].items()})
        scalars["grad_norm/total"] = sample["total"]
        media.log_scalars(trainer, scalars, step=item["step"])
        self._check(trainer, sample)

    def _check(self, trainer: pl.Trainer, sample: dict[str, Any]) -> None:
        rms = list(sample["grad_rms"].values())
        first, largest = rms[0], max(rms)
        if largest > 0 and first < self.vanishing_ratio * largest:
            name = next(iter(sample["grad_rms"]))
            self.alerts.warn(
                trainer, "vanishing_gradients", name,
                f"the first layer ({name}) gets a gradient {first / largest:.1e} times the largest layer's: "
                "early layers barely learn. Usual fixes: ReLU instead of sigmoid/tanh, BatchNorm, residual "
                "shortcuts, He/Xavier initialisation.", value=first / largest)
        earlier = [s["total"] for s in self.history[-21:-1]]
        if len(earlier) >= 5:
            median = statistics.median(earlier)
            if median > 0 and sample["total"] > self.exploding_factor * median:
                self.alerts.warn(
                    trainer, "exploding_gradients", "total",
                    f"the gradient norm jumped to {sample['total']:.3g}, {sample['total'] / median:.0f}x its recent "
                    "median: the training is close to diverging. Lower the learning rate or clip gradients "
                    "(trainer.gradient_clip_val).", value=sample["total"] / median)

    # --- plots and the guard's end of fit ------------------------------------------------------------
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.guard is not None and self.guard.pending():  # validation mid-epoch: checkpoints follow it
            self._read(trainer, guard=True, samples=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)
        if trainer.is_global_zero and self.plot_every_n_epochs > 0 and \
                (trainer.current_epoch + 1) % self.plot_every_n_epochs == 0:
            self.plot(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)
        if self.guard is not None and trainer.is_global_zero:
            self.guard.fit_end(trainer)
        if trainer.is_global_zero:
            self.plot(trainer)

    def plot(self, trainer: pl.Trainer) -> Path | None:
        if not self.history or self._plotted_step == self.history[-1]["step"]:
            return None
        sample = self.history[-1]
        self._plotted_step = sample["step"]
        names = list(sample["grad_norm"])
        figure = plotting.new_figure(max(6.4, 0.18 * len(names)), 5.6)
        top, bottom = figure.subplots(2, 1, sharex=True)
        index = list(range(len(names)))
        top.plot(index, _loggable(sample["grad_norm"].values()), marker=".")
        top.set_ylabel("gradient norm")
        bottom.plot(index, _loggable(sample["update_ratio"].values()), marker=".", color="C2")
        bottom.axhline(1e-3, color="grey", linestyle="--", linewidth=0.8)
        bottom.set_ylabel("update / weight")
        bottom.set_xticks(index, names, rotation=90, fontsize=6)
        for axes, values in ((top, sample["grad_norm"].values()), (bottom, sample["update_ratio"].values())):
            if any(math.isfinite(v) for v in _loggable(values)):  # (a log axis of nothing cannot be drawn)
                axes.set_yscale("log")
            axes.grid(True, alpha=0.3)
        top.set_title(f"gradient flow at step {sample['step']} (input layer on the left)")
        figure.tight_layout()
        return media.log_figure(trainer, "gradient_flow", figure, FILENAME, step=sample["step"])
