"""t-SNE of the penultimate-layer codes (van der Maaten & Hinton 2008), as in the lectures' picture of
what the last layer has learnt: images of a class should land together.

The code of an image is the input of the classifier layer (flattened; global-average-pooled when the
classifier is a 1x1 conv). scikit-learn embeds it; the JSON reports how well the 2-D map keeps the
classes apart (leave-one-out 5-nearest-neighbour accuracy in the embedding).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from experiments.analysis.common import AnalysisContext, Count, Positive, collect_in_batches, head_layer
from experiments.core.errors import UserError


def penultimate_codes(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, D) inputs of the classifier layer."""
    _, head = head_layer(model, images)

    def code(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) if x.ndim == 4 else x.flatten(1)

    return torch.cat(collect_in_batches(model, head, images, code, on_input=True, batch_size=batch_size))


def embed(codes: torch.Tensor, perplexity: float, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = min(float(perplexity), max(1.0, (len(codes) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                learning_rate="auto").fit_transform(codes.double().numpy())


def neighbour_accuracy(points: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy (%) in the embedding."""
    from sklearn.neighbors import KNeighborsClassifier

    k = min(k, len(points) - 1)
    classifier = KNeighborsClassifier(n_neighbors=k + 1).fit(points, labels)
    neighbours = classifier.kneighbors(points, return_distance=False)[:, 1:]  # drop the point itself
    votes = labels[neighbours]
    predicted = np.array([np.bincount(row).argmax() for row in votes])
    return float(100.0 * (predicted == labels).mean())


def run(ctx: AnalysisContext, num_images: Count = 1000, split: str = "test", perplexity: Positive = 30.0,
        draw_images: bool = False, seed: int = 0) -> dict:
    images, display, labels = ctx.images(num_images, split)
    if len(images) < 5:
        raise UserError(f"analysis.{ctx.name}.num_images", num_images, "leaves fewer than 5 images to embed.",
                        "Use at least 50 images.")
    codes = penultimate_codes(ctx.model, images)
    points = embed(codes, perplexity, seed)
    y = labels.numpy()
    score = neighbour_accuracy(points, y)
    _scatter(ctx, points, y, score)
    if draw_images:
        _thumbnails(ctx, points, display)
    np.savez_compressed(ctx.path("embedding.npz"), points=points, labels=y)
    return {"images": len(y), "code_size": int(codes.shape[1]), "perplexity": perplexity,
            "knn5_accuracy_in_embedding": round(score, 2)}


def _scatter(ctx: AnalysisContext, points: np.ndarray, labels: np.ndarray, score: float) -> None:
    from matplotlib import colormaps

    from callbacks.plotting import new_figure

    names = ctx.class_names
    figure = new_figure(6.5, 5.5)
    axis = figure.subplots()
    colours = colormaps["tab10" if len(names) <= 10 else "tab20"]
    for c in np.unique(labels):
        chosen = labels == c
        axis.scatter(points[chosen, 0], points[chosen, 1], s=6, color=colours(int(c) % colours.N),
                     label=names[int(c)] if int(c) < len(names) else str(c))
    if len(names) <= 20:
        axis.legend(fontsize=7, markerscale=2, loc="best")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(f"t-SNE of penultimate codes ({len(labels)} images; 5-NN acc {score:.1f}%)", fontsize=9)
    figure.tight_layout()
    ctx.save_figure("scatter", figure, "tsne.png")


def _thumbnails(ctx: AnalysisContext, points: np.ndarray, display: torch.Tensor, canvas: int = 1600,
                tile: int = 28) -> None:
    """The images themselves at their embedded positions (later ones drawn over earlier)."""
    lo, hi = points.min(0), points.max(0)
    positions = ((points - lo) / np.maximum(hi - lo, 1e-12) * (canvas - tile)).astype(int)
    board = torch.ones(3, canvas, canvas)
    small = torch.nn.functional.interpolate(display.float(), size=(tile, tile), mode="bilinear", align_corners=False)
    small = small.expand(-1, 3, -1, -1) if small.shape[1] == 1 else small[:, :3]
    for (x, y), image in zip(positions, small):
        board[:, y:y + tile, x:x + tile] = image.clamp(0, 1)
    ctx.save_image("images", board, "tsne_images.png")
