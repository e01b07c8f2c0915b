"""Modified-backward maps: guided backpropagation (Springenberg et al. 2015), deconvnet projections
(Zeiler & Fergus 2014) and Guided Grad-CAM (Selvaraju et al. 2017), all through captum.

The three differ from the plain input gradient (``saliency``) only at the ReLUs. With ``h = relu(a)``
and ``g`` the gradient arriving at ``h``: the gradient passes ``g * [a > 0]``; guided backpropagation
passes ``relu(g) * [a > 0]`` (only positive signals, only where the unit was on); the deconvnet passes
``relu(g)`` (ignores the forward mask, as a "reversed" net with rectified transposed convolutions).
Guided Grad-CAM multiplies the guided backpropagation map by the Grad-CAM map of a layer, upsampled
bilinearly to the image (the class-discriminative, high-resolution map of the paper).

captum overrides the backward pass of ``nn.ReLU`` *modules* only: a ReLU applied as a function
(``F.relu``, ``torch.relu``, ``x.clamp(min=0)``) or another rectifier (``nn.ReLU6``, GELU, ...) keeps
its ordinary gradient and the map would silently be a different method. :func:`require_relu_modules`
traces one forward pass and refuses such a model, and one without any ReLU (a tanh LeNet, where the
result would just be the gradient). The zoo's networks apply their ReLUs as modules, except Inception v3
(torchvision's ``BasicConv2d`` calls ``F.relu``), MobileNet v2 (ReLU6) and the tanh/sigmoid LeNets, which
are refused. Sigmoid and tanh gates next to ReLUs (squeeze-and-excitation) keep their plain gradient.
A zoo network built with another ``model.activation`` (leaky_relu, elu, tanh, sigmoid: the families of
:mod:`models.activations` record it as ``model.activation``) is refused first, by that key.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from experiments.analysis.common import (
    AnalysisContext,
    Count,
    Logits,
    analysis_mode,
    feature_layer,
    find_layer,
    heat_overlay,
)
from experiments.analysis.figures import image_rows
from experiments.analysis.saliency import concentration
from experiments.core.errors import UserError

METHODS = ("guided_backprop", "deconvnet", "guided_gradcam")
TITLES = {"guided_backprop": "guided backprop", "deconvnet": "deconvnet", "guided_gradcam": "Guided Grad-CAM"}


def _rectifier_functions() -> dict[object, str]:
    """Functions (and tensor methods) that rectify; called outside an ``nn.ReLU`` module, captum misses them."""
    functional = nn.functional
    found: dict[object, str] = {}
    for owner, names in ((functional, ("relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu",
                                       "leaky_relu_", "elu", "elu_", "selu", "celu", "gelu", "silu", "mish",
                                       "hardswish", "softplus", "rrelu", "rrelu_", "prelu", "threshold")),
                         (torch, ("relu", "relu_", "prelu", "threshold", "rrelu")),
                         (torch.Tensor, ("relu", "relu_"))):
        for name in names:
            function = getattr(owner, name, None)
            if function is not None:
                found[function] = name
    return found


_CLAMPS = ("clamp", "clamp_", "clamp_min", "clamp_min_", "clip", "clip_")


def _is_zero_clamp(function: object, args: tuple, kwargs: dict) -> bool:
    """``clamp(x, min=0)`` without a max: a ReLU written as a clamp."""
    name = getattr(function, "__name__", "")
    if name not in _CLAMPS:
        return False
    low = kwargs.get("min", args[1] if len(args) > 1 else None)
    high = kwargs.get("max", args[2] if len(args) > 2 else None)
    return high is None and isinstance(low, (int, float)) and low == 0


def rectifier_uses(model: nn.Module, x: torch.Tensor) -> tuple[int, list[tuple[str, str]]]:
    """(number of ``nn.ReLU`` module calls, [(module, function)] rectifiers applied outside one) in one
    eval forward pass of ``x[:1]``; the module is the innermost one running when the function was called."""
    from torch.overrides import TorchFunctionMode

    rectifiers = _rectifier_functions()
    stack: list[str] = []
    relu_calls = [0]
    inside_relu = [0]
    others: list[tuple[str, str]] = []

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = rectifiers.get(func) if _hashable(func) else None
            if name is None and _is_zero_clamp(func, args, kwargs):
                name = f"{getattr(func, '__name__', 'clamp')}(min=0)"
            if name is not None and not inside_relu[0]:
                where = stack[-1] if stack else "(the model's own forward)"
                if (where, name) not in others:
                    others.append((where, name))
            return func(*args, **kwargs)

    handles = []
    for module_name, module in model.named_modules():
        label = f"{module_name or 'the model'} ({type(module).__name__})"

        def enter(m, inputs, label=label):
            stack.append(label)
            if isinstance(m, nn.ReLU):
                relu_calls[0] += 1
                inside_relu[0] += 1

        def leave(m, inputs, output):
            stack.pop()
            if isinstance(m, nn.ReLU):
                inside_relu[0] -= 1

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    try:
        with analysis_mode(model), torch.no_grad(), Watch():
            Logits(model)(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return relu_calls[0], others


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def chosen_activation(model: nn.Module) -> str | None:
    """The ``activation`` a zoo network (or the one inside a wrapper) was built with, or None if unknown."""
    from models.activations import ACTIVATIONS

    return next((m.activation for m in model.modules() if getattr(m, "activation", None) in ACTIVATIONS), None)


def require_relu_modules(model: nn.Module, x: torch.Tensor, method: str) -> int:
    """The number of ``nn.ReLU`` calls of a forward pass; a user error when captum's modified backward
    would miss a rectifier or find none."""
    name = type(model).__name__
    activation = chosen_activation(model)
    if activation not in (None, "relu"):
        raise UserError("analysis", method, f"is defined by what it does at ReLUs (it passes only positive "
                        f"gradients where a ReLU was on), and this {name} was built with "
                        f"model.activation={activation}: there is no ReLU for captum's "
                        f"{TITLES.get(method, method)} to modify, and the map would silently be another method.",
                        "Analyse a run trained with model.activation=relu (the default), or use analysis=saliency "
                        "(or gradcam) for this one.")
    relu_calls, others = rectifier_uses(model, x)
    if others:
        listed = "; ".join(f"{function} in {where}" for where, function in others[:4])
        more = f" and {len(others) - 4} more" if len(others) > 4 else ""
        raise UserError("analysis", method, f"needs every rectifier of the model to be an nn.ReLU module, but "
                        f"{name} applies {listed}{more}. captum's {TITLES.get(method, method)} overrides the "
                        "backward pass of nn.ReLU modules only, so those would keep their plain gradient and the "
                        "map would silently be another method.",
                        f"Analyse a model whose ReLUs are nn.ReLU modules (ResNet, VGG, AlexNet, GoogLeNet, "
                        f"DenseNet, LeNet with activation=relu), or use analysis=saliency for {name}.")
    if relu_calls == 0:
        raise UserError("analysis", method, f"modifies the backward pass of ReLUs, and {name} has no nn.ReLU "
                        "module: the map would be the plain input gradient.",
                        "Use analysis=saliency for this model, or train one with ReLUs (e.g. model.activation=relu "
                        "for LeNet-5).")
    return relu_calls


@contextmanager
def quiet_captum() -> Iterator[None]:
    with warnings.catch_warnings():  # "Setting backward hooks on ReLU activations", at every call
        warnings.filterwarnings("ignore", message=".*backward hooks on ReLU.*")
        yield


def guided_backprop_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | int,
                         deconvnet: bool = False) -> torch.Tensor:
    """(N, C, H, W) guided-backpropagation (or, with ``deconvnet``, deconvnet) maps of the targets' scores."""
    from captum.attr import Deconvolution, GuidedBackprop

    with analysis_mode(model), quiet_captum(), torch.enable_grad():
        method = (Deconvolution if deconvnet else GuidedBackprop)(Logits(model))
        maps = method.attribute(images.detach().clone().requires_grad_(True), target=_target(targets, len(images)))
    return maps.detach()


def guided_gradcam_maps(model: nn.Module, images: torch.Tensor, targets: torch.Tensor | int, layer: str
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """((N, C, H, W) Guided Grad-CAM maps, (N, H, W) the Grad-CAM maps of ``layer`` upsampled bilinearly).

    Grad-CAM here is the paper's raw map ``relu(sum_k alpha_k A_k)`` (not rescaled to [0, 1]), so
    Guided Grad-CAM is exactly guided backprop times it."""
    from captum.attr import GuidedGradCam, LayerAttribution, LayerGradCam

    wrapped = Logits(model)
    module = find_layer(model, layer, "layer")
    target = _target(targets, len(images))
    with analysis_mode(model), quiet_captum(), torch.enable_grad():
        product = GuidedGradCam(wrapped, module).attribute(images.detach().clone().requires_grad_(True), target=target,
                                                           interpolate_mode="bilinear")
        cam = LayerGradCam(wrapped, module).attribute(images.detach().clone().requires_grad_(True), target=target,
                                                      relu_attributions=True)
    cam = LayerAttribution.interpolate(cam.detach(), tuple(images.shape[-2:]), interpolate_mode="bilinear")
    return product.detach(), cam[:, 0]


def _target(targets: torch.Tensor | int, count: int) -> torch.Tensor:
    if isinstance(targets, int):
        return torch.full((count,), targets, dtype=torch.long)
    return targets.long()


def signed_display(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) signed maps -> [0, 1] images, grey = 0, each scaled by its largest magnitude."""
    scale = maps.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (maps.ndim - 1)))
    return (0.5 + 0.5 * maps / scale).clamp(0, 1)


def run(ctx: AnalysisContext, method: str = "guided_backprop", layer: str | None = None, num_images: Count = 8,
        split: str = "test", target: str = "predicted") -> dict:
    if method not in METHODS:
        raise UserError(f"analysis.{ctx.name}.method", method, "is not a modified-backward method.",
                        f"Use one of {', '.join(METHODS)}.")
    if target not in ("label", "predicted"):
        raise UserError(f"analysis.{ctx.name}.target", target, "is not a choice.", "Use label or predicted.")
    images, display, labels = ctx.images(num_images, split)
    model = ctx.model
    relu_calls = require_relu_modules(model, images, method)
    with torch.no_grad(), analysis_mode(model):
        probabilities = Logits(model)(images).softmax(1)
    predicted = probabilities.argmax(1)
    classes = predicted if target == "predicted" else labels
    names = ctx.class_names
    rows, titles, cmaps = [list(display)], ["image"], [None]
    record: dict = {"method": method, "target": target, "relu_module_calls": relu_calls}
    if method == "guided_gradcam":
        layer = layer or feature_layer(model, images)
        find_layer(model, layer, f"analysis.{ctx.name}.layer")
        maps, cam = guided_gradcam_maps(model, images, classes, layer)
        guided = guided_backprop_maps(model, images, classes)
        rows += [[heat_overlay(d, c) for d, c in zip(display, cam)], list(signed_display(guided))]
        titles += [f"Grad-CAM @ {layer}", "guided backprop"]
        cmaps += [None, None]
        record["layer"] = layer
    else:
        if layer is not None:
            raise UserError(f"analysis.{ctx.name}.layer", layer, f"applies to guided_gradcam only; {method} maps "
                            "the class score back to the image through every layer.", "Leave layer=null.")
        maps = guided_backprop_maps(model, images, classes, deconvnet=method == "deconvnet")
    magnitude = maps.abs().amax(dim=1)
    rows += [list(signed_display(maps)), [m.unsqueeze(0) for m in magnitude]]
    titles += [TITLES[method], f"|{TITLES[method]}|"]
    cmaps += [None, "hot"]
    figure = image_rows(rows, row_titles=titles, cmaps=cmaps,
                        column_titles=[f"{names[int(y)]} -> {names[int(p)]}" for y, p in zip(labels, predicted)])
    ctx.save_figure("maps", figure, f"{method}.png")
    share = concentration(magnitude)
    record["images"] = [
        {"index": i, "label": names[int(y)], "explained_class": names[int(c)],
         "probability": round(float(probabilities[i, c]), 4), "top10pct_share": round(float(s), 4),
         "peak": list(divmod(int(m.flatten().argmax()), m.shape[-1]))}
        for i, (y, c, m, s) in enumerate(zip(labels, classes, magnitude, share))]
    record["mean_top10pct_share"] = round(float(share.mean()), 4)
    return record

