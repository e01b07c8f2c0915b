"""Send diagnostics to whichever loggers a run has, and always to PNG files in the run folder.

Callbacks describe *what* to show (a scalar, a histogram, an image, a matplotlib figure); this module
knows *where* it goes: TensorBoard (``add_scalar``/``add_histogram_raw``/``add_image``), W&B
(``wandb.Histogram``/``wandb.Image`` through ``logger.experiment.log``), any other logger through its
``log_metrics`` (the CSV logger gets the scalars), and ``<run>/plots/*.png`` for every image, so a run
with no dashboard still shows every picture.

Everything here is rank-zero only and calls no collective operation, so callbacks may call it from
rank-zero-only code under DDP. Histograms arrive already reduced (see :class:`Histogram`): the raw
values never leave the device.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_only

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from matplotlib.figure import Figure

PLOTS_DIR = "plots"
DIAGNOSTICS_DIR = "diagnostics"


@dataclass
class Histogram:
    """A histogram reduced on the tensor's device: what TensorBoard and W&B need, nothing more."""

    counts: np.ndarray  # (bins,)
    edges: np.ndarray  # (bins + 1,)
    min: float
    max: float
    num: int
    sum: float
    sum_squares: float

    @staticmethod
    def reduce(values: torch.Tensor, bins: int = 64) -> dict[str, torch.Tensor]:
        """The histogram as device tensors (no host sync): call inside a forward hook, finish later."""
        flat = values.detach().float().flatten()
        lo, hi = flat.aminmax()
        # histc needs a non-empty range; widening a constant tensor's range keeps all counts in one bin.
        hi = torch.where(hi > lo, hi, lo + 1e-6)
        counts = _histc(flat, bins, lo, hi)
        return {"counts": counts, "lo": lo, "hi": hi, "sum": flat.sum(), "sum_squares": (flat * flat).sum(),
                "num": torch.tensor(flat.numel(), device=flat.device)}

    @classmethod
    def from_reduced(cls, reduced: Mapping[str, torch.Tensor]) -> Histogram:
        host = {k: v.cpu() for k, v in reduced.items()}
        counts = host["counts"].double().numpy()
        lo, hi = float(host["lo"]), float(host["hi"])
        return cls(counts=counts, edges=np.linspace(lo, hi, len(counts) + 1), min=lo, max=hi,
                   num=int(host["num"]), sum=float(host["sum"]), sum_squares=float(host["sum_squares"]))


def _histc(flat: torch.Tensor, bins: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """``torch.histc`` with tensor bounds, without reading them on the host."""
    index = ((flat - lo) / (hi - lo) * bins).long().clamp_(0, bins - 1)
    return torch.bincount(index, minlength=bins)


def run_dir(trainer: pl.Trainer) -> Path:
    """The run folder: the pipeline makes it the Trainer's ``default_root_dir``."""
    return Path(trainer.default_root_dir)


def plots_dir(trainer: pl.Trainer) -> Path:
    return run_dir(trainer) / PLOTS_DIR


def _tensorboard(logger: Any):
    from pytorch_lightning.loggers import TensorBoardLogger

    return logger.experiment if isinstance(logger, TensorBoardLogger) else None


def _wandb_run(logger: Any):
    from pytorch_lightning.loggers import WandbLogger

    return logger.experiment if isinstance(logger, WandbLogger) else None


@rank_zero_only
def log_scalars(trainer: pl.Trainer, metrics: Mapping[str, float], step: int | None = None) -> None:
    """Scalars to every logger (CSV included), with the epoch, as Lightning's own ``self.log`` rows have."""
    if not metrics:
        return
    step = trainer.global_step if step is None else step
    row = {k: float(v) for k, v in metrics.items()}
    row["epoch"] = trainer.current_epoch
    for logger in trainer.loggers:
        logger.log_metrics(row, step=step)


@rank_zero_only
def log_histogram(trainer: pl.Trainer, tag: str, histogram: Histogram, step: int | None = None) -> None:
    """A histogram to TensorBoard and W&B (other loggers cannot show one)."""
    step = trainer.global_step if step is None else step
    for logger in trainer.loggers:
        writer = _tensorboard(logger)
        if writer is not None:
            writer.add_histogram_raw(tag, min=histogram.min, max=histogram.max, num=histogram.num,
                                     sum=histogram.sum, sum_squares=histogram.sum_squares,
                                     bucket_limits=histogram.edges[1:].tolist(),
                                     bucket_counts=histogram.counts.tolist(), global_step=step)
        run = _wandb_run(logger)
        if run is not None:
            import wandb

            counts, edges = histogram.counts, histogram.edges
            run.log({tag: wandb.Histogram(np_histogram=(counts, edges)), "trainer/global_step": step})


@rank_zero_only
def log_image(trainer: pl.Trainer, tag: str, image: np.ndarray | torch.Tensor, filename: str,
              step: int | None = None, caption: str | None = None) -> Path:
    """An image (HxWx3/4 uint8, or CxHxW float in [0, 1]) to ``plots/<filename>`` and image loggers.

    Returns the PNG's path.
    """
    step = trainer.global_step if step is None else step
    pixels = to_uint8_hwc(image)
    path = plots_dir(trainer) / filename
    save_png(pixels, path)
    send_image(trainer.loggers, tag, pixels, step, caption)
    return path


def send_image(loggers: list[Any], tag: str, pixels: np.ndarray, step: int, caption: str | None = None) -> None:
    """An HxWxC uint8 image to the loggers that show images (TensorBoard, W&B); others are skipped."""
    for logger in loggers:
        writer = _tensorboard(logger)
        if writer is not None:
            writer.add_image(tag, pixels, global_step=step, dataformats="HWC")
        run = _wandb_run(logger)
        if run is not None:
            import wandb

            run.log({tag: wandb.Image(pixels, caption=caption), "trainer/global_step": step})


@rank_zero_only
def log_figure(trainer: pl.Trainer, tag: str, figure: Figure, filename: str, step: int | None = None) -> Path:
    """A matplotlib figure, rendered once, as an image (same destinations as :func:`log_image`)."""
    from callbacks.plotting import render

    return log_image(trainer, tag, render(figure), filename, step=step)


@rank_zero_only
def log_text(trainer: pl.Trainer, tag: str, text: str, step: int | None = None) -> None:
    """A text event for dashboards that show one (TensorBoard's Text tab)."""
    step = trainer.global_step if step is None else step
    for logger in trainer.loggers:
        writer = _tensorboard(logger)
        if writer is not None:
            writer.add_text(tag, text, global_step=step)


def to_uint8_hwc(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """HxWxC uint8 RGB(A) from a CxHxW float tensor in [0, 1] or an HxWxC uint8 array."""
    if isinstance(image, torch.Tensor):
        tensor = image.detach().float().cpu()
        if tensor.ndim == 2:
            tensor = tensor.unsqueeze(0)
        if tensor.shape[0] == 1:
            tensor = tensor.expand(3, -1, -1)
        image = (tensor.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = np.ascontiguousarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {image.dtype}")
    return image


def save_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def safe_name(name: str) -> str:
    """A layer or class name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "x"
