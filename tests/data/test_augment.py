"""The batched pipeline of data.augment: per-image crops and flips, padding, jitter, normalisation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from data.augment import BatchPipeline, random_color_jitter, random_crop, random_hflip
from data.errors import DataConfigError
from tests.data.formats import build


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def crop_offsets(x: torch.Tensor, out: torch.Tensor, padding: int) -> list[tuple[int, int]]:
    """For every image, the (dy, dx) window of the zero-padded input that ``out`` equals exactly."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    offsets = []
    for i in range(n):
        hits = [(dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)
                if torch.equal(out[i], padded[i, :, dy : dy + h, dx : dx + w])]
        assert len(hits) == 1, f"image {i}: {hits}"
        offsets += hits
    return offsets


def test_random_crop_is_a_shifted_window_per_image():
    x = torch.rand(200, 3, 8, 10) + 0.1  # non-square, no zeros of its own
    out = random_crop(x, padding=3)
    assert out.shape == x.shape and out.dtype == x.dtype
    offsets = crop_offsets(x, out, 3)
    assert len(set(offsets)) >= 30  # of 49 possible: independent offsets, not one for the batch
    assert {dy for dy, _ in offsets} == set(range(7)) and {dx for _, dx in offsets} == set(range(7))
    shifted = [i for i, off in enumerate(offsets) if off != (3, 3)]
    assert (out[shifted] == 0).any()  # shifted windows show the zero padding


def test_random_hflip_mirrors_about_half():
    x = torch.rand(2000, 2, 4, 5)
    out = random_hflip(x)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same ^ mirrored).all())  # every image is either untouched or exactly mirrored
    assert 0.45 < mirrored.float().mean().item() < 0.55


def test_pad_mode_centres_a_28_image_in_32():
    images = torch.randint(1, 256, (5, 1, 28, 28), dtype=torch.uint8)
    pipeline = BatchPipeline([0.0], [1.0], image_size=32, native_size=28, resize_mode="pad")
    out = pipeline(images, train=False)
    assert out.shape == (5, 1, 32, 32)
    torch.testing.assert_close(out[:, :, 2:30, 2:30], images.float() / 255)
    border = out.clone()
    border[:, :, 2:30, 2:30] = 0
    assert torch.count_nonzero(border) == 0


def test_pad_mode_from_config():
    dm = build("synthetic", "data.native_size=28", "data.image_size=32", "data.resize_mode=pad")
    dm.setup("fit")
    images, _ = next(iter(dm.train_dataloader()))
    out = dm.transform_batch(images, train=False)
    assert out.shape == (64, 3, 32, 32)
    torch.testing.assert_close(out[:, :, 0, :], torch.full_like(out[:, :, 0, :], (0 - 0.5) / 0.25))


def test_pad_mode_cannot_shrink():
    with pytest.raises(DataConfigError, match=r"data.image_size=24: .*resize_mode=resize"):
        BatchPipeline([0.5], [0.5], image_size=24, native_size=28, resize_mode="pad")


def test_resize_mode_upsamples():
    flat = torch.full((3, 1, 8, 8), 128, dtype=torch.uint8)
    out = BatchPipeline([0.0], [1.0], image_size=32, native_size=8)(flat, train=False)
    assert out.shape == (3, 1, 32, 32)
    torch.testing.assert_close(out, torch.full_like(out, 128 / 255))  # a flat image stays flat


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_stays_in_unit_range(channels):
    x = torch.cat([torch.zeros(50, channels, 6, 6), torch.ones(50, channels, 6, 6), torch.rand(400, channels, 6, 6)])
    out = random_color_jitter(x.clone(), 0.9)
    assert out.min() >= 0 and out.max() <= 1
    changed = (out - x).abs().flatten(1).amax(1) > 1e-3
    assert changed[100:].float().mean() > 0.9  # real images are changed, each by its own factors
    ratios = (out[100:, 0, 0, 0] / x[100:, 0, 0, 0]).unique()
    assert len(ratios) > 100
    pipeline = BatchPipeline([0.0] * channels, [1.0] * channels, 6, 6, color_jitter=0.9)
    uint8 = (x * 255).to(torch.uint8)
    out = pipeline(uint8, train=True)
    assert out.min() >= 0 and out.max() <= 1


def test_normalisation_uses_configured_mean_std():
    dm = build("synthetic", "data.mean=[0.1,0.2,0.3]", "data.std=[0.5,0.25,0.125]")
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    out = dm.transform_batch(images, train=False)
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (images.float() / 255 - mean) / std)
    assert images.dtype == torch.uint8  # the input batch is not modified in place


def test_eval_has_no_randomness_and_train_has():
    dm = build("synthetic", "data.augment.crop_padding=4", "data.augment.hflip=true",
               "data.augment.color_jitter=0.4")
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    plain = build("synthetic").transform_batch(images, train=False)
    first, second = dm.transform_batch(images, train=False), dm.transform_batch(images, train=False)
    assert torch.equal(first, second) and torch.equal(first, plain)
    assert not torch.equal(dm.transform_batch(images, train=True), dm.transform_batch(images, train=True))


def test_on_after_batch_transfer_augments_only_while_training():
    dm = build("synthetic", "data.augment.crop_padding=4", "data.augment.hflip=true")
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(64)
    plain = dm.transform_batch(images, train=False)
    out, out_labels = dm.on_after_batch_transfer((images, labels), 0)  # no trainer: evaluation
    assert torch.equal(out, plain) and out_labels is labels
    dm.trainer = SimpleNamespace(training=False)
    assert torch.equal(dm.on_after_batch_transfer((images, labels), 0)[0], plain)
    dm.trainer = SimpleNamespace(training=True)
    assert not torch.equal(dm.on_after_batch_transfer((images, labels), 0)[0], plain)


def test_padding_of_random_crops_is_the_mean_so_zero_after_normalisation():
    # He et al. pad mean-subtracted images with zeros: a padded pixel carries no signal.
    pipeline = BatchPipeline(mean=[0.25, 0.75], std=[0.5, 0.5], image_size=4, native_size=4, crop_padding=4)
    images = torch.ones(64, 2, 4, 4)  # white: every non-padding pixel is (1 - mean) / std > 0
    out = pipeline(images, train=True)
    padded = out != out.new_tensor([1.5, 0.5]).view(1, 2, 1, 1)
    assert padded.any(), "with padding 4 on a 4x4 image most crops hold padding"
    assert torch.equal(out[padded], torch.zeros_like(out[padded]))


def test_affine_by_a_quarter_turn_is_rot90_and_a_shift_moves_pixels():
    from data.augment import affine

    x = torch.rand(3, 2, 6, 6)
    turned = affine(x, torch.full((3,), math.pi / 2), torch.zeros(3, 2))
    assert any(torch.allclose(turned, torch.rot90(x, k, dims=(2, 3)), atol=1e-5) for k in (1, -1))
    # Half a side to the right: the left half is uncovered (the fill), the right half is the old left half.
    fill = torch.tensor([0.25, 0.75]).view(1, 2, 1, 1)
    moved = affine(x, torch.zeros(3), torch.tensor([[0.5, 0.0]] * 3), fill)
    assert torch.allclose(moved[..., 3:], x[..., :3], atol=1e-5)
    assert torch.allclose(moved[..., :3], fill.expand(3, 2, 6, 3), atol=1e-5)


def test_rotation_and_color_cast_are_drawn_per_image():
    from data.augment import random_affine, random_color_cast

    x = torch.rand(1, 3, 8, 8).expand(64, 3, 8, 8).contiguous()  # 64 copies of one image
    rotated = random_affine(x, degrees=30, translate=0.0)
    assert len({tuple(img.flatten()[:5].tolist()) for img in rotated.round(decimals=4)}) > 50
    cast = random_color_cast(torch.full((64, 3, 4, 4), 0.5), strength=0.1)
    offsets = cast - 0.5
    assert torch.allclose(offsets, offsets[..., :1, :1].expand_as(offsets))  # one offset per image and channel
    assert float(offsets.abs().max()) <= 0.1 + 1e-6 and len(set(offsets[:, 0, 0, 0].tolist())) > 50


def test_geometric_and_colour_settings_are_checked():
    for key, value in (("rotation", -1), ("translate", 0.5), ("color_cast", 1.0)):
        with pytest.raises(DataConfigError, match=f"augment.{key}"):
            BatchPipeline(mean=[0.5], std=[0.5], image_size=8, native_size=8, **{key: value})
