"""Test-time crops and probability averaging, without a training run: geometry, invariances, errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from experiments.core.errors import UserError
from experiments.evaluation.ensemble import (
    FolderViews,
    LoaderViews,
    PipelineViews,
    crop_probabilities,
    errors_of,
    views_for,
)
from experiments.evaluation.evaluate import parse_arguments
from experiments.evaluation.multicrop import FIVE, SCHEMES, crops_of, scales_of, views_of


def coordinates(height: int, width: int) -> torch.Tensor:
    """A [1, 2, H, W] image whose channel 0 holds each pixel's row and channel 1 its column."""
    rows = torch.arange(height, dtype=torch.float32).view(height, 1).expand(height, width)
    cols = torch.arange(width, dtype=torch.float32).view(1, width).expand(height, width)
    return torch.stack([rows, cols]).unsqueeze(0)


def corner(crop: torch.Tensor) -> tuple[float, float]:
    """(row, column) of the source pixel at a coordinate crop's top-left corner."""
    return float(crop[0, 0, 0, 0]), float(crop[0, 1, 0, 0])


# --- geometry -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_gives_its_number_of_crops_of_the_crop_size(scheme):
    images = torch.rand(3, 2, 20, 26)
    crops = crops_of(images, 16, scheme)
    assert crops.shape == (scheme, 3, 2, 16, 16)
    views = views_of(scheme, 16)
    assert len(views) == scheme == len(set(views))  # every recipe once: 144 = 4 scales x 3 squares x 6 x 2
    assert sum(v.flip for v in views) == scheme // 2
    assert scales_of(16, scheme) == ([18, 21, 23, 25] if scheme == 144 else [18])  # round(16 * 256/224) = 18


def test_ten_crop_takes_corners_and_centre_then_their_mirrors():
    size, side = 14, 16  # an image already at round(14 * 16/14) = 16 pixels: the resize keeps it as it is
    crops = crops_of(coordinates(side, side), size, 10, resize_ratio=side / size)
    corners = [corner(c) for c in crops[:5]]
    assert corners == [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]  # FIVE's order: tl, tr, bl, br, centre
    assert [v.crop for v in views_of(10, size, side / size)] == list(FIVE) * 2
    for flipped in range(5):  # then the mirror image of each, in the same order
        assert torch.equal(crops[5 + flipped], crops[flipped].flip(-1))


def test_ten_crop_resizes_the_shorter_side_then_takes_the_central_square():
    size = 14
    landscape = coordinates(8, 20)  # resized to 16 x 40, then the central 16 x 16 square (columns 12..27)
    crops = crops_of(landscape, size, 10, resize_ratio=16 / size)
    top_left, bottom_right = crops[0], crops[3]
    scale = 8 / 16  # source pixels per resized pixel
    # The source coordinate of resized pixel i is (i + 0.5) * scale - 0.5 (half-pixel centres, bilinear).
    assert corner(top_left)[1] == pytest.approx((12 + 0.5) * scale - 0.5, abs=0.3)
    assert float(bottom_right[0, 1, -1, -1]) == pytest.approx((12 + 15 + 0.5) * scale - 0.5, abs=0.3)
    assert float(bottom_right[0, 0, -1, -1]) == pytest.approx(7, abs=0.3)


def test_144_crops_four_scales_three_squares_six_crops_two_mirrors():
    size = 14
    assert scales_of(size, 144) == [16, 18, 20, 22]  # 14 * {256, 288, 320, 352} / 224
    crops = crops_of(coordinates(22, 44), size, 144)  # landscape, already at the largest scale
    views = views_of(144, size)
    assert [v.square for v in views[:36]] == ["left"] * 12 + ["center"] * 12 + ["right"] * 12
    last = crops[108:]  # scale 22: the image untouched; squares at columns 0, 11 and 22
    for square, offset in enumerate((0, 11, 22)):
        six = last[12 * square : 12 * square + 6]
        assert [corner(c) for c in six[:5]] == [(0, offset), (0, offset + 8), (8, offset), (8, offset + 8),
                                               (4, offset + 4)]
        whole = six[5]  # the whole 22 x 22 square resized to 14: spans all its rows and columns
        assert float(whole[0, 0].min()) == pytest.approx(0.29, abs=0.3)
        assert float(whole[0, 0].max()) == pytest.approx(20.71, abs=0.3)
        assert float(whole[0, 1].min()) == pytest.approx(offset + 0.29, abs=0.3)
        mirrors = last[12 * square + 6 : 12 * square + 12]
        for crop, mirror in zip(six, mirrors):
            assert torch.equal(mirror, crop.flip(-1))
    for k, scale in enumerate(scales_of(size, 144)):
        # At each scale the top-left crop covers 14 of `scale` resized rows of the 22 source rows.
        top_left = crops[36 * k]
        expected_bottom = (13 + 0.5) * 22 / scale - 0.5
        assert float(top_left[0, 0, -1, 0]) == pytest.approx(expected_bottom, abs=0.3), scale
        assert views[36 * k].scale == scale


def test_144_crops_of_a_portrait_image_use_top_centre_bottom_squares():
    size = 14
    crops = crops_of(coordinates(44, 22), size, 144)
    assert [v.square for v in views_of(144, size, portrait=True)[:36:12]] == ["top", "center", "bottom"]
    assert [corner(crops[108 + 12 * s]) for s in range(3)] == [(0, 0), (11, 0), (22, 0)]


def test_square_images_still_count_three_identical_squares():
    crops = crops_of(torch.rand(2, 3, 30, 30), 14, 144)
    for k in range(4):
        left, centre, right = crops[36 * k : 36 * k + 12], crops[36 * k + 12 : 36 * k + 24], crops[36 * k + 24 : 36 * k + 36]
        assert torch.equal(left, centre) and torch.equal(centre, right)


# --- invariances: when do more crops change nothing? --------------------------------------------------
def _datamodule(images: torch.Tensor, labels: torch.Tensor, image_size: int, resize_mode: str = "resize"):
    from data.base import InMemoryDataModule

    class Fixed(InMemoryDataModule):
        name = "fixed"

        def load_split(self, train: bool):
            return images, labels

    dm = Fixed(in_channels=images.shape[1], num_classes=10, native_size=images.shape[-1], image_size=image_size,
               mean=[0.5] * images.shape[1], std=[0.25] * images.shape[1], batch_size=16, eval_batch_size=40,
               resize_mode=resize_mode, val_size=0)
    dm.setup("test")
    return dm


def _lenet(input_size: int = 32) -> nn.Module:
    from models.lenet import LeNet5

    torch.manual_seed(0)
    return LeNet5(input_size=input_size).eval()


class Mirrored(nn.Module):
    """A model invariant to left-right mirroring by construction: the mean of f(x) and f(mirror x)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.inner(x) + self.inner(x.flip(-1))) / 2


def _probabilities(model: nn.Module, dm, schemes, tmp_path: Path):
    trained = SimpleNamespace(module=model, datamodule=dm, run_dir=tmp_path,
                              cfg=OmegaConf.create({"trainer": {"accelerator": "cpu"}}))
    return crop_probabilities(trained, schemes)


def test_ten_and_144_crops_of_a_constant_image_equal_the_single_crop(tmp_path):
    """A spatially constant image is invariant to every crop, scale and mirror: any model, any scheme,
    the same probabilities — provided every crop is a full S x S view normalised like the run's input."""
    images = torch.tensor([40, 90, 128, 200, 255, 0, 17, 230], dtype=torch.uint8).view(8, 1, 1, 1).expand(8, 1, 28, 28)
    labels = torch.arange(8) % 10
    labels, probs = _probabilities(_lenet(), _datamodule(images.contiguous(), labels, 32), [1, 10, 144], tmp_path)
    assert not torch.allclose(probs[1][0], probs[1][1])  # the images differ, so the test is not vacuous
    for scheme in (10, 144):
        torch.testing.assert_close(probs[scheme], probs[1], atol=1e-6, rtol=0)
        assert errors_of(probs[scheme], labels) == errors_of(probs[1], labels)


def test_single_crop_is_the_runs_own_input_bit_for_bit():
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    for mode in ("resize", "pad"):
        dm = _datamodule(images, torch.zeros(6, dtype=torch.long), 32, mode)
        (single,) = PipelineViews(dm).crops(images, 1, 256 / 224, per_call=40)
        assert torch.equal(single[0], dm.transform_batch(images, train=False))


def test_flips_add_nothing_for_a_mirror_invariant_model(tmp_path):
    """10 crops = 5 crops + the same 5 of the mirror; a mirror-invariant model scores both halves alike."""
    images = torch.randint(0, 256, (12, 1, 36, 36), dtype=torch.uint8)
    dm = _datamodule(images, torch.arange(12) % 10, 32)
    model = Mirrored(_lenet())
    _, probs = _probabilities(model, dm, [1, 10], tmp_path)
    (crops,) = PipelineViews(dm).crops(images, 10, 256 / 224, per_call=40)
    with torch.inference_mode():
        five = torch.stack([model(c).double().softmax(1) for c in crops[:5]]).mean(0)
    torch.testing.assert_close(probs[10], five, atol=1e-6, rtol=0)
    assert not torch.allclose(probs[10], probs[1], atol=1e-3)  # translations still matter: not vacuous


def test_a_mirror_symmetric_image_gives_the_same_crops_mirrored(tmp_path):
    """For x == mirror(x) the mirrored half of the 10 crops holds exactly the unmirrored five, reordered
    (tl <-> tr, bl <-> br, centre <-> centre), so ANY model's 10-crop average is its 5-crop average.
    (The centre maps onto itself only when round(S * 256/224) - S is even: 32 - 28 = 4 here.)"""
    half = torch.randint(0, 256, (4, 1, 32, 16), dtype=torch.uint8)
    images = torch.cat([half, half.flip(-1)], dim=-1)
    dm = _datamodule(images, torch.arange(4), 28)
    (crops,) = PipelineViews(dm).crops(images, 10, 256 / 224, per_call=40)
    for flipped, same in zip(range(5, 10), (1, 0, 3, 2, 4)):
        assert torch.equal(crops[flipped], crops[same])
    model = _lenet(input_size=28)
    _, probs = _probabilities(model, dm, [10], tmp_path)
    with torch.inference_mode():
        five = torch.stack([model(c).double().softmax(1) for c in crops[:5]]).mean(0)
    torch.testing.assert_close(probs[10], five, atol=1e-6, rtol=0)


def test_memory_is_bounded_by_chunking_the_batch():
    images = torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8)
    dm = _datamodule(images, torch.zeros(40, dtype=torch.long), 32)
    chunks = list(PipelineViews(dm).crops(images, 144, 256 / 224, per_call=max(1, 300 // 144)))
    assert [c.shape[:2] for c in chunks] == [(144, 2)] * 20


# --- errors and ensembles ----------------------------------------------------------------------------
def test_top1_and_top5_errors_in_percent():
    probs = torch.eye(6, dtype=torch.float64)[[0, 1, 2, 3]] + torch.linspace(0, 0.1, 6)  # argmax 0,1,2,3
    labels = torch.tensor([0, 1, 5, 4])
    errors = errors_of(probs, labels)
    assert errors["top1_err"] == 50.0  # two of four right
    assert errors["top5_err"] == 0.0  # the runner-ups 5 and 4 are within the top 5 of 6 classes
    assert errors_of(probs, labels, top_k=2)["top5_err"] == 25.0  # top 2: image 2's {2, 5} holds 5, 3's {3, 5} misses 4


def test_folder_images_are_cropped_at_their_own_size(tmp_path):
    from PIL import Image

    from data.imagefolder import ImageFolderDataModule

    for split in ("train", "val"):
        for label, colour in (("cat", (200, 30, 90)), ("dog", (10, 250, 120))):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (13 + 4 * i, 10), colour).save(tmp_path / split / label / f"{i}.png")
    dm = ImageFolderDataModule(str(tmp_path), image_size=8, num_workers=0, val_size=0, eval_batch_size=3)
    dm.setup()
    views = FolderViews(dm)
    own = torch.cat([x for x, _ in dm.test_dataloader()])
    inputs, _ = zip(*views.loader())
    single = torch.cat([next(views.crops(i, 1, 256 / 224, per_call=8))[0] for i in inputs])
    assert torch.equal(single, own)  # 1 crop: the datamodule's own evaluation tensor
    ten = torch.cat([next(views.crops(i, 10, 256 / 224, per_call=8)) for i in inputs], dim=1)
    assert ten.shape == (10, 4, 3, 8, 8)
    torch.testing.assert_close(ten, single.expand_as(ten), atol=1e-5, rtol=0)  # constant colours


def test_other_datamodules_allow_one_crop_only():
    other = SimpleNamespace(test_dataloader=lambda: [], transform_batch=lambda x, train: x)
    assert isinstance(views_for(other, "run", [1]), LoaderViews)
    with pytest.raises(UserError, match=r"eval\.crops"):
        views_for(other, "run", [1, 10])


# --- the command line, parsed -----------------------------------------------------------------------
def test_parse_crops_runs_and_ratio():
    args = parse_arguments(["eval.runs=[a, 'b',c]", "eval.crops=[1,10,144,10]", "eval.resize_ratio=288/224",
                            "data.root=x"])
    assert args.run is None and args.targets == [("eval.runs", "a"), ("eval.runs", "b"), ("eval.runs", "c")]
    assert args.crops == [1, 10, 144] and args.resize_ratio == pytest.approx(288 / 224)
    assert args.overrides == ["data.root=x"] and args.averaged
    plain = parse_arguments(["run=r", "ckpt=last"])
    assert not plain.averaged and plain.targets == [("run", "r")] and plain.ckpt == "last"
    assert parse_arguments(["run=r", "eval.crops=10"]).crops == [10]


@pytest.mark.parametrize(("arg", "key"), [
    ("eval.crops=7", "eval.crops"), ("eval.crops=abc", "eval.crops"), ("eval.crops=[]", "eval.crops"),
    ("eval.crops=[1,5]", "eval.crops"), ("eval.runs=[]", "eval.runs"), ("eval.resize_ratio=0.5", "eval.resize_ratio"),
    ("eval.resize_ratio=x", "eval.resize_ratio"), ("eval.crop=10", "eval.crop"),
])
def test_bad_eval_keys_name_themselves(arg, key):
    with pytest.raises(UserError) as error:
        parse_arguments(["run=r", arg])
    assert error.value.key == key
