"""Test-time crops: the single view, AlexNet's 10 crops and GoogLeNet's 144 crops, as one tensor.

The papers report their best test errors averaged over several views of each test image:

* ``1``: one view. :func:`crops_of` takes it as the centre ``S x S`` crop of the image resized to
  ``round(S * resize_ratio)`` (the papers' "single centre crop"); :mod:`experiments.eval` passes the
  run's own evaluation view instead (``single_view``), so that 1 crop reproduces the run's test error.
* ``10`` (Krizhevsky et al. 2012): the image resized so its shorter side is ``round(S * resize_ratio)``
  (256 for S = 224), its central square, then the four corner and the centre ``S x S`` patches and
  their mirror images.
* ``144`` (Szegedy et al. 2014, GoogLeNet): 4 scales (shorter side ``S * {256, 288, 320, 352} / 224``)
  x 3 squares (left/centre/right of a landscape image, top/centre/bottom of a portrait one; for a square
  image the three coincide, and are still counted, as the paper counts 4 x 3 x 6 x 2) x 6 crops (the
  four corners and the centre ``S x S`` patch plus the whole square resized to ``S``) x 2 mirrors.

Everything is torchvision's ``transforms.v2.functional`` on batched float tensors, so one call cuts the
same views out of every image of a batch (all images of one call must share a size). The caller
normalises and chunks: 144 crops of a batch are 144 times the batch's pixels. (torch is imported inside
the functions, so the command line can check ``eval.crops`` against :data:`SCHEMES` instantly.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SCHEMES = (1, 10, 144)
DEFAULT_RESIZE_RATIO = 256 / 224
GOOGLENET_SCALES = (256, 288, 320, 352)  # shorter sides for 224-pixel crops (Szegedy et al. 2014, sec. 7)
REFERENCE_SIZE = 224
FIVE = ("top_left", "top_right", "bottom_left", "bottom_right", "center")


@dataclass(frozen=True)
class View:
    """One crop's recipe, in the order :func:`crops_of` stacks them (for records, tables and tests)."""

    scale: int  # shorter side (pixels) of the resized image the crop is cut from
    square: str  # which square of it: "center", or "left"/"right" ("top"/"bottom" for portrait images)
    crop: str  # one of FIVE, or "whole" (the square resized to S)
    flip: bool  # mirrored left-right


def check_scheme(scheme: object) -> int:
    """``scheme`` as an int of :data:`SCHEMES`; ValueError otherwise (the CLI turns it into a UserError)."""
    if isinstance(scheme, bool) or not isinstance(scheme, int) or scheme not in SCHEMES:
        raise ValueError(f"crop scheme {scheme!r} is not one of {SCHEMES}")
    return scheme


def scales_of(size: int, scheme: int, resize_ratio: float = DEFAULT_RESIZE_RATIO) -> list[int]:
    """The shorter sides the image is resized to before cropping ``size`` pixels."""
    check_scheme(scheme)
    if scheme == 144:
        return [round(size * s / REFERENCE_SIZE) for s in GOOGLENET_SCALES]
    return [round(size * resize_ratio)]


def views_of(scheme: int, size: int, resize_ratio: float = DEFAULT_RESIZE_RATIO,
             portrait: bool = False) -> list[View]:
    """The recipe of every crop of ``scheme``, in :func:`crops_of`'s order (``len`` is the scheme)."""
    if check_scheme(scheme) == 1:
        return [View(scales_of(size, 1, resize_ratio)[0], "center", "center", False)]
    if scheme == 10:
        scale = scales_of(size, 10, resize_ratio)[0]
        return [View(scale, "center", crop, flip) for flip in (False, True) for crop in FIVE]
    squares = ("top", "center", "bottom") if portrait else ("left", "center", "right")
    return [View(scale, square, crop, flip)
            for scale in scales_of(size, 144)
            for square in squares
            for flip in (False, True)
            for crop in (*FIVE, "whole")]


def crops_of(images: torch.Tensor, size: int, scheme: int, resize_ratio: float = DEFAULT_RESIZE_RATIO,
             single_view: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The ``scheme`` crops of a batch: ``[n_crops, N, C, size, size]``, in :func:`views_of`'s order.

    ``images`` is a float batch ``[N, C, H, W]`` (any H, W; pixel values untouched apart from
    interpolation, so normalise afterwards). ``single_view`` replaces the 1-crop view (the run's own
    evaluation transform); it is not used by 10 and 144, whose views are defined by the papers.
    """
    import torch
    from torchvision.transforms.v2 import functional as TF

    check_scheme(scheme)
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"expected a float batch [N, C, H, W], got {tuple(images.shape)} {images.dtype}")
    if resize_ratio < 1:
        raise ValueError(f"resize_ratio {resize_ratio} < 1 would leave no {size}-pixel crop")
    if scheme == 1:
        if single_view is not None:
            return single_view(images).unsqueeze(0)
        return TF.center_crop(_shorter_side(images, scales_of(size, 1, resize_ratio)[0]), [size, size]).unsqueeze(0)
    if scheme == 10:
        scale = scales_of(size, 10, resize_ratio)[0]
        five = TF.five_crop(TF.center_crop(_shorter_side(images, scale), [scale, scale]), [size, size])
        # The mirrors of the five patches, not torchvision's ten_crop (the five patches of the mirrored
        # image): when scale - size is odd, the centre patch of the mirrored image is one pixel off the
        # mirrored centre patch, and a mirror-invariant model would then see six positions, not five.
        return torch.stack([*five, *(TF.horizontal_flip(crop) for crop in five)])
    crops: list[torch.Tensor] = []
    for scale in scales_of(size, 144):
        resized = _shorter_side(images, scale)
        for square in _three_squares(resized):
            six = [*TF.five_crop(square, [size, size]), _resize(square, [size, size])]
            crops += six + [TF.horizontal_flip(crop) for crop in six]
    return torch.stack(crops)


def _resize(images: torch.Tensor, size: list[int]) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(images, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def _shorter_side(images: torch.Tensor, side: int) -> torch.Tensor:
    """Resize keeping the aspect ratio, the shorter side to ``side`` pixels."""
    return _resize(images, [side])


def _three_squares(images: torch.Tensor) -> list[torch.Tensor]:
    """Left/centre/right squares of a landscape batch (top/centre/bottom of a portrait one)."""
    h, w = images.shape[-2:]
    side, extra = min(h, w), abs(w - h)
    offsets = (0, round(extra / 2), extra)  # the centre as torchvision's center_crop rounds it
    if w >= h:
        return [images[..., :, o : o + side] for o in offsets]
    return [images[..., o : o + side, :] for o in offsets]
