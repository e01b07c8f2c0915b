"""Adversarial training (Goodfellow et al. 2015; Madry et al. 2018): the attack, on normalised batches.

``module.adversarial=fgsm|pgd`` trains on adversarial versions of each training batch, made against the
weights of that step. The batches reach the training step normalised ((pixel - mean) / std), so an
epsilon given in PIXEL units (a tenth of the [0, 1] range = 0.1, as in ``experiments.analysis.adversarial``)
is ``epsilon / std`` per channel here, and a valid image lies in ``[(0 - mean) / std, (1 - mean) / std]``.

* FGSM (Goodfellow et al.): every pixel moves by epsilon times the sign of the loss gradient (no threshold:
  a pixel whose gradient is tiny still moves), then the image is clipped to the valid range.
* PGD (Madry et al.): a uniformly random start in the epsilon ball (torch's global generator, which the
  run's seed and the per-epoch seed set), then ``steps`` signed-gradient steps of 2.5 epsilon / steps,
  each projected back onto the ball and the valid range.

The attack's forward passes run in the mode the model trains in (Madry et al.: batch statistics, as the
weights are updated against), but leave no trace on the model: its gradients are taken with
``torch.autograd.grad`` with respect to the input only (no ``.grad`` on any weight), and every buffer the
passes change (BatchNorm's running mean, variance and batch count) is put back afterwards, so the running
statistics see only the batches the model is trained on. Eval mode would be simpler but attacks a
different function than the one trained (running instead of batch statistics, and, early in training,
running statistics that are still far from the data's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

ATTACKS = ("fgsm", "pgd")


class InputBounds:
    """Pixel-unit sizes and the valid image range in the normalised space of one dataset."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor([float(m) for m in mean], dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor([float(s) for s in std], dtype=torch.float32).view(1, -1, 1, 1)

    def _like(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t[:, : x.shape[1]].to(device=x.device, dtype=x.dtype)

    def scale(self, pixels: float, x: torch.Tensor) -> torch.Tensor:
        """A length of ``pixels`` in [0, 1] units, per channel of the normalised batch ``x``."""
        return pixels / self._like(self.std, x)

    def range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(lowest, highest) normalised value of each channel: the images of pixels 0 and 1."""
        mean, std = self._like(self.mean, x), self._like(self.std, x)
        return (0 - mean) / std, (1 - mean) / std


def main_logits(outputs) -> torch.Tensor:
    """The classifier's logits (a model with auxiliary heads returns them first)."""
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


class _BuffersRestored:
    """Puts every buffer of ``model`` back as it was on exit (the attack's passes update BN statistics)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self):
        self.saved = [(b, b.detach().clone()) for b in self.model.buffers()]
        return self

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for buffer, value in self.saved:
                buffer.copy_(value)


def _input_gradient(model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
                    layout: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """d(cross-entropy of the main logits) / d(input), without touching any parameter's ``.grad``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(main_logits(model(layout(x))), targets)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def attack(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, method: str, epsilon: float,
           bounds: InputBounds, steps: int = 7, step_size: float | None = None,
           layout: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> torch.Tensor:
    """Adversarial versions of the normalised batch ``images`` (detached), for ``method`` fgsm or pgd;
    ``epsilon`` and ``step_size`` (default 2.5 epsilon / steps) in pixel units."""
    if method not in ATTACKS:
        raise ValueError(f"unknown attack {method!r}: use one of {', '.join(ATTACKS)}")
    images = images.detach()
    low, high = bounds.range(images)
    eps = bounds.scale(epsilon, images)
    with _BuffersRestored(model):
        if method == "fgsm":
            grad = _input_gradient(model, images, targets, layout)
            return torch.clamp(images + eps * grad.sign(), low, high).detach()
        alpha = bounds.scale(step_size if step_size is not None else 2.5 * epsilon / steps, images)
        lower, upper = torch.maximum(images - eps, low), torch.minimum(images + eps, high)
        x = images + (torch.rand_like(images) * 2 - 1) * eps
        x = torch.clamp(x, lower, upper)
        for _ in range(steps):
            grad = _input_gradient(model, x, targets, layout)
            x = torch.clamp(x + alpha * grad.sign(), lower, upper)
        return x.detach()
