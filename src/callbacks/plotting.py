"""Figures and image grids for the diagnostics callbacks.

Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas, never through ``pyplot``: no
global figure registry to leak, no GUI backend picked up from the environment, safe in a training
process. Image grids are plain tensor operations (no matplotlib), so per-epoch pictures stay cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(width: float = 6.4, height: float = 4.0, dpi: int = 100) -> Figure:
    """A figure on the Agg canvas (the backend never matters: nothing is ever shown on screen)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def render(figure: Figure) -> np.ndarray:
    """The figure's pixels, HxWx3 uint8 (one render for the PNG file and every logger)."""
    canvas = figure.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3])


def normalise_each(tiles: torch.Tensor) -> torch.Tensor:
    """Scale every tile (first dimension) to [0, 1] on its own min..max; a constant tile becomes 0.5."""
    flat = tiles.detach().float().flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    scaled = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.full_like(flat, 0.5))
    return scaled.view_as(tiles)


def grid(tiles: torch.Tensor, columns: int | None = None, min_tile_px: int = 24, padding: int = 1,
         pad_value: float = 1.0) -> torch.Tensor:
    """Tiles (N, C, h, w) in [0, 1] as one CxHxW image, each tile enlarged (nearest) to ``min_tile_px``.

    ``C`` is 1 or 3. Small kernels (5x5, 3x3) need the enlargement to be visible at all in a dashboard.
    """
    tiles = tiles.detach().float().cpu()
    count, channels, height, width = tiles.shape
    scale = max(1, -(-min_tile_px // max(height, width)))
    if scale > 1:
        tiles = F.interpolate(tiles, scale_factor=scale, mode="nearest")
        height, width = height * scale, width * scale
    columns = columns or max(1, int(np.ceil(np.sqrt(count))))
    rows = -(-count // columns)
    canvas = torch.full((channels, rows * (height + padding) + padding, columns * (width + padding) + padding),
                        pad_value)
    for index in range(count):
        r, c = divmod(index, columns)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        canvas[:, top : top + height, left : left + width] = tiles[index]
    return canvas


def denormalise(images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> torch.Tensor:
    """Undo the data pipeline's per-channel normalisation for display; clamp to [0, 1]."""
    images = images.detach().float().cpu()
    if mean is not None and std is not None and len(mean) == images.shape[1] == len(std):
        m = torch.tensor(list(mean)).view(1, -1, 1, 1)
        s = torch.tensor(list(std)).view(1, -1, 1, 1)
        images = images * s + m
    else:  # unknown normalisation: stretch each image for display
        images = normalise_each(images)
    return images.clamp(0, 1)
