"""Images made by gradient steps on the input: class models (Simonyan et al. 2014) and feature
inversion (Mahendran & Vedaldi 2015). No maintained library does these for arbitrary torch models
(captum's optim module was removed), so the short loop is written here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels: a natural-image prior (smooth images)."""
    return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean() + ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean()


def optimize_image(loss_of: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int,
                   lr: float) -> tuple[torch.Tensor, list[float]]:
    """Minimise ``loss_of(x)`` over the image ``x`` with Adam from ``start``; (image, loss curve)."""
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    curve = []
    with torch.enable_grad():
        for _ in range(int(steps)):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(x)
            loss.backward()
            optimizer.step()
            curve.append(float(loss.detach()))
    return x.detach(), curve
