"""Inference latency and throughput of one network on this machine: eval mode, no autograd, warm-up
passes, then the median of timed passes.

The loop is written here rather than taken from ``torch.utils.benchmark.Timer``: its
``blocked_autorange`` decides the number of passes itself (a single one when a pass outlasts
``min_run_time``, as a VGG batch does on a CPU) and has no fixed warm-up, while the map's table states
"warm-up w, median of at least r passes" for every model alike.

A batch of 64 at the paper's input size would take the CPU minutes for the largest models, so that
batch runs at the largest of the paper's size, its half, its quarter, ... that the time budget allows
(estimated from the batch-1 time at the paper's size, as multiply-adds grow with the image's area) and
that the network accepts; the size timed is recorded beside every figure. A network whose classifier
is sized for the paper's input (VGG, AlexNet: the first FC layer takes the last feature map) is built
again for the smaller size, and the record says so (``rebuilt``): its convolutions are the paper's,
its first FC layer takes the smaller map. A network that takes no size within the budget (Inception
takes nothing below 149 pixels) gets one timed pass at its smallest size, and the record says how
many passes were timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

MIN_SIZE = 32  # below this the downsampling stages of an ImageNet network run out of pixels
MAX_PASSES = 50


@dataclass(frozen=True)
class Timing:
    """The timed passes of one batch size at one input size."""

    batch: int
    size: int
    warmup: int
    seconds: tuple[float, ...]
    rebuilt: bool = False  # built again for ``size`` (the paper's network refused that input as it was)

    @property
    def median_s(self) -> float:
        return float(statistics.median(self.seconds))

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.median_s

    @property
    def images_per_s(self) -> float:
        return self.batch / self.median_s

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": list(self.seconds), "passes": len(self.seconds),
                "latency_ms": self.latency_ms, "images_per_s": self.images_per_s}


def time_forward(model: nn.Module, batch: int, size: int, channels: int = 3, warmup: int = 1,
                 rounds: int = 3, min_seconds: float = 0.25) -> Timing:
    """Time ``model`` on a ``batch`` of ``channels`` x ``size`` x ``size`` images.

    ``warmup`` passes first (one-off costs: kernel selection, memory pools), then at least ``rounds``
    timed passes, more while their total is under ``min_seconds`` (up to 50), so a 5 ms network is
    not judged on three samples. Raises what the network raises for an input it cannot take.
    """
    model.eval()
    images = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0))
    seconds: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(images)
        while len(seconds) < rounds or (sum(seconds) < min_seconds and len(seconds) < MAX_PASSES):
            start = time.perf_counter()
            model(images)
            seconds.append(time.perf_counter() - start)
    return Timing(batch, size, warmup, tuple(seconds))


def sizes_to_try(paper_size: int) -> list[int]:
    """The paper's size, then its half, quarter, ... down to 32 pixels."""
    sizes = [paper_size]
    while sizes[-1] // 2 >= MIN_SIZE:
        sizes.append(sizes[-1] // 2)
    return sizes


def takes(model: nn.Module, size: int, channels: int = 3) -> bool:
    """Whether ``model`` runs on one ``size``-pixel image: a probe at 1/64 of a batch's cost, so a
    classifier sized for another input (VGG's first FC layer) is found out before a whole batch runs."""
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, channels, size, size))
    except (RuntimeError, ValueError):  # the network's own refusal of this size
        return False
    return True


def time_within_budget(model: nn.Module, batch: int, paper_size: int, seconds_per_image: float,
                       budget_per_pass: float, channels: int = 3, warmup: int = 1, rounds: int = 3,
                       rebuild: Callable[[int], nn.Module] | None = None) -> Timing:
    """Time ``batch`` at the largest size the network takes whose pass fits ``budget_per_pass``.

    The estimate of a pass at size ``s`` is ``batch * seconds_per_image * (s / paper_size)^2`` (the
    batch-1 time per image at the paper's size, scaled by area). At each size ``model`` (built for the
    paper's size) is tried first, then ``rebuild(size)``; a size that neither takes is skipped. When no
    size it takes fits the budget, the smallest it takes is timed with a single pass after the warm-up
    (an Inception that takes nothing below 149 pixels is timed there, once), so one network cannot
    spend the whole budget; the record's ``seconds`` say how many passes were timed.
    """
    sizes = sizes_to_try(paper_size)
    fitting = [s for s in sizes if batch * seconds_per_image * (s / paper_size) ** 2 <= budget_per_pass]
    for size in fitting + [s for s in reversed(sizes) if s not in fitting]:
        network, rebuilt = model, False
        if not takes(network, size, channels) and rebuild is not None and size != paper_size:
            try:
                network, rebuilt = rebuild(size), True
            except ValueError:  # the builder refuses this size (too small for its downsampling)
                continue
        if not takes(network, size, channels):
            continue
        passes = rounds if size in fitting else 1
        return replace(time_forward(network, batch, size, channels, warmup, passes,
                                    min_seconds=0.25 if size in fitting else 0.0), rebuilt=rebuilt)
    raise RuntimeError(f"{type(model).__name__} takes none of the sizes {sizes}")
