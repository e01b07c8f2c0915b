"""The lectures' chart of the architectures (after Canziani et al. 2016, "An Analysis of Deep Neural
Network Models for Practical Applications", Fig. 2): ImageNet top-1 error against multiply-adds on a
log axis, one labelled marker per model, its area proportional to the model's parameters.

The area scale is a constant (``AREA_PER_MILLION_PARAMS``), not fitted to the models drawn, so two maps
compare marker for marker. A marker is filled when its error is a single-crop figure and hollow when
the paper only gives a multi-crop one (``paper.top1_crops``); the colour is the class that builds the
model. Drawn on the Agg canvas (``callbacks.plotting.new_figure``), never through pyplot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

AREA_PER_MILLION_PARAMS = 12.0  # points^2: VGG-16 (138 M) ~1,660 pt^2, SqueezeNet (1.2 M) ~15 pt^2
SIZE_KEY_PARAMS = (5e6, 25e6, 100e6)


def marker_area(params: float) -> float:
    """The marker's area in points^2 for a model of ``params`` parameters (proportional, no offset)."""
    return AREA_PER_MILLION_PARAMS * params / 1e6


def draw(points: Sequence[dict[str, Any]], title: str | None = None) -> Figure:
    """The chart of ``points`` (dicts with ``model``, ``family``, ``macs``, ``params``, ``top1_err``,
    ``top1_crops``); one scatter collection per family, the legends beside the axes (the corners of the
    chart are where the efficient and the early networks sit)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogLocator, StrMethodFormatter

    from callbacks.plotting import new_figure

    figure = new_figure(width=13.0, height=7.5, dpi=150)
    axis = figure.add_subplot()
    families = sorted({p["family"] for p in points})
    # tab20's strong colours first, then their light partners, the largest families first: the ten
    # largest never get a pale one. The legend stays in alphabetical order.
    palette = [colormaps["tab20"](i) for i in [*range(0, 20, 2), *range(1, 20, 2)]]
    by_size = sorted(families, key=lambda f: (-sum(p["family"] == f for p in points), f))
    colours = {family: palette[rank % len(palette)] for rank, family in enumerate(by_size)}
    family_handles = []
    for family in families:
        members = [p for p in points if p["family"] == family]
        colour = colours[family]
        fill, edge = to_rgba(colour, 0.5), to_rgba(colour, 0.95)
        # Per-marker RGBA (no collection-wide alpha, which would paint a hollow marker's face grey).
        axis.scatter([p["macs"] / 1e9 for p in members], [p["top1_err"] for p in members],
                     s=[marker_area(p["params"]) for p in members], linewidths=1.2, zorder=2,
                     facecolors=[fill if p["top1_crops"] == 1 else (0, 0, 0, 0) for p in members],
                     edgecolors=[edge] * len(members))
        family_handles.append(Line2D([], [], ls="", marker="o", markersize=7, markerfacecolor=fill,
                                     markeredgecolor=edge, label=family))
    axis.set_xscale("log")
    low, high = axis.get_xlim()
    axis.set_xlim(low, high * 1.6)  # room on the right for the last names
    axis.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.xaxis.set_minor_formatter(StrMethodFormatter(""))
    axis.set_xlabel("multiply-adds per image (G, log scale), counted on the network built at the paper's input size")
    axis.set_ylabel("ImageNet top-1 error (%), as published")
    axis.grid(True, which="both", alpha=0.25, zorder=0)
    axis.set_title(title or "ImageNet top-1 error against multiply-adds; marker area proportional to parameters",
                   fontsize=10)
    legend = axis.legend(handles=family_handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
                         title="built by", title_fontsize=7, framealpha=0.8)
    axis.add_artist(legend)
    sizes = [Line2D([], [], ls="", marker="o", markersize=marker_area(n) ** 0.5, markerfacecolor="lightgray",
                    markeredgecolor="gray", label=f"{n / 1e6:.0f} M parameters") for n in SIZE_KEY_PARAMS]
    if any(p["top1_crops"] != 1 for p in points):
        sizes.append(Line2D([], [], ls="", marker="o", markersize=8, markerfacecolor="none", markeredgecolor="gray",
                            label="hollow: a multi-crop\nfigure (no single-crop\none is published)"))
    axis.legend(handles=sizes, loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=7, labelspacing=2.2,
                borderpad=1.2, handlelength=3.5, handletextpad=1.0, framealpha=0.8)
    figure.tight_layout()
    label(axis, points)
    return figure


def label(axis, points: Sequence[dict[str, Any]], fontsize: float = 6.0) -> None:
    """Each model's name just right of its marker, moved up or down by whole lines where it would
    cover a name already placed (a leader line then joins it to its marker).

    Written here because matplotlib has no label placement: adjustText does this iteratively but is
    no dependency of the project, and one greedy pass, in order of multiply-adds, keeps the ~20 names
    around ResNet-50's 4 G apart.
    """
    figure = axis.figure
    renderer = figure.canvas.get_renderer()
    pixels_per_point = figure.dpi / 72
    placed: list[tuple[float, float, float, float]] = []  # label boxes in display pixels
    for point in sorted(points, key=lambda p: (p["macs"], p["top1_err"])):
        anchor = (point["macs"] / 1e9, point["top1_err"])
        x, y = axis.transData.transform(anchor)
        gap = marker_area(point["params"]) ** 0.5 / 2 + 2  # a marker of area s is sqrt(s) points wide
        text = axis.annotate(point["model"], anchor, xytext=(gap, 0), textcoords="offset points", fontsize=fontsize,
                             ha="left", va="center", zorder=3)
        box = text.get_window_extent(renderer)
        width, height = box.width, box.height * 1.1
        left = x + gap * pixels_per_point
        for step in (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6):
            bottom = y + step * height - height / 2
            if not any(left < x1 and left + width > x0 and bottom < y1 and bottom + height > y0
                       for x0, y0, x1, y1 in placed):
                break
        placed.append((left, bottom, left + width, bottom + height))
        if step:  # moved off its marker's line: a thin leader line joins them
            text.set_position((gap, step * height / pixels_per_point))
            axis.annotate("", anchor, xytext=(gap, step * height / pixels_per_point), textcoords="offset points",
                          arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5", "shrinkA": 0, "shrinkB": 0},
                          zorder=1)


def save(figure: Figure, folder: Path, stem: str) -> list[Path]:
    """``<stem>.png`` and ``<stem>.svg`` in ``folder``."""
    paths = [folder / f"{stem}.png", folder / f"{stem}.svg"]
    for path in paths:
        figure.savefig(path)
    return paths
