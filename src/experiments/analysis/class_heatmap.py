"""Class heat maps: where, in a larger image, the network finds each class (Long et al. 2015, Fig. 2;
Sermanet et al. 2014, OverFeat).

The fully convolutional form of the trained network (:func:`experiments.evaluation.dense.dense_scorer`)
slides over an image larger than the one it was trained on and returns a class score map: one score
vector per window of the training size, at the conversion's stride. The average of that map is what
dense evaluation classifies by; the map itself shows where the evidence is. For a few test images made
larger, this draws the image, the map of its true class and the map of the class the averaged scores
predict, each cell shown as the soft-max probability of that class for its window (a fixed 0..1 scale,
so two maps compare), drawn over the window's centre.

Larger images (``placement``): ``resize``, the test image enlarged ``scale`` times (what dense
evaluation sees), or ``place``, the test image at its own size at a random spot (seeded) of a canvas
``scale`` times larger, filled with the colour of the image's own border (the mean of its outermost
pixels, per channel: black around a Fashion-MNIST item), so the image's edge draws no frame for the
network to see; there the true class's map should light up around the object: OverFeat's reading of
the score map as localisation. A network ending in global average
pooling (ResNet, ...) is already convolutional; its map is the score of each position of its last
feature map (the class activation map of Zhou et al. 2016, plus the bias), centred on the positions.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from annotated_types import Ge

from experiments.analysis.common import AnalysisContext, Count, analysis_mode, to_display
from experiments.evaluation.dense import CONVERTED, DenseScorer, dense_scorer


def border_colour(display: torch.Tensor) -> torch.Tensor:
    """``(N, C)``: the mean of each image's outermost rows and columns, per channel."""
    edges = torch.cat([display[..., 0, :], display[..., -1, :], display[..., :, 0], display[..., :, -1]], dim=-1)
    return edges.mean(dim=-1)


def enlarge(display: torch.Tensor, size: int, placement: str,
            seed: int = 0) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """[0, 1] images ``(N, C, S, S)`` as ``(N, C, size, size)``: resized, or placed at a seeded random
    (top, left) on a canvas of the image's border colour; also the (top, left) of each image (0, 0 when
    resized)."""
    from torchvision.transforms.v2 import functional as TF

    if placement == "resize":
        big = TF.resize(display, [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        return big.clamp(0, 1), [(0, 0)] * len(display)
    n, c, h, w = display.shape
    canvas = border_colour(display).view(n, c, 1, 1).expand(n, c, size, size).clone()
    generator = torch.Generator().manual_seed(seed)
    corners = []
    for k in range(n):
        top, left = (int(v) for v in torch.randint(0, size - h + 1, (2,), generator=generator))
        canvas[k, :, top:top + h, left:left + w] = display[k]
        corners.append((top, left))
    return canvas, corners


def cell_centres(scorer: DenseScorer, map_size: tuple[int, int], image_size: tuple[int, int]
                 ) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """(row centres, column centres, (row step, column step)) in the input's pixel coordinates of the score
    map's cells: window ``i`` of a converted network starts at ``i * stride`` and spans the training size;
    a global-pooling network's positions share the image evenly."""
    (h, w), (height, width) = map_size, image_size
    if scorer.kind == CONVERTED:
        stride = float(scorer.stride or 1)
        offset = (scorer.native - 1) / 2
        return (torch.arange(h) * stride + offset, torch.arange(w) * stride + offset, (stride, stride))
    row_step, column_step = height / h, width / w
    return ((torch.arange(h) + 0.5) * row_step - 0.5, (torch.arange(w) + 0.5) * column_step - 0.5,
            (row_step, column_step))


def peak(maps: torch.Tensor, scorer: DenseScorer, image_size: tuple[int, int]) -> tuple[float, float]:
    """Pixel (row, column) of the centre of the highest cell of one ``(h, w)`` map."""
    rows, columns, _ = cell_centres(scorer, tuple(maps.shape), image_size)
    i, j = divmod(int(maps.flatten().argmax()), maps.shape[1])
    return float(rows[i]), float(columns[j])


def run(ctx: AnalysisContext, num_images: Count = 4, scale: Annotated[float, Ge(1)] = 2.0,
        placement: Literal["resize", "place"] = "resize", split: str = "test", seed: int = 0) -> dict:
    data = ctx.trained.cfg.data
    native = int(data.image_size)
    scorer = dense_scorer(ctx.model, native, int(data.in_channels), f"analysis.{ctx.name}")
    _, display, labels = ctx.images(num_images, split)
    size = max(native, round(native * float(scale)))
    mean, std = ctx.mean_std(display)
    big, corners = enlarge(display, size, placement, seed)
    with analysis_mode(ctx.model), torch.no_grad():
        maps = scorer.score_maps((big - mean) / std).float()
    probability_maps = maps.softmax(dim=1)
    predicted = maps.mean(dim=(2, 3)).argmax(dim=1)  # what dense evaluation predicts
    names = ctx.class_names
    records = []
    for k in range(len(big)):
        label, guess = int(labels[k]), int(predicted[k])
        records.append({"label": names[label], "predicted": names[guess], "corner": list(corners[k]),
                        "label_probability": round(float(maps[k].mean(dim=(1, 2)).softmax(0)[label]), 5),
                        "label_peak": list(peak(probability_maps[k, label], scorer, (size, size))),
                        "predicted_peak": list(peak(probability_maps[k, guess], scorer, (size, size)))})
    _plot(ctx, big, probability_maps, labels, predicted, scorer)
    return {"conversion": scorer.kind, "stride": scorer.stride, "window": native if scorer.kind == CONVERTED else None,
            "image_size": size, "placement": placement, "score_map": list(maps.shape[-2:]), "images": records}


def _plot(ctx: AnalysisContext, big: torch.Tensor, probability_maps: torch.Tensor, labels: torch.Tensor,
          predicted: torch.Tensor, scorer: DenseScorer) -> None:
    """One row per image: the image, its true class's map over it, the predicted class's map over it."""
    from callbacks.plotting import new_figure

    names = ctx.class_names
    n, size = len(big), big.shape[-1]
    figure = new_figure(3 * 2.2 + 0.8, n * 2.2 + 0.5)
    axes = figure.subplots(n, 3, squeeze=False)
    rows, columns, (row_step, column_step) = cell_centres(scorer, tuple(probability_maps.shape[-2:]), (size, size))
    extent = (float(columns[0]) - column_step / 2, float(columns[-1]) + column_step / 2,
              float(rows[-1]) + row_step / 2, float(rows[0]) - row_step / 2)
    shown = None
    for k in range(n):
        image = to_display(big[k])
        label, guess = int(labels[k]), int(predicted[k])
        panels = [(None, "image"), (label, f"true: {names[label]}"), (guess, f"predicted: {names[guess]}")]
        for axis, (cls, title) in zip(axes[k], panels):
            axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
            if cls is not None:
                cell_map = probability_maps[k, cls]
                shown = axis.imshow(cell_map.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1, extent=extent,
                                    interpolation="nearest")
                title += f" (mean p {float(cell_map.mean()):.2f})"
            axis.set_xlim(-0.5, size - 0.5)
            axis.set_ylim(size - 0.5, -0.5)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(title, fontsize=7)
    if shown is not None:
        figure.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.6, label="p(class) per window")
    figure.suptitle(f"class score maps ({scorer.kind}, {tuple(probability_maps.shape[-2:])} cells over "
                    f"{size}x{size} images)", fontsize=9)
    ctx.save_figure("heatmaps", figure, "class_heatmaps.png")
