"""Stop a diverging run cleanly, without letting a non-finite step touch the weights, and without a
host sync per step.

The check works the way AMP's grad scaler skips a step (``torch.amp.GradScaler``): right before the
optimizer step, one fused kernel (``torch._amp_foreach_non_finite_check_and_unscale_``, the scaler's
own) looks at the loss and every gradient ON THE DEVICE and raises a flag tensor when one is not
finite. The flag is sticky: from the first non-finite step on, every update is undone on the device,
so the weights, momentum buffers and optimizer state stay exactly those before that step (weight
decay included):

- an optimizer built with ``fused=True`` (torch's fused SGD/Adam/AdamW) skips the update itself when
  its ``found_inf`` attribute holds a set flag, as under the grad scaler: no extra work at all;
- any other optimizer: the parameters and their state tensors are copied before the step and put back
  with one ``torch.where`` after it (two copies of the parameters and optimizer state in memory;
  a host-side step counter, such as Adam's without ``capturable``, still advances).

The host looks at the flag every ``check_every_n_steps`` steps (by default on Lightning's logging
steps, so the reads coincide with the logger's) and at the end of every epoch, before validation and
checkpoints. When it is set, the trainer is told to stop (``trainer.should_stop``: Lightning ends the
run normally), a message says at which step the run diverged and what to try, and the ``last.ckpt``
that existed then is put back in place at the end of fit: "last" stays the last good checkpoint.
A stopped run has ``diagnostics/nonfinite_stop.json`` in its folder (the pipeline reports status
``diverged``). After the stop is known, gradients are dropped so no later optimizer step runs.

Under fp16 mixed precision inf/NaN gradients are routine (the grad scaler skips those steps and lowers
its scale), so there only the loss is checked and the scaler does the skipping. Under DDP the decision
is reduced over ranks at the check, so every rank stops at the same step.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from callbacks import media

log = logging.getLogger("callbacks")

_KEPT_SUFFIX = ".good"
STOP_FILE = "nonfinite_stop.json"


class NonFiniteGuard:
    """The guard's state and checks; :class:`callbacks.gradient_flow.GradientFlow` calls its hooks.

    Per step: :meth:`before_backward` (keeps the loss), :meth:`before_optimizer_step` (device check,
    snapshot), :meth:`after_step` (device restore). At the host points: :meth:`readout` gives the
    device values to read, :meth:`decide` acts on them.
    """

    def __init__(self, check_every_n_steps: int | None = None) -> None:
        """``check_every_n_steps``: how often the host reads the flag (None: every
        ``trainer.log_every_n_steps``; 1: every step, one host sync each)."""
        self.check_every_n_steps = None if check_every_n_steps is None else max(1, int(check_every_n_steps))
        self.stopped_at: int | None = None  # global step of the first non-finite update
        self.message: str | None = None
        self.checks = 0  # host reads of the flag so far
        self._loss: torch.Tensor | None = None
        self._state: torch.Tensor | None = None  # [flag, masked steps, loss of the first bad step]
        self._views: tuple[torch.Tensor, ...] = ()  # its three entries, as shape-(1,) views
        self._mask = _StepMask()
        self._unchecked = 0  # steps since the flag was last read
        self._kept: list[tuple[Path, Path]] = []  # (moved last checkpoint, its own path)

    # --- every step, on the device ----------------------------------------------------------------
    def before_backward(self, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def before_optimizer_step(self, trainer: pl.Trainer, optimizer: torch.optim.Optimizer) -> bool:
        """Raise the device flag if this step is not finite and arm the undo; True once stopped."""
        if self.stopped_at is not None:
            _drop_gradients(optimizer)  # a later optimizer of the same step, or a step before stopping
            return True
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return False
        device = params[0].device
        if self._state is None or self._state.device != device:
            self._state = torch.tensor([0.0, 0.0, math.nan], device=device)
            self._views = (self._state[0:1], self._state[1:2], self._state[2:3])
        flag, masked, first_loss = self._views
        if self._loss is not None:
            # The loss of the latest step until the flag is raised: then that of the first bad step.
            torch.where(flag > 0, first_loss, self._loss.float().reshape(1), out=first_loss)
        checked = [first_loss]
        scaler_skips = str(trainer.precision) == "16-mixed"
        if not scaler_skips:
            checked += [p.grad for p in params if p.grad.device == device]
        _raise_if_nonfinite(checked, flag)
        masked.add_(flag)
        self._unchecked += 1
        if not scaler_skips:
            self._mask.before_step(optimizer, params, flag)
        return False

    def after_step(self) -> None:
        """Put back the state of before the step if the flag is raised (no-op when no step was armed)."""
        if self._state is None:
            return
        if self._mask.after_step(self._views[0]) and self._state[0].item() > 0:
            # The optimizer created state in this step (its first): no snapshot held it, so this one
            # time the flag is read at once, and state made from bad gradients is dropped.
            self._mask.drop_new_state()

    # --- at the host points -----------------------------------------------------------------------
    def due(self, trainer: pl.Trainer, every_n_steps: int) -> bool:
        """Whether the flag should be read now (after a step): every n steps and at the epoch's end."""
        if not self._unchecked or self.stopped_at is not None:
            return False
        every = self.check_every_n_steps or every_n_steps
        return trainer.global_step % max(1, every) == 0 or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch

    def pending(self) -> bool:
        return bool(self._unchecked) and self.stopped_at is None and self._state is not None

    def readout(self) -> torch.Tensor:
        """The device values :meth:`decide` needs (read them with the caller's other values, in one go)."""
        return self._state

    def decide(self, trainer: pl.Trainer, values: list[float]) -> bool:
        """Act on the read-out ``[flag, masked steps, first bad loss]``; True when the run must stop."""
        self.checks += 1
        self._unchecked = 0
        bad = values[0] > 0
        if trainer.world_size > 1:  # collective: every rank checks at the same steps
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return False
        masked = int(values[1]) if values[0] > 0 else 1
        loss = values[2] if values[0] > 0 else math.nan
        self.stopped_at = trainer.global_step - masked
        trainer.should_stop = True
        if trainer.is_global_zero:
            self._keep_last_checkpoints(trainer)
            kept = ", ".join(str(p) for _, p in self._kept) or "none had been saved yet"
            later = (f" (detected at step {trainer.global_step - 1}; the {masked - 1} steps in between were not "
                     "applied either)" if masked > 1 else "")
            self.message = (
                f"Non-finite training loss/gradients (loss = {loss}) at epoch {trainer.current_epoch}, step "
                f"{self.stopped_at}{later}: the training diverged, so the run stops here and this update was not "
                f"applied (the weights stay finite). Last good checkpoint kept: {kept}. Usual causes: a "
                "too-high learning rate (try 10x lower, or a warm-up), no gradient clipping "
                "(trainer.gradient_clip_val), fp16 overflow, or bad inputs (NaN in the data).")
            log.error(self.message)
            self._record(trainer, loss, kept)
            media.log_scalars(trainer, {"alerts/nonfinite_loss": 1.0})
            media.log_text(trainer, "alerts/nonfinite_loss", self.message)
        return True

    def _record(self, trainer: pl.Trainer, loss: float, kept: str) -> None:
        """``diagnostics/nonfinite_stop.json``: tools that read run folders can tell a diverged run apart."""
        folder = media.run_dir(trainer) / media.DIAGNOSTICS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        record = {"epoch": trainer.current_epoch, "step": self.stopped_at,
                  "loss": None if math.isnan(loss) else str(loss), "kept_checkpoints": kept, "message": self.message}
        (folder / STOP_FILE).write_text(json.dumps(record, indent=2) + "\n")

    def _keep_last_checkpoints(self, trainer: pl.Trainer) -> None:
        """Move aside every checkpoint that holds the latest state (``last.ckpt`` whether written by
        ``save_last`` or by a monitor-less checkpoint callback); :meth:`fit_end` puts them back over
        whatever is saved after the divergence."""
        paths: set[Path] = set()
        for callback in trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint):
                continue
            if callback.last_model_path:
                paths.add(Path(callback.last_model_path))
            if callback.monitor is None and callback.best_model_path:
                paths.add(Path(callback.best_model_path))
            if callback.dirpath:
                paths.add(Path(callback.dirpath) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}")
        for path in sorted(paths):
            if path.is_file() and not path.is_symlink():
                aside = path.with_name(path.name + _KEPT_SUFFIX)
                os.replace(path, aside)
                self._kept.append((aside, path))

    def fit_end(self, trainer: pl.Trainer) -> None:
        """After the final checkpoints were written: restore the last good ones."""
        for aside, path in self._kept:
            if aside.is_file():
                os.replace(aside, path)
        self._kept.clear()


def _raise_if_nonfinite(tensors: list[torch.Tensor], flag: torch.Tensor) -> None:
    """``flag`` (float, shape (1,)) becomes >= 1 if any tensor holds inf/NaN: the grad scaler's kernel,
    called per dtype as the scaler does (it multiplies by 1.0 here: no value changes)."""
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault(tensor.dtype, []).append(tensor)
    one = _ones(flag.device)
    for group in groups.values():
        torch._amp_foreach_non_finite_check_and_unscale_(group, flag, one)


_ONES: dict[torch.device, torch.Tensor] = {}


def _ones(device: torch.device) -> torch.Tensor:
    if device not in _ONES:
        _ONES[device] = torch.ones(1, device=device)
    return _ONES[device]


class _StepMask:
    """Undo one optimizer step on the device when a flag is raised; no host read.

    A ``fused=True`` torch optimizer skips its own update when ``optimizer.found_inf`` is set (as
    under the grad scaler). For any other optimizer the parameters and their optimizer-state tensors
    are copied into one flat buffer per dtype before the step ("before"); after it they are gathered
    into a second one ("after"), which becomes ``after * (1 - flag) + before * flag`` and is copied
    back: a fixed handful of ops per dtype, whatever the number of tensors (torch has no foreach
    ``where``, and ``torch.where`` with a one-element condition is 7x slower than these vectorised
    ops). A bad step may leave NaN/inf, which a multiply by 0 would keep, so non-finite values of
    "after" are zeroed first (a finite step leaves none: its check would have failed otherwise,
    short of an update that overflows, which the next step's check then catches).
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._groups: list[tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, list[torch.Tensor],
                                 torch.Tensor]] = []  # (tensors, snapshot views, snapshot, current views, current)
        self._armed = False
        self._optimizer: torch.optim.Optimizer | None = None
        self._params_with_state: set = set()  # parameters that had optimizer state before the step
        self._fused = False

    def before_step(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], flag: torch.Tensor) -> None:
        self._optimizer, self._armed = optimizer, True
        self._params_with_state = set(optimizer.state)  # on both routes: the state a bad first step creates goes
        # The groups decide, not the defaults: a fused optimizer that loaded a non-fused checkpoint's state
        # (a resumed run) has fused=None in its groups and runs the for-loop kernels, which ignore found_inf.
        self._fused = (all(group.get("fused") for group in optimizer.param_groups)
                       and getattr(optimizer, "_step_supports_amp_scaling", False))
        if self._fused:
            optimizer.found_inf = flag  # read by torch's fused kernels: they skip the update on the device
            return
        key = (id(optimizer), len(params), len(self._params_with_state))
        if key != self._key:
            self._build(optimizer, params, flag.device)
            self._key = key
        with torch.no_grad():
            for tensors, views, _, _, _ in self._groups:
                torch._foreach_copy_(views, tensors)

    def after_step(self, flag: torch.Tensor | None) -> bool:
        """Undo the step if ``flag`` is raised; True when the optimizer created new state in the step."""
        if not self._armed or flag is None:
            return False
        self._armed = False
        optimizer = self._optimizer
        if self._fused:
            del optimizer.found_inf
        else:
            with torch.no_grad():
                keep = torch.rsub(flag, 1)  # the flag is 0 or 1
                for tensors, _, snapshot, views, current in self._groups:
                    torch._foreach_copy_(views, tensors)
                    current.nan_to_num_(0.0, 0.0, 0.0).mul_(keep.to(current.dtype)).addcmul_(
                        snapshot, flag.to(current.dtype))
                    torch._foreach_copy_(tensors, views)
        return len(optimizer.state) != len(self._params_with_state)

    def drop_new_state(self) -> None:
        """Forget the optimizer state created by a step that was undone or skipped (made from bad gradients,
        or left uninitialised by a fused kernel that skipped its update): every entry of a parameter that
        had none before the step."""
        optimizer = self._optimizer
        for param in list(optimizer.state):
            if param not in self._params_with_state:
                del optimizer.state[param]
        self._key = None

    def _build(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor], device: torch.device) -> None:
        tensors = [p for p in params if p.device == device]
        for param in list(tensors):
            tensors += [t for t in _state_tensors(optimizer, param) if t.device == device]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for tensor in tensors:
            by_dtype.setdefault(tensor.dtype, []).append(tensor)
        self._groups = []
        for dtype, members in by_dtype.items():
            sizes = [t.numel() for t in members]
            snapshot = torch.empty(sum(sizes), dtype=dtype, device=device)
            current = torch.empty_like(snapshot)
            shape = [t.shape for t in members]
            snap_views = [v.view(s) for v, s in zip(snapshot.split(sizes), shape)]
            cur_views = [v.view(s) for v, s in zip(current.split(sizes), shape)]
            self._groups.append((members, snap_views, snapshot, cur_views, current))


def _state_tensors(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> list[torch.Tensor]:
    return [v for v in optimizer.state.get(param, {}).values() if isinstance(v, torch.Tensor) and v.is_floating_point()]


def _drop_gradients(optimizer: torch.optim.Optimizer) -> None:
    for group in optimizer.param_groups:
        for param in group["params"]:
            param.grad = None
