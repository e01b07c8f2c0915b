"""Matplotlib layouts the analyses share (on the Agg canvas, never pyplot: see callbacks.plotting)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from experiments.analysis.common import to_display

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def image_rows(rows: Sequence[Sequence[torch.Tensor]], row_titles: Sequence[str] | None = None,
               column_titles: Sequence[str] | None = None, cmaps: Sequence[str | None] | None = None,
               value_range: Sequence[tuple[float, float] | None] | None = None, tile: float = 1.6,
               title: str | None = None, tile_titles: Sequence[Sequence[str]] | None = None) -> Figure:
    """A grid of (C, H, W) images, one list per row; one-channel rows drawn with the row's colour map.

    ``value_range`` fixes a row's colour scale (e.g. probabilities 0..1); otherwise each tile is scaled to
    its own range (images in [0, 1] are drawn as they are). ``tile_titles`` gives every tile its own title
    (one list per row), where ``column_titles`` titles the first row only.
    """
    from callbacks.plotting import new_figure

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    figure = new_figure(width=tile * n_cols + 1.2, height=tile * n_rows + (0.6 if title else 0.3))
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(rows):
        cmap = (cmaps or [None] * n_rows)[r]
        limits = (value_range or [None] * n_rows)[r]
        for c in range(n_cols):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c >= len(row):
                axis.axis("off")
                continue
            image = row[c].detach().float().cpu()
            if cmap is not None and image.shape[0] == 1:
                vmin, vmax = limits if limits else (float(image.min()), float(image.max()))
                axis.imshow(image[0].numpy(), cmap=cmap, vmin=vmin, vmax=vmax)
            else:
                shown = to_display(image)
                axis.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1)
            if r == 0 and column_titles is not None and c < len(column_titles):
                axis.set_title(column_titles[c], fontsize=7)
            if tile_titles is not None and r < len(tile_titles) and c < len(tile_titles[r]):
                axis.set_title(tile_titles[r][c], fontsize=7)
            if c == 0 and row_titles is not None:
                axis.set_ylabel(row_titles[r], fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def mosaic(images: Sequence[torch.Tensor], columns: int | None = None, gap: int = 1, fill: float = 1.0) -> torch.Tensor:
    """Equal-sized (C, H, W) images tiled into one (C, H', W') image, ``columns`` per row (a square by
    default: Zeiler & Fergus's 3x3 blocks of patches), ``gap`` pixels of ``fill`` between them."""
    import math

    if not images:
        raise ValueError("mosaic of no images")
    channels = max(int(i.shape[0]) for i in images)
    height, width = int(images[0].shape[-2]), int(images[0].shape[-1])
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    canvas = torch.full((channels, rows * (height + gap) - gap, columns * (width + gap) - gap), fill)
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        top, left = r * (height + gap), c * (width + gap)
        canvas[:, top:top + height, left:left + width] = image.detach().float().cpu().expand(channels, -1, -1)
    return canvas
