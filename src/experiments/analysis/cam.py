"""Class activation maps: CAM (Zhou et al. 2016), Grad-CAM (Selvaraju et al. 2017), Grad-CAM++
(Chattopadhay et al. 2018), computed by torchcam and overlaid on the image.

CAM weighs the last feature maps by the classifier's weights, so it exists only for networks that end
in global average pooling and one linear layer (ResNet, GoogLeNet, DenseNet, ...); Grad-CAM(++) weighs
any conv layer's maps by their pooled gradients. ``layer: null`` picks the map that feeds the global
pooling (the last conv stage).
"""

from __future__ import annotations

import torch
from torch import nn

from experiments.analysis.common import (
    AnalysisContext,
    Count,
    Logits,
    analysis_mode,
    feature_layer,
    find_layer,
    head_layer,
    heat_overlay,
    upsample,
)
from experiments.analysis.figures import image_rows
from experiments.core.errors import UserError

METHODS = ("cam", "gradcam", "gradcampp")


def class_activation_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, method: str,
                          layer: str, fc_layer: str | None = None) -> torch.Tensor:
    """(N, H, W) maps in [0, 1] (torchcam normalises each), upsampled to the input size."""
    from torchcam.methods import CAM, GradCAM, GradCAMpp

    wrapped = Logits(model)
    prefixed = f"model.{layer}"
    with analysis_mode(model), torch.enable_grad():
        if method == "cam":
            extractor = CAM(wrapped, target_layer=prefixed, fc_layer=f"model.{fc_layer}",
                            input_shape=tuple(images.shape[1:]))
        else:
            factory = GradCAM if method == "gradcam" else GradCAMpp
            extractor = factory(wrapped, target_layer=prefixed, input_shape=tuple(images.shape[1:]))
        try:
            # The weights are frozen here, so the input must carry the graph to the hooked layer.
            scores = wrapped(images.detach().clone().requires_grad_(True))
            maps = extractor(class_idx=[int(t) for t in targets], scores=scores)[0]
        finally:
            extractor.remove_hooks()
    maps = maps.detach().float()
    if maps.ndim == 2:
        maps = maps.unsqueeze(0)
    return upsample(maps, tuple(images.shape[-2:])).clamp(0, 1)


def cam_classifier(model: nn.Module, images: torch.Tensor, layer: str) -> str:
    """The linear layer CAM needs; an error naming the fix when the network has none."""
    name, head = head_layer(model, images)
    channels = _channels_of(model, images, layer)
    if not isinstance(head, nn.Linear) or head.in_features != channels:
        raise UserError("analysis", "cam", f"needs global average pooling of `{layer}` ({channels} maps) straight "
                        f"into one linear classifier, but this model's classifier `{name}` is "
                        f"{type(head).__name__}{'(' + str(head.in_features) + ' inputs)' if isinstance(head, nn.Linear) else ''}.",
                        "Use analysis=gradcam (any conv layer), or a GAP network such as ResNet, GoogLeNet, DenseNet.")
    return name


def _channels_of(model: nn.Module, images: torch.Tensor, layer: str) -> int:
    captured = {}
    handle = find_layer(model, layer, "layer").register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
    try:
        with analysis_mode(model), torch.no_grad():
            Logits(model)(images[:1])
    finally:
        handle.remove()
    return int(captured["o"].shape[1])


def run(ctx: AnalysisContext, method: str = "gradcam", layer: str | None = None, num_images: Count = 8,
        split: str = "test", target: str = "predicted") -> dict:
    if method not in METHODS:
        raise UserError(f"analysis.{ctx.name}.method", method, "is not a CAM method.", f"Use one of {', '.join(METHODS)}.")
    if target not in ("label", "predicted"):
        raise UserError(f"analysis.{ctx.name}.target", target, "is not a choice.", "Use label or predicted.")
    images, display, labels = ctx.images(num_images, split)
    model = ctx.model
    layer = layer or feature_layer(model, images)
    find_layer(model, layer, f"analysis.{ctx.name}.layer")
    fc = cam_classifier(model, images, layer) if method == "cam" else None
    with torch.no_grad(), analysis_mode(model):
        probabilities = Logits(model)(images).softmax(1)
    predicted = probabilities.argmax(1)
    classes = predicted if target == "predicted" else labels
    maps = class_activation_maps(model, images, classes, method, layer, fc)
    names = ctx.class_names
    title = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++"}[method]
    figure = image_rows([list(display), [heat_overlay(d, m) for d, m in zip(display, maps)]],
                        row_titles=["image", f"{title} @ {layer}"],
                        column_titles=[f"{names[int(y)]} -> {names[int(p)]}" for y, p in zip(labels, predicted)])
    ctx.save_figure("maps", figure, f"{method}.png")
    return {"method": method, "layer": layer, "target": target, "images": [
        {"index": i, "label": names[int(y)], "explained_class": names[int(c)],
         "probability": round(float(probabilities[i, c]), 4), "peak": divmod(int(m.flatten().argmax()), m.shape[-1])}
        for i, (y, c, m) in enumerate(zip(labels, classes, maps))]}
