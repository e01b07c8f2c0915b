"""An image folder is normalised with its own training images' statistics (data.normalize=dataset).

Known answers: a small folder of real PNG and JPEG files whose per-channel mean and std are computed
here with numpy from the pixels written (PNG) or decoded by PIL (JPEG, lossy), every pixel counted
once (images of different sizes). ImageNet's numbers are the published ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import data.stats
from data.errors import DataConfigError
from tests.conftest import assert_refused, run_cli, tree_hashes
from tests.data.formats import build

CLASSES = ("bone", "lung")


def write_folder(root: Path, per_class: int = 5, per_class_val: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/{train,val}/<class>/<i>.{png,jpg}`` with random pixels (X-ray-like: dark, one colour cast)
    and varying sizes; returns every training file's pixels as PIL decodes them (H, W, 3 uint8)."""
    rng = np.random.default_rng(seed)
    pixels: dict[str, np.ndarray] = {}
    for split, count in (("train", per_class), ("val", per_class_val)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = 12 + 3 * i, 10 + 5 * c
                image = np.stack([rng.integers(0, 90, (h, w)), rng.integers(20, 160, (h, w)),
                                  rng.integers(0, 256, (h, w))], axis=-1).astype(np.uint8)
                path = folder / f"{i}.{'png' if i % 2 == 0 else 'jpg'}"
                Image.fromarray(image).save(path)
                if split == "train":
                    with Image.open(path) as stored:  # what the JPEG became; PNG is lossless
                        decoded = np.asarray(stored.convert("RGB"))
                    if path.suffix == ".png":
                        assert np.array_equal(decoded, image)
                    pixels[str(path)] = decoded
    return pixels


def numpy_stats(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of every pixel of ``images`` on the [0, 1] scale."""
    channels = images[0].shape[-1] if images[0].ndim == 3 else 1
    flat = np.concatenate([im.reshape(-1, channels).astype(np.float64) / 255 for im in images])
    return flat.mean(axis=0), flat.std(axis=0)


def imagefolder(root: Path, *overrides: str):
    return build("imagefolder", f"data.root={root}", "data.image_size=16", "data.augment.scale=[16,20]",
                 "data.num_workers=0", "data.batch_size=4", "data.val_size=2", *overrides)


def test_dataset_statistics_are_the_training_pixels_mean_and_std(tmp_path: Path):
    pixels = write_folder(tmp_path)
    mean, std = numpy_stats(list(pixels.values()))
    dm = imagefolder(tmp_path)
    assert dm.normalize == "dataset"  # the config's default
    np.testing.assert_allclose(dm.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(dm.std, std, rtol=1e-12)
    assert (dm.folder_stats.images, dm.folder_stats.total, dm.folder_stats.cached) == (10, 10, False)
    # The test images are normalised with those numbers: (x - mean) / std of the same crop in [0, 1].
    dm.setup("test")
    plain = imagefolder(tmp_path, "data.normalize=none")
    plain.setup("test")
    for i in range(len(dm.test_set)):
        x, _ = plain.test_set[i]
        expected = (x - torch.tensor(mean).view(3, 1, 1).float()) / torch.tensor(std).view(3, 1, 1).float()
        torch.testing.assert_close(dm.test_set[i][0], expected, atol=1e-5, rtol=0)


def test_grayscale_statistics(tmp_path: Path):
    pixels = write_folder(tmp_path)
    # The grey levels the loader trains on: PIL's "L" conversion (ITU-R 601-2 luma) of each file.
    grey = [np.asarray(Image.open(path).convert("L")) for path in pixels]
    mean, std = numpy_stats(grey)
    dm = imagefolder(tmp_path, "data.in_channels=1")
    np.testing.assert_allclose(dm.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(dm.std, std, rtol=1e-12)


def test_the_cap_reads_a_seeded_draw_and_the_cache_is_reused(tmp_path: Path, monkeypatch):
    pixels = write_folder(tmp_path)
    dm = imagefolder(tmp_path, "data.stats_images=4")
    record = json.loads(dm.folder_stats.cache.read_text())
    assert dm.folder_stats.cache.parent == tmp_path / ".channel_stats"
    assert (record["images"], record["training_images"]) == (4, 10)
    files = [str(tmp_path / "train" / f) for f in record["files"]]
    assert len(set(files)) == 4 and set(files) <= set(pixels)
    mean, std = numpy_stats([pixels[f] for f in files])
    np.testing.assert_allclose(dm.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(dm.std, std, rtol=1e-12)

    def no_decoding(paths, mode):
        raise AssertionError("measured again instead of reading the cache")

    with monkeypatch.context() as patch:
        patch.setattr(data.stats, "histogram_stats", no_decoding)
        again = imagefolder(tmp_path, "data.stats_images=4")  # the same draw: read from the cache
    assert again.folder_stats.cached and again.mean == dm.mean
    assert json.loads(again.folder_stats.cache.read_text())["files"] == record["files"]

    # A measured file that changes is measured again (the cache key holds each file's size and mtime).
    changed = files[0]
    Image.fromarray(np.full_like(pixels[changed], 255)).save(changed, format="PNG" if changed.endswith("png")
                                                             else "JPEG")
    pixels[changed] = np.asarray(Image.open(changed).convert("RGB"))
    fresh = imagefolder(tmp_path, "data.stats_images=4")
    assert not fresh.folder_stats.cached
    np.testing.assert_allclose(fresh.mean, numpy_stats([pixels[f] for f in files])[0], rtol=1e-12)


def test_a_folder_that_cannot_hold_the_cache_is_measured_each_time(tmp_path: Path, monkeypatch):
    pixels = write_folder(tmp_path)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(data.stats.tempfile, "NamedTemporaryFile", read_only)
    dm = imagefolder(tmp_path)
    assert dm.folder_stats.cache is None and not dm.folder_stats.cached
    np.testing.assert_allclose(dm.mean, numpy_stats(list(pixels.values()))[0], rtol=1e-12)


def test_a_constant_channel_is_centred_not_divided_by_zero(tmp_path: Path):
    for split in ("train", "val"):
        for c, name in enumerate(CLASSES):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 6), (10 + 40 * c + i, 100, 7 * i)).save(tmp_path / split / name / f"{i}.png")
    dm = imagefolder(tmp_path)
    assert dm.mean[1] == pytest.approx(100 / 255, abs=1e-12) and dm.std[1] == 1.0
    red = np.array([10 + 40 * c + i for c in range(2) for i in range(3)], dtype=np.float64) / 255
    assert dm.std[0] == pytest.approx(red.std(), rel=1e-12)


def test_imagenet_none_and_given_numbers(tmp_path: Path):
    write_folder(tmp_path)
    imagenet = imagefolder(tmp_path, "data.normalize=imagenet")
    assert imagenet.mean == [0.485, 0.456, 0.406] and imagenet.std == [0.229, 0.224, 0.225]
    none = imagefolder(tmp_path, "data.normalize=none")
    assert none.mean == [0.0] * 3 and none.std == [1.0] * 3
    given = imagefolder(tmp_path, "data.mean=[0.1,0.2,0.3]", "data.std=[0.5,0.5,0.5]")  # numbers win
    assert given.mean == [0.1, 0.2, 0.3] and given.std == [0.5] * 3 and given.folder_stats is None
    assert not (tmp_path / ".channel_stats").exists()  # nothing was measured


@pytest.mark.parametrize(("overrides", "key", "value"), [
    (["data.normalize=imagent"], "normalize", "imagent"),
    (["data.stats_images=0"], "stats_images", "0"),
    (["data.mean=[0.5,0.5,0.5]"], "mean/std", "0.5"),
    (["data.normalize=imagenet", "data.in_channels=1"], "normalize", "imagenet"),
    (["data.mean=[0.5,0.5,0.5]", "data.std=[0.2,0.0,0.2]"], "mean/std", "0.0"),
])
def test_bad_normalization_settings(tmp_path: Path, overrides: list[str], key: str, value: str):
    write_folder(tmp_path)
    before = tree_hashes(tmp_path)
    with pytest.raises(DataConfigError) as caught:
        imagefolder(tmp_path, *overrides)
    message = str(caught.value)
    assert caught.value.key == key and message.startswith(f"data.{key}=") and value in message
    assert "\n" not in message
    assert tree_hashes(tmp_path) == before  # no cache, nothing else


def test_the_command_line_refuses_a_bad_choice_and_a_run_records_the_numbers(tmp_path: Path):
    folder = tmp_path / "xrays"
    pixels = write_folder(folder, per_class=6)
    before = tree_hashes(folder)
    common = ["data=imagefolder", f"data.root={folder}", "data.image_size=32", "data.augment.scale=[32,40]",
              "data.num_workers=0", "data.batch_size=4", "data.val_size=2", "model=lenet5", "quiet=true",
              "callbacks=default", "trainer.max_epochs=1"]
    refused = run_cli("experiments.train", *common, "data.normalize=imagent", cwd=tmp_path)
    assert_refused(refused, ["data.normalize", "imagent", "dataset", "imagenet", "none"])
    assert tree_hashes(folder) == before and not (tmp_path / "outputs").exists()

    run_cli("experiments.train", *common, cwd=tmp_path, check=True)
    from omegaconf import OmegaConf

    config = next((tmp_path / "outputs").glob("train/*/*/config.yaml"))
    saved = OmegaConf.load(config).data
    mean, std = numpy_stats(list(pixels.values()))
    assert saved.normalize == "dataset"
    np.testing.assert_allclose(list(saved.mean), mean, rtol=1e-12)
    np.testing.assert_allclose(list(saved.std), std, rtol=1e-12)
    # What eval builds from the run folder: the recorded numbers, nothing measured again.
    from experiments.training.build import build_datamodule

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data.stats, "histogram_stats", lambda paths, mode: pytest.fail("measured again"))
        patch.setattr(data.stats, "folder_stats", lambda *a, **k: pytest.fail("measured again"))
        datamodule = build_datamodule(OmegaConf.load(config))
    assert datamodule.mean == list(saved.mean) and datamodule.std == list(saved.std)
