"""Images made by gradient steps on the input: class models (Simonyan et al. 2014), unit visualisations
(Erhan et al. 2009; Yosinski et al. 2015) and feature inversion (Mahendran & Vedaldi 2015). No maintained
library does these for arbitrary torch models (captum's optim module was removed), so the short loop is
written here.

:func:`maximize` is activation maximisation with the regularisers the lecture decks name, each with its
usual meaning: an **L2 decay** ``l2 * ||x||^2`` and a **total variation** ``tv * TV(x)`` subtracted from
the objective; **jitter**, the image shifted by a random ``(dy, dx)`` of at most ``jitter`` pixels
(circularly) before each forward pass, so no pattern can rely on exact pixel positions; and **blur**, the
image smoothed in place by a Gaussian of standard deviation ``blur_sigma`` pixels every ``blur_every``
steps (Yosinski et al. 2015), which removes the high frequencies gradient ascent otherwise piles up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels: a natural-image prior (smooth images)."""
    return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean()


def optimize_image(loss_of: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int,
                   lr: float, after_step: Callable[[int, torch.Tensor], None] | None = None
                   ) -> tuple[torch.Tensor, list[float]]:
    """Minimise ``loss_of(x)`` over the image ``x`` with Adam from ``start``; (image, loss curve).

    ``after_step(step, x)``, when given, may change ``x`` in place after each step (under no_grad)."""
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    curve = []
    with torch.enable_grad():
        for step in range(int(steps)):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(x)
            loss.backward()
            optimizer.step()
            curve.append(float(loss.detach()))
            if after_step is not None:
                with torch.no_grad():
                    after_step(step, x)
    return x.detach(), curve


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, H, W) images blurred per channel by a Gaussian of ``sigma`` pixels (reflected borders)."""
    if sigma <= 0:
        return x
    radius = max(1, int(3 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    padded = torch.nn.functional.pad(x, (radius, radius, radius, radius),
                                     mode="reflect" if min(x.shape[-2:]) > radius else "replicate")
    rows = torch.nn.functional.conv2d(padded, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return torch.nn.functional.conv2d(rows, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)


def start_image(shape: tuple[int, ...], start: str = "blank", seed: int = 0) -> torch.Tensor:
    """(1, *shape): the mean image (0 after normalisation) or small Gaussian noise (std 0.1, seeded)."""
    if start == "blank":
        return torch.zeros(1, *shape)
    return 0.1 * torch.randn(1, *shape, generator=torch.Generator().manual_seed(seed))


def maximize(objective: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int, lr: float,
             l2: float = 0.0, tv: float = 0.0, jitter: int = 0, blur_every: int = 0, blur_sigma: float = 0.0,
             seed: int = 0) -> tuple[torch.Tensor, list[float]]:
    """Gradient ascent on ``objective(x) - l2 ||x||^2 - tv TV(x)`` (a scalar of the (1, C, H, W) image),
    with jitter and blur as the module docstring says; (image, per-step regularised objective).

    The caller holds the model in :func:`~experiments.analysis.common.analysis_mode`."""
    generator = torch.Generator().manual_seed(seed)

    def loss(x: torch.Tensor) -> torch.Tensor:
        seen = x
        if jitter > 0:
            dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=generator))
            seen = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
        value = objective(seen)
        if l2:
            value = value - l2 * (x ** 2).sum()
        if tv:
            value = value - tv * total_variation(x)
        return -value

    def blur(step: int, x: torch.Tensor) -> None:
        if (step + 1) % blur_every == 0:
            x.copy_(gaussian_blur(x, blur_sigma))

    smoothing = blur if blur_every > 0 and blur_sigma > 0 else None
    image, curve = optimize_image(loss, start, steps, lr, smoothing)
    return image, [-v for v in curve]
