"""Start-up: wall time of the real ``python -m experiments.train`` commands, each in a fresh process.

``--help`` and ``--cfg job`` must answer without importing torch, torchvision or Lightning; the time to
the first training step is what a user waits before anything trains. That one is measured on the real
command: a callback added with ``+callbacks.first_step._target_=...`` prints the wall-clock time at the
first ``on_train_batch_start`` and ends the process there (so no training is paid for), into a
temporary output root (so no run folder is left behind).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from experiments.bench.common import interleave, median
from experiments.core.locations import REPO_ROOT as REPO


def _run(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


def command_seconds(args: Sequence[str], timeout: float = 120) -> float:
    started = time.perf_counter()
    result = _run(args, timeout)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"experiments.train {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return seconds


def first_step_seconds(overrides: Sequence[str], timeout: float = 300) -> float:
    """Seconds from launching the command to its first training step (wall clock, same machine)."""
    from experiments.bench.callbacks import FirstStepStamp

    with tempfile.TemporaryDirectory(prefix="bench-start-") as root:
        args = [*overrides, f"paths.output_root={root}",
                "+callbacks.first_step._target_=experiments.bench.callbacks.FirstStepStamp"]
        started = time.time()
        result = _run(args, timeout)
    for line in result.stdout.splitlines():
        if line.startswith(FirstStepStamp.MARK):
            return float(line.split()[1]) - started
    raise RuntimeError(f"experiments.train {' '.join(overrides)} reached no training step:\n{result.stderr[-2000:]}")


def startup(repeats: int, first_step_repeats: int, first_step_overrides: Sequence[str],
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Medians of ``--help`` and ``--cfg job`` (interleaved) and of the time to the first step."""
    log(f"  start-up: {repeats} x (--help, --cfg job), {first_step_repeats} x first step")
    samples = interleave({"help": lambda: command_seconds(["--help"]),
                          "cfg_job": lambda: command_seconds(["--cfg", "job"])}, repeats)
    result: dict[str, Any] = {"samples_seconds": samples, "help_seconds": median(samples["help"]),
                              "cfg_job_seconds": median(samples["cfg_job"]), "target_seconds": 1.0}
    if first_step_repeats:
        result["first_step_command"] = "python -m experiments.train " + " ".join(first_step_overrides)
        try:  # e.g. the default experiment's dataset is not on this machine: say so, keep the other figures
            first = [first_step_seconds(first_step_overrides) for _ in range(first_step_repeats)]
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            result["first_step_error"] = " ".join(str(error).split())[-500:]
            log(f"  first step: {result['first_step_error'][-200:]}")
        else:
            result["samples_seconds"]["first_step"] = first
            result["first_step_seconds"] = median(first)
    return result
