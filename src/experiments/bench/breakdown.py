"""Where a training step's time goes: a Lightning profiler that keeps each action's EXCLUSIVE time.

Lightning wraps every hook it calls (``[Callback]X.on_train_batch_end``, ``[Strategy]S.batch_to_device``,
``run_training_batch``, ...) in ``trainer.profiler.profile(name)``. Its ``SimpleProfiler`` keeps each
action's total time, so nested actions count twice (``run_training_batch`` contains ``training_step``,
``backward`` and every callback hook called in between). :class:`StepBreakdown` keeps a stack and
charges each action only for the time spent in it outside its children, so the actions add up to the
step; what no action covers is Lightning's own loop code (progress counters, closures, dispatch).
It records only inside a window of steps (armed by :class:`BreakdownWindow`), so start-up and the
end-of-run work stay out. Lightning has no exclusive-time profiler and no step window: hence this one.

:func:`instrument` adds three actions that Lightning does not profile: the network's forward pass,
``LightningModule.log`` and the logger connector's per-step work. :func:`categorize` sums the actions
into the categories the benchmark reports.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.profilers import Profiler

# Report order. "Lightning loop" is the window's time outside every profiled action.
CATEGORIES = (
    "data: fetch batch",
    "data: transfer + augment (datamodule hooks)",
    "model: forward",
    "training_step: loss + bookkeeping",
    "backward",
    "optimizer step + zero_grad",
    "logging (self.log, logger connector)",
    "our callbacks",
    "Lightning callbacks (checkpoint, lr monitor)",
    "progress display",
    "Lightning hooks (module, strategy, datamodule)",
    "Lightning loop (closure, progress, dispatch)",
)
FORWARD, LOGGING = "[model] forward", "[logging] "


class StepBreakdown(Profiler):
    """Exclusive seconds (and calls) per profiled action, recorded only while :attr:`armed`.

    The profiler's own cost (two clock reads and some bookkeeping per action) is measured once
    (:meth:`calibrate`) and taken out: half of it from the action, half from its parent, which is where
    the clock reads fall; :attr:`overhead_seconds` is the total taken out of the window.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self.clock = clock
        self.exclusive: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.child_calls: Counter[str] = Counter()
        self.armed = False
        self.window_seconds = 0.0
        self.window_steps = 0
        self._armed_at = 0.0
        self._stack: list[list[Any]] = []  # [action, started, seconds in children, children]
        self.cost = self.calibrate()

    def calibrate(self, pairs: int = 2000) -> float:
        """Seconds one start/stop pair costs (the best of five tries: interruptions only add)."""
        best = float("inf")
        for _ in range(5):
            began = self.clock()
            for _ in range(pairs):
                self.start("calibration")
                self.stop("calibration")
            best = min(best, (self.clock() - began) / pairs)
        self._stack.clear()
        return best

    def start(self, action_name: str) -> None:
        self._stack.append([action_name, self.clock(), 0.0, 0])

    def stop(self, action_name: str) -> None:
        now = self.clock()
        for depth in range(len(self._stack) - 1, -1, -1):  # normally the top; tolerate a missed stop
            if self._stack[depth][0] == action_name:
                break
        else:
            return
        name, started, children, child_calls = self._stack[depth]
        del self._stack[depth:]
        total = now - started
        if self.armed:
            self.exclusive[name] += total - children
            self.calls[name] += 1
            self.child_calls[name] += child_calls
        if self._stack:
            self._stack[-1][2] += total
            self._stack[-1][3] += 1

    def arm(self) -> None:
        """Start recording; actions already open count from now on."""
        now = self.clock()
        for frame in self._stack:
            frame[1], frame[2], frame[3] = now, 0.0, 0
        self.armed, self._armed_at = True, now

    def disarm(self, steps: int) -> None:
        if self.armed:
            self.window_seconds += self.clock() - self._armed_at
            self.window_steps += steps
            self.armed = False

    def summary(self) -> str:
        return ""

    @property
    def overhead_seconds(self) -> float:
        return sum(self.calls.values()) * self.cost

    def step_us(self) -> float:
        """Microseconds per step of the window, the profiler's own cost taken out."""
        return (self.window_seconds - self.overhead_seconds) / max(1, self.window_steps) * 1e6

    def per_step_us(self) -> dict[str, float]:
        """Exclusive microseconds per step of every action (the profiler's cost taken out), largest first."""
        steps = max(1, self.window_steps)
        half = self.cost / 2
        corrected = {name: seconds - (self.calls[name] + self.child_calls[name]) * half
                     for name, seconds in self.exclusive.items()}
        ranked = sorted(corrected.items(), key=lambda item: -item[1])
        return {name: seconds / steps * 1e6 for name, seconds in ranked}


class BreakdownWindow(pl.Callback):
    """Arms the trainer's :class:`StepBreakdown` (or ``target``: anything with ``arm()`` and
    ``disarm(steps)``) for steps ``start_step`` .. ``start_step + steps``.

    Arming and disarming both happen in ``on_train_batch_start``, so whatever runs before this callback
    in that hook is left out of the first step and counted in the step after the last: exactly
    ``steps`` steps of everything are recorded (the run needs ``max_steps >= start_step + steps + 1``).
    """

    def __init__(self, start_step: int, steps: int, target: Any = None) -> None:
        self.start_step, self.steps, self.target = int(start_step), int(steps), target

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        profiler = self.target if self.target is not None else trainer.profiler
        if not hasattr(profiler, "arm"):
            return
        if trainer.global_step == self.start_step:
            profiler.arm()
        elif trainer.global_step == self.start_step + self.steps:
            profiler.disarm(self.steps)


def instrument(trainer: pl.Trainer, module: pl.LightningModule, network) -> None:
    """Profile what Lightning does not: the forward pass, ``self.log`` and the logger connector.

    Instance attributes shadow the methods for this one run (nothing is patched on the classes).
    """
    profiler = trainer.profiler
    instrument_forward(profiler, network)
    _wrap(module, "log", LOGGING + "LightningModule.log", profiler)
    connector = trainer._logger_connector
    for name in ("on_batch_start", "on_batch_end", "update_train_step_metrics"):
        _wrap(connector, name, LOGGING + "logger connector", profiler)


def instrument_forward(profiler: Profiler, network) -> None:
    """The network's forward pass as its own action."""
    network.register_forward_pre_hook(lambda *_: profiler.start(FORWARD))
    network.register_forward_hook(lambda *_: profiler.stop(FORWARD))


def _wrap(owner: Any, name: str, action: str, profiler: Profiler) -> None:
    original = getattr(owner, name)

    def profiled(*args, **kwargs):
        profiler.start(action)
        try:
            return original(*args, **kwargs)
        finally:
            profiler.stop(action)

    setattr(owner, name, profiled)


def categorize(per_action_us: dict[str, float], callbacks: Iterable[pl.Callback], step_us: float) -> dict[str, float]:
    """Sum per-action microseconds into :data:`CATEGORIES`; the window's rest is Lightning's loop.

    The benchmark's own callbacks (the window, a probe) are left out, from the step too.
    """
    from pytorch_lightning.callbacks import ProgressBar

    kinds = {}
    for callback in callbacks:
        if type(callback).__module__.startswith("experiments.bench"):
            kinds[callback.state_key] = None
            continue
        module = type(callback).__module__
        kinds[callback.state_key] = ("progress display" if isinstance(callback, ProgressBar)
                                     else "Lightning callbacks (checkpoint, lr monitor)"
                                     if module.startswith(("pytorch_lightning", "lightning")) else "our callbacks")
    out = dict.fromkeys(CATEGORIES, 0.0)
    rest = step_us
    for action, micros in per_action_us.items():
        category = _category(action, kinds)
        rest -= micros
        if category is not None:
            out[category] += micros
        else:
            step_us -= micros
    out["Lightning loop (closure, progress, dispatch)"] += rest
    out["step"] = step_us
    return out


def _category(action: str, callback_kinds: dict[str, str | None]) -> str | None:
    if action == FORWARD:
        return "model: forward"
    if action.startswith(LOGGING):
        return "logging (self.log, logger connector)"
    if action.endswith("train_dataloader_next"):
        return "data: fetch batch"
    if action.startswith("[Callback]"):
        key = action[len("[Callback]"):].rsplit(".", 1)[0]
        return callback_kinds.get(key, "our callbacks")
    hook = action.rsplit(".", 1)[-1]
    if hook in ("batch_to_device", "transfer_batch_to_device", "on_before_batch_transfer", "on_after_batch_transfer"):
        return "data: transfer + augment (datamodule hooks)"
    if hook == "training_step":
        return "training_step: loss + bookkeeping"
    if hook == "backward":
        return "backward"
    if hook in ("optimizer_step", "optimizer_zero_grad"):
        return "optimizer step + zero_grad"
    if action == "run_training_batch":  # (the plain loop's own Python is in the window's rest too)
        return "Lightning loop (closure, progress, dispatch)"
    return "Lightning hooks (module, strategy, datamodule)"
