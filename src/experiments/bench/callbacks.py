"""Lightning callbacks the benchmark slips into a real training run through ``+callbacks.<name>``.

They live apart from :mod:`experiments.benchmark` because they need Lightning at import time, while the
benchmark's ``--help`` must not import torch. Being plain ``_target_`` callbacks, they enter the run the
same way a user's callback would, so the run they time is the pipeline's own, not a copy of it.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
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
    :mod:`experiments.bench.training` uses exactly the same window.
    """

    def __init__(self, start_step: int = 0) -> None:
        self.start_step = int(start_step)
        self.started: float | None = None
        self.stopped: float | None = None
        self.steps = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == self.start_step and self.started is None:
            _sync(pl_module)
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self.started is not None:
            _sync(pl_module)
            self.stopped = time.perf_counter()
            self.steps = trainer.global_step - self.start_step

    @property
    def seconds(self) -> float:
        if self.started is None or self.stopped is None:
            raise RuntimeError("StepTimer saw no step after the warm-up: raise trainer.max_steps")
        return self.stopped - self.started


# Tensor methods that copy a value to the host: on a GPU each one waits for the device (a sync).
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")


class SyncProbe(pl.Callback):
    """Counts host reads of tensor values (``.item()``, ``float(t)``, ...) during steps after ``start_step``.

    On a GPU each such read is a device sync; on the CPU it is harmless, but the code path is the same,
    so counting them here tells whether logging every step would sync a GPU every step. The counting
    wrappers sit on ``torch.Tensor`` only inside the probed window, and the probe is never timed.
    """

    def __init__(self, start_step: int = 0, window: int = 20) -> None:
        self.start_step, self.window = int(start_step), int(window)
        self.calls: Counter[str] = Counter()
        self.sites: Counter[str] = Counter()
        self.steps = 0
        self._saved: dict[str, Any] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.global_step == self.start_step and not self._saved:
            self._install()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if self._saved:
            self.steps = trainer.global_step - self.start_step
            if self.steps >= self.window:
                self._remove()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove()

    def _install(self) -> None:
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = torch.Tensor.__dict__.get(name, _INHERITED)
            setattr(torch.Tensor, name, self._counting(name, original))

    def _remove(self) -> None:
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
            return original(tensor, *args, **kwargs)

        return wrapper

    def report(self) -> dict[str, Any]:
        total = sum(self.calls.values())
        return {"steps": self.steps, "host_reads": total,
                "host_reads_per_step": total / self.steps if self.steps else float("nan"),
                "by_method": dict(self.calls), "top_sites": dict(self.sites.most_common(5))}


_INHERITED = object()


def _caller() -> str:
    """'file:line' of the innermost frame outside torch and this file: who asked for the value."""
    for frame in reversed(traceback.extract_stack(limit=12)[:-2]):
        path = frame.filename.replace(os.sep, "/")
        if "/torch/" not in path and not path.endswith("bench_callbacks.py"):
            return f"{'/'.join(path.split('/')[-3:])}:{frame.lineno}"
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
