"""Unit visualisation by optimisation (Erhan et al. 2009; Simonyan et al. 2014; Yosinski et al. 2015):
the input image that maximises one unit of a layer, found by gradient ascent as :mod:`class_model` does for
a class score. The unit is a whole channel (``unit=channel``: the mean of its map) or a single neuron
(``unit=neuron``: the channel's value at the map's centre). The regularisers are the lecture decks':
L2 decay, total variation, jitter and periodic Gaussian blur (:func:`~experiments.analysis.image_optimization.maximize`).

Without ``layers``, three rectified maps spread over the depth are chosen (as for ``deconvnet_patches``);
without ``channels``, the ``num_channels`` channels of each that are most active, on average, over the
first ``num_images`` test images. One image grid per layer; the JSON has the activation reached per unit
next to its value at the start image and its mean over those test images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from experiments.analysis.common import (
    AnalysisContext,
    Count,
    NonNegative,
    NonNegativeInt,
    Positive,
    analysis_mode,
    choose_channels,
    collect_in_batches,
    rectified_layers,
)
from experiments.analysis.feature_inversion import code_at
from experiments.analysis.figures import image_rows
from experiments.analysis.image_optimization import maximize, start_image
from experiments.core.errors import UserError

Unit = Literal["channel", "neuron"]
REDRAWS = 8


def unit_value(maps: torch.Tensor, channel: int, unit: Unit) -> torch.Tensor:
    """(N,) the unit's value in each (N, C, H, W) map: the channel's mean, or its value at the centre."""
    if unit == "neuron":
        return maps[:, channel, maps.shape[2] // 2, maps.shape[3] // 2]
    return maps[:, channel].mean((1, 2))


def unit_image(model: nn.Module, layer: nn.Module, channel: int, shape: tuple[int, int, int], unit: Unit = "channel",
               steps: int = 100, lr: float = 0.05, l2: float = 1e-3, tv: float = 0.0, jitter: int = 0,
               blur_every: int = 0, blur_sigma: float = 0.0, start: str = "noise", seed: int = 0
               ) -> tuple[torch.Tensor, float, float]:
    """(image in model-input space, the unit's activation at the start image, at the result).

    A rectified unit silent at a noise start has no gradient: the noise is drawn again, with seeds
    ``seed + 1, ...`` and a doubled spread each time (up to :data:`REDRAWS` times), until the unit responds."""
    def activation(x: torch.Tensor) -> torch.Tensor:
        return unit_value(code_at(model, layer, x), channel, unit)[0]

    with analysis_mode(model):
        with torch.no_grad():
            initial = start_image(shape, start, seed)
            before = float(activation(initial))
            for redraw in range(1, REDRAWS + 1 if start == "noise" else 1):
                if before > 0:
                    break
                candidate = start_image(shape, start, seed + redraw) * 2 ** min(redraw, 4)
                value = float(activation(candidate))
                if value > before:
                    initial, before = candidate, value
        image, _ = maximize(activation, initial, steps, lr, l2, tv, jitter, blur_every, blur_sigma, seed)
        with torch.no_grad():
            after = float(activation(image))
    return image[0], before, after


def _channel_means(model: nn.Module, layer: nn.Module, images: torch.Tensor, unit: Unit) -> torch.Tensor:
    """(C,) the mean over ``images`` of every channel's unit value."""
    def read(maps: torch.Tensor) -> torch.Tensor:
        return torch.stack([unit_value(maps, c, unit) for c in range(maps.shape[1])], 1)

    return torch.cat(collect_in_batches(model, layer, images, read)).mean(0)


def run(ctx: AnalysisContext, layers: Sequence[str] | None = None, num_layers: Count = 3,
        channels: Sequence[int] | None = None, num_channels: Count = 4, unit: Unit = "channel",
        num_images: Count = 64, steps: Count = 100, lr: Positive = 0.05, l2: NonNegative = 1e-3,
        tv: NonNegative = 0.05, jitter: NonNegativeInt = 1, blur_every: NonNegativeInt = 4,
        blur_sigma: NonNegative = 0.5, start: Literal["blank", "noise"] = "noise", seed: int = 0) -> dict:
    model = ctx.model
    images, _, _ = ctx.images(num_images, "test")
    names = [str(n) for n in layers] if layers else rectified_layers(model, images, num_layers)
    modules = [_layer(model, n, f"analysis.{ctx.name}.layers") for n in names]
    shape = tuple(int(s) for s in images.shape[1:])
    from callbacks.plotting import normalise_each

    records = []
    for name, module in zip(names, modules):
        means = _channel_means(model, module, images, unit)
        count = len(means)
        chosen = choose_channels(means, channels, num_channels, f"analysis.{ctx.name}.channels", name,
                                 " (they apply to every layer), or channels=null")
        pictures, units = [], []
        for channel in chosen:
            image, before, after = unit_image(model, module, channel, shape, unit, steps, lr, l2, tv, jitter,
                                              blur_every, blur_sigma, start, seed)
            pictures.append(image)
            units.append({"channel": channel, "activation_start": round(before, 5), "activation_end": round(after, 5),
                          "data_mean": round(float(means[channel]), 5)})
        figure = image_rows([list(normalise_each(torch.stack(pictures)))],
                            column_titles=[f"ch {u['channel']}: {u['activation_end']:.3g}" for u in units],
                            title=f"{name}: {unit} images (L2 {l2:g}, TV {tv:g}, jitter {jitter}, "
                                  f"blur {blur_sigma:g} every {blur_every}, {steps} steps)")
        ctx.save_figure(name, figure, f"{name.replace('.', '_')}.png")
        records.append({"layer": name, "channels_in_layer": count, "units": units})
    return {"unit": unit, "steps": steps, "lr": lr, "l2": l2, "tv": tv, "jitter": jitter, "blur_every": blur_every,
            "blur_sigma": blur_sigma, "start": start, "layers": records}


def _layer(model: nn.Module, name: str, key: str) -> nn.Module:
    """The named layer; an unknown name is refused naming every layer there is (and the usual choices)."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    valid = [n for n in modules if n]
    shown = valid if len(valid) <= 40 else [n for n in valid if n.count(".") <= 1][:40]
    more = "" if shown == valid else f" (or deeper: {len(valid)} in all, such as {valid[-1]})"
    raise UserError(key, name, "is not a layer of this model.",
                    f"Use one of its module names: {', '.join(shown)}{more}; layers=null picks three rectified maps.")
