"""Lightning callbacks the benchmark slips into a real training run through ``+callbacks.<name>``.

They live apart from :mod:`experiments.benchmark` because they need Lightning at import time, while the
benchmark's ``--help`` must not import torch. Being plain ``_target_`` callbacks, they enter the run the
same way a user's callback would, so the run they time is the pipeline's own, not a copy of it.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
import warnings
from collections import Counter
from typing import Any

import pytorch_lightning as pl
import torch


def _sync(module: pl.LightningModule) -> None:
    """Wait for queued GPU work, so a timestamp means 'done', not 'launched'. No-op on CPU."""
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)


class StepTimer(pl.Callback):
    """Times steps ``start_step`` .. end of training, excluding the warm-up steps before it.

    The clock starts at ``on_train_batch_start`` of global step ``start_step`` (after that batch was
    fetched and augmented) and stops at every ``on_train_batch_end``; the plain loop in
    :mod:`experiments.bench.training` uses exactly the same window, and the same ``clock``
    (``wall`` or ``process``, see :func:`experiments.bench.common.clock_function`).
    """

    def __init__(self, start_step: int = 0, clock: str = "wall") -> None:
        from experiments.bench.common import clock_function

        self.start_step = int(start_step)
        self.clock = clock_function(clock)
        self.started: float | None = None
        self.stopped: float | None = None
        self.steps = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == self.start_step and self.started is None:
            _sync(pl_module)
            self.started = self.clock()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self.started is not None:
            _sync(pl_module)
            self.stopped = self.clock()
            self.steps = trainer.global_step - self.start_step

    @property
    def seconds(self) -> float:
        if self.started is None or self.stopped is None:
            raise RuntimeError("StepTimer saw no step after the warm-up: raise trainer.max_steps")
        return self.stopped - self.started


class PairedBlocks(pl.Callback):
    """Times our steps in blocks of ``block`` and runs a rival's block (the plain loop) between two of ours.

    On a shared or virtual machine a core's speed drifts by 10-30% within seconds, so two whole runs
    timed one after the other compare the machine's moods as much as the two loops (two identical plain
    loops measured 0.91-1.00 of each other that way). Alternating blocks of a few dozen steps inside ONE
    run puts each of our blocks between two of the rival's, moments apart; the ratio of each of our
    blocks to the mean of its two neighbours cancels drift and order, and the median over blocks
    ignores a block a burst of load hit. Our clock is paused while the rival runs. A block of ours
    that crossed an epoch's end (validation, checkpoints) is left out.

    ``rival(steps)`` trains that many steps and returns their seconds on the same clock; it is called
    with ``warmup`` steps once, untimed, before the first block.
    """

    def __init__(self, start_step: int, block: int, rival, warmup: int = 0, clock: str = "wall") -> None:
        from experiments.bench.common import clock_function

        self.start_step, self.block, self.rival, self.warmup = int(start_step), int(block), rival, int(warmup)
        self.clock = clock_function(clock)
        self.ours: list[float] = []  # seconds of each of our blocks (None where an epoch ended inside it)
        self.rivals: list[float] = []  # seconds of the rival's blocks: one before our first, one after each
        self._started: float | None = None
        self._epoch = -1
        self._last_step = -1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        done = trainer.global_step - self.start_step
        if done < 0 or done % self.block or trainer.global_step == self._last_step:
            return  # (several batches share a global step under gradient accumulation: act once per step)
        self._last_step = trainer.global_step
        _sync(pl_module)
        now = self.clock()
        if done == 0:
            self.rival(self.warmup)
        else:
            self.ours.append(now - self._started if trainer.current_epoch == self._epoch else math.nan)
        self.rivals.append(self.rival(self.block))
        self._epoch = trainer.current_epoch
        _sync(pl_module)
        self._started = self.clock()

    def ratios(self) -> list[float]:
        """Per block of ours: mean of the rival's two neighbouring blocks / ours (> 1: ours is faster)."""
        return [(self.rivals[i] + self.rivals[i + 1]) / 2 / ours for i, ours in enumerate(self.ours)
                if math.isfinite(ours) and ours > 0]


# Tensor methods that copy a value to the host: on a GPU each one waits for the device (a sync).
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")


class SyncProbe(pl.Callback):
    """Counts host reads of tensor values (``.item()``, ``float(t)``, ...) in steps ``start_step`` ..
    ``start_step + window - 1``, step by step.

    On a GPU each such read is a device sync; on the CPU it is harmless, but the code path is the same,
    so counting them here tells whether a GPU would sync every step. A read is charged to the step
    whose ``on_train_batch_start`` came last, so the logger's write after ``on_train_batch_end`` counts
    in its own step. Steps after which ``(step + 1) % every_n_steps == 0`` are the scheduled host
    points (Lightning's logging steps, the non-finite guard's check, the gradient-flow read-out): the
    report gives their reads apart from the reads on every other step, which should be none. The
    counting wrappers sit on ``torch.Tensor`` only inside the window, and the probe is never timed.
    Put it first in ``trainer.callbacks`` so that the whole window is covered.
    """

    def __init__(self, start_step: int = 0, window: int = 20, every_n_steps: int = 50) -> None:
        self.start_step, self.window, self.every_n_steps = int(start_step), int(window), max(1, int(every_n_steps))
        self.calls: Counter[str] = Counter()
        self.sites: Counter[str] = Counter()
        self.by_step: Counter[int] = Counter()
        self.cuda_syncs: Counter[int] = Counter()  # on a GPU: torch's own sync report, per step
        self.steps = 0
        self._step = -1
        self._saved: dict[str, Any] = {}
        self._cuda: Any = None  # (warnings catcher, its record list) while CUDA's sync debug mode is on

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        step = trainer.global_step
        if step == self.start_step and not self._saved and not self.steps:
            self._install()
        elif step >= self.start_step + self.window:
            self._remove()
        if self._saved:
            self._count_cuda_syncs()
            self._step = step
            self.steps = step - self.start_step + 1

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove()

    def scheduled(self, step: int) -> bool:
        return (step + 1) % self.every_n_steps == 0

    def _install(self) -> None:
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = torch.Tensor.__dict__.get(name, _INHERITED)
            setattr(torch.Tensor, name, self._counting(name, original))
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            # torch reports every synchronizing CUDA call (blocking copies included, which the method
            # wrappers cannot see) as a warning in this mode; collect them step by step.
            catcher = warnings.catch_warnings(record=True)
            records = catcher.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            self._cuda = (catcher, records)

    def _count_cuda_syncs(self) -> None:
        if self._cuda is not None:
            records = self._cuda[1]
            self.cuda_syncs[self._step] += sum("synchroniz" in str(r.message) for r in records)
            records.clear()

    def _remove(self) -> None:
        if self._cuda is not None:
            self._count_cuda_syncs()
            torch.cuda.set_sync_debug_mode(0)
            self._cuda[0].__exit__(None, None, None)
            self._cuda = None
        for name, saved in self._saved.items():
            if saved is _INHERITED:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, saved)
        self._saved = {}

    def _counting(self, name: str, original):
        probe = self

        def wrapper(tensor, *args, **kwargs):
            if name != "cpu" or tensor.device.type != "cpu":  # .cpu() of a CPU tensor copies nothing
                probe.calls[name] += 1
                probe.sites[_caller()] += 1
                probe.by_step[probe._step] += 1
            return original(tensor, *args, **kwargs)

        return wrapper

    def report(self) -> dict[str, Any]:
        total = sum(self.calls.values())
        steps = range(self.start_step, self.start_step + self.steps)
        scheduled = [s for s in steps if self.scheduled(s)]
        unscheduled = sum(n for s, n in self.by_step.items() if not self.scheduled(s))
        other_steps = self.steps - len(scheduled)
        return {"steps": self.steps, "first_step": self.start_step, "every_n_steps": self.every_n_steps,
                "host_reads": total,
                "host_reads_per_step": total / self.steps if self.steps else float("nan"),
                "scheduled_steps": scheduled,
                "reads_on_scheduled_steps": sum(self.by_step[s] for s in scheduled),
                "reads_per_step_outside_scheduled": unscheduled / other_steps if other_steps else float("nan"),
                "by_step": {str(s): n for s, n in sorted(self.by_step.items())},
                "cuda_syncs_by_step": {str(s): n for s, n in sorted(self.cuda_syncs.items()) if n},
                "cuda_syncs_outside_scheduled": sum(n for s, n in self.cuda_syncs.items() if not self.scheduled(s)),
                "by_method": dict(self.calls), "top_sites": dict(self.sites.most_common(8))}


_INHERITED = object()


def _caller() -> str:
    """'file:line (function)' of the innermost frame outside torch and this file: who asked for the value."""
    for frame in reversed(traceback.extract_stack(limit=14)[:-2]):
        path = frame.filename.replace(os.sep, "/")
        if "/torch/" not in path and not path.endswith("bench/callbacks.py"):
            return f"{'/'.join(path.split('/')[-3:])}:{frame.lineno} ({frame.name})"
    return "?"


class FirstStepStamp(pl.Callback):
    """Prints the wall-clock time of the first training step, then ends the process at once.

    Used by the start-up benchmark through ``+callbacks.first_step._target_=...``: the command under
    test is the real ``python -m experiments.train``, and exiting right there keeps the measurement
    from paying for a whole training.
    """

    MARK = "BENCH_FIRST_STEP"

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        print(f"{self.MARK} {time.time():.6f}", flush=True)
        sys.stderr.flush()
        os._exit(0)
