"""Batched image pipeline on tensors: uint8 batch -> float, resize/pad, augment, normalise.

It runs after the batch reaches its device (the GPU when training there), one call per batch, and
moves nothing between host and device per batch: random numbers are drawn on the batch's device and
the mean/std live there after the first batch.
Written by hand on purpose: torchvision's v2 transforms draw ONE random crop/flip per call, so applied
to a batch tensor they would give every image the same crop; per-image calls through PIL cost ~170 us
an image, more than LeNet-5's whole training step on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from data.errors import DataConfigError


class BatchPipeline:
    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int,
        native_size: int,
        resize_mode: str = "resize",
        crop_padding: int = 0,
        hflip: bool = False,
        color_jitter: float = 0.0,
        rotation: float = 0.0,
        translate: float = 0.0,
        color_cast: float = 0.0,
    ) -> None:
        """``rotation`` (degrees) and ``translate`` (fraction of the side): a random small affine map per
        image; ``color_cast``: a random offset per image and channel in [-c, c] (on the [0, 1] scale),
        Krizhevsky et al.'s colour shift in its simplest form. All batched on the batch's device."""
        if resize_mode not in ("resize", "pad"):
            raise DataConfigError("resize_mode", resize_mode, "must be 'resize' or 'pad'.",
                                  "Use 'pad' to centre small images in a larger field (LeNet on MNIST).")
        if resize_mode == "pad" and image_size < native_size:
            raise DataConfigError("image_size", image_size, f"is smaller than the native {native_size} pixels, "
                                  "so padding cannot reach it.", "Set data.resize_mode=resize to shrink.")
        if isinstance(crop_padding, bool) or not isinstance(crop_padding, int) or crop_padding < 0:
            raise DataConfigError("augment.crop_padding", crop_padding, "must be an integer >= 0.",
                                  "Use 4 for the CIFAR recipe or 0 to turn random crops off.")
        if not isinstance(color_jitter, (int, float)) or not 0 <= color_jitter < 1:
            raise DataConfigError("augment.color_jitter", color_jitter, "must be in [0, 1).",
                                  "Use e.g. 0.4 (brightness/contrast/saturation factors in [0.6, 1.4]).")
        for key, value, high, example in (("rotation", rotation, 180, "10 (degrees)"),
                                          ("translate", translate, 0.5, "0.1 (a tenth of the side)"),
                                          ("color_cast", color_cast, 1, "0.1")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < high:
                raise DataConfigError(f"augment.{key}", value, f"must be in [0, {high}).", f"Use e.g. {example}, or 0 "
                                      "to turn it off.")
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.image_size, self.native_size, self.resize_mode = image_size, native_size, resize_mode
        self.crop_padding, self.hflip, self.color_jitter = crop_padding, bool(hflip), float(color_jitter)
        self.rotation, self.translate, self.color_cast = float(rotation), float(translate), float(color_cast)

    def constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std on ``device``, copied there once: a copy per batch would be a blocking
        host-to-device transfer, which waits for the GPU (a sync per step)."""
        if device not in self._on_device:
            self._on_device[device] = (self.mean.to(device), self.std.to(device))
        return self._on_device[device]

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        x = self.fit_size(x)
        mean, std = self.constants(x.device)
        if train:
            if self.crop_padding:
                x = random_crop(x, self.crop_padding, fill=mean)
            if self.hflip:
                x = random_hflip(x)
            if self.rotation or self.translate:
                x = random_affine(x, self.rotation, self.translate, fill=mean)
            if self.color_jitter:
                x = random_color_jitter(x, self.color_jitter)
            if self.color_cast:
                x = random_color_cast(x, self.color_cast)
        return (x - mean) / std

    def fit_size(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        if size == self.image_size:
            return x
        if self.resize_mode == "pad":
            before = (self.image_size - size) // 2
            after = self.image_size - size - before
            return F.pad(x, (before, after, before, after))
        return F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                             align_corners=False, antialias=self.image_size < size)


def random_crop(x: torch.Tensor, padding: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Pad by ``padding`` and crop back at an independent random offset for every image.

    The padding is ``fill`` (per channel, shape (1, C, 1, 1)): the pipeline passes the dataset mean, so a
    padded pixel is 0 after normalisation, as in He et al.'s CIFAR recipe (mean-subtracted images padded
    with zeros); without ``fill``, zeros (black)."""
    n, _, h, w = x.shape
    if fill is not None:
        x = x - fill
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * padding)
    cropped = padded.gather(2, rows)
    cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    out = cropped.gather(3, cols)
    return out + fill if fill is not None else out


def random_affine(x: torch.Tensor, degrees: float, translate: float, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate each image by its own angle in [-degrees, degrees] and shift it by up to ``translate`` of
    its side; uncovered pixels are ``fill`` (the mean)."""
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(degrees)
    shift = (torch.rand(n, 2, device=x.device) * 2 - 1) * translate
    return affine(x, angle, shift, fill)


def affine(x: torch.Tensor, angle: torch.Tensor, shift: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Each image rotated by ``angle[i]`` (radians, about its centre) and shifted by ``shift[i]`` (x, y as
    fractions of the side), bilinear, in one ``grid_sample`` for the batch; uncovered pixels are ``fill``."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    offset = -2 * shift  # the grid maps output to input positions, in units of half the side
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    centred = x - fill if fill is not None else x
    out = F.grid_sample(centred, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill if fill is not None else out


def random_color_cast(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Add one random offset per image and channel, uniform in [-strength, strength], then clip to [0, 1]."""
    offset = (torch.rand(x.shape[0], x.shape[1], 1, 1, device=x.device) * 2 - 1) * strength
    return (x + offset).clamp_(0, 1)


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 0.5
    return torch.where(flip, x.flip(-1), x)


def random_color_jitter(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Brightness, contrast and (for RGB) saturation, each factor drawn per image in [1-s, 1+s]."""

    def factor() -> torch.Tensor:
        return 1 + (torch.rand(x.shape[0], 1, 1, 1, device=x.device) * 2 - 1) * strength

    x = x * factor()
    gray = x.mean(dim=(1, 2, 3), keepdim=True)
    x = gray + (x - gray) * factor()
    if x.shape[1] == 3:
        luma = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = luma + (x - luma) * factor()
    return x.clamp_(0, 1)
