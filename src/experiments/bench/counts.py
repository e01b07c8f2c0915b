"""Work per training step as counts: Python function calls and torch operator calls.

Times on a shared machine scatter by tens of percent (another job's cache and memory traffic slow this
one's steps, even on its own CPU time); counts do not move. A count per step is the same on every
machine for the same code, so it shows what a change removed exactly, and it says where the time of a
step can go: each Python call costs tens to hundreds of nanoseconds, each torch operator call a few
microseconds of dispatch on the host (and a kernel launch on a GPU).

Python calls are counted with ``sys.setprofile`` (calls of Python functions and of builtins), torch
operators with a ``TorchDispatchMode`` (every ATen operator the dispatcher runs on the calling thread:
forward, loss, optimizer, bookkeeping; on a GPU the backward pass runs on autograd's device thread and
is not seen). The two are counted in separate runs, so neither counter's own calls are counted. No
library counts these per step, hence this module.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode


class _OperatorCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


class CallCounter:
    """Counts ``what`` ("python" or "torch") between :meth:`arm` and :meth:`disarm`, like the profiler's window."""

    def __init__(self, what: str) -> None:
        if what not in ("python", "torch"):
            raise ValueError(f"what={what!r}: use python or torch")
        self.what = what
        self.count = 0
        self.window_steps = 0
        self.armed = False
        self._mode: _OperatorCounter | None = None

    def _on_event(self, frame, event: str, arg: Any) -> None:
        if event == "call" or event == "c_call":
            self.count += 1

    def arm(self) -> None:
        self.armed = True
        if self.what == "python":
            sys.setprofile(self._on_event)
        else:
            self._mode = _OperatorCounter()
            self._mode.__enter__()

    def disarm(self, steps: int) -> None:
        if not self.armed:
            return
        if self.what == "python":
            sys.setprofile(None)
        else:
            self._mode.__exit__(None, None, None)
            self.count += self._mode.calls
        self.armed = False
        self.window_steps += steps

    def profile(self, action_name: str):
        return nullcontext()

    def per_step(self) -> float:
        return self.count / max(1, self.window_steps)
