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
    palette = colormaps["tab10" if len(families) <= 10 else "tab20"]
    family_handles = []
    for index, family in enumerate(families):
        members = [p for p in points if p["family"] == family]
        colour = palette(index % palette.N)
        fill, edge = to_rgba(colour, 0.5), to_rgba(colour, 0.95)
        # Per-marker RGBA (no collection-wide alpha, which would paint a hollow marker's face grey).
        axis.scatter([p["macs"] / 1e9 for p in members], [p["top1_err"] for p in members],
                     s=[marker_area(p["params"]) for p in members], linewidths=1.2, zorder=2,
                     facecolors=[fill if p["top1_crops"] == 1 else (0, 0, 0, 0) for p in members],
                     edgecolors=[edge] * len(members))
        family_handles.append(Line2D([], [], ls="", marker="o", markersize=7, markerfacecolor=fill,
                                     markeredgecolor=edge, label=family))
    for point in points:  # the label just right of its marker (a marker of area s is sqrt(s) points wide)
        offset = marker_area(point["params"]) ** 0.5 / 2 + 2
        axis.annotate(point["model"], (point["macs"] / 1e9, point["top1_err"]), xytext=(offset, 0),
                      textcoords="offset points", fontsize=6, ha="left", va="center", zorder=3)
    axis.set_xscale("log")
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
    return figure


def save(figure: Figure, folder: Path, stem: str) -> list[Path]:
    """``<stem>.png`` and ``<stem>.svg`` in ``folder``."""
    paths = [folder / f"{stem}.png", folder / f"{stem}.svg"]
    for path in paths:
        figure.savefig(path)
    return paths
