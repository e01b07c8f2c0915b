"""What every benchmark section shares: interleaved timing, clocks, machine facts.

Absolute times on a shared machine are noise, so every figure is a ratio of two contenders timed in
the same process, alternated round by round (A B, B A, A B, ...) so background load hits both alike;
a ratio is the median of the per-round ratios (the JSON keeps every sample).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def interleave(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each contender once per round, reversing the order every other round; collect the values."""
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            samples[name].append(float(contenders[name]()))
    return samples


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median of the per-round ratios: each pair ran back to back, so it saw (nearly) the same load."""
    pairs = [a / b for a, b in zip(numerator, denominator) if b]
    return median(pairs) if pairs else float("nan")


def ratio_of_medians(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    bottom = median(denominator)
    return median(numerator) / bottom if bottom else float("nan")


@contextmanager
def quiet_lightning():
    """Keep Lightning's info lines (GPU available, model summary) out of the benchmark's table."""
    import logging
    import warnings

    from experiments.core.console import silence_harmless_warnings

    silence_harmless_warnings()
    # A benchmark run stops at max_steps inside its first epoch, before any validation: expected here.
    warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")
    # The bare-Lightning contender trains only: the datamodule's validation set is not its concern.
    warnings.filterwarnings("ignore", message=".*val_dataloader.* but have no `validation_step`.*")
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    """The facts a reader needs to weigh the figures: CPU, cores, threads, versions, the GPU if any."""
    import pytorch_lightning
    import torch

    facts: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    return facts


def clock_function(name: str):
    """``time.perf_counter`` for ``wall``, ``time.process_time`` for ``process``.

    With one thread (``cpu.threads: 1``) the process's CPU time is the step's own work: on a core shared
    with other jobs the wall clock also counts the time they took, the process clock does not.
    """
    if name not in ("wall", "process"):
        raise ValueError(f"clock={name!r}: use wall or process")
    return time.perf_counter if name == "wall" else time.process_time


def json_subprocess(args: list[str], cwd) -> dict:
    """Run ``python <args>`` in ``cwd``; its last stdout line is a JSON object (a measurement in a fresh process)."""
    import json
    import subprocess

    result = subprocess.run([sys.executable, *args], cwd=cwd, text=True, capture_output=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
