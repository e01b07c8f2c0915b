"""Every bad dataset or setting raises DataConfigError naming the key and the value, never a bare error."""

from __future__ import annotations

import gzip
import os
import pickle
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from data.errors import DataConfigError
from tests.data.formats import (
    build,
    idx_bytes,
    random_mnist,
    write_cifar10,
    write_cifar100,
    write_idx_set,
    write_imagefolder,
    write_svhn,
)

NO_DOWNLOAD = "data.download=false"


@contextmanager
def data_error(key: str, value: object, *, contains: tuple[str, ...] = ()):
    """A DataConfigError for ``data.<key>`` whose one-paragraph message holds the value and ``contains``."""
    with pytest.raises(DataConfigError) as info:
        yield info
    error, message = info.value, str(info.value)
    assert error.key == key, message
    assert message.startswith(f"data.{key}="), message
    assert str(value) in message, message
    assert "\n" not in message and "Traceback" not in message
    for text in contains:
        assert text in message, message


def setup_all(dm) -> None:
    dm.setup("fit")
    dm.setup("test")


# --- missing datasets -------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "hint"), [
    ("mnist", "under {root}/mnist/"),
    ("fashion_mnist", "apt-get install dataset-fashion-mnist"),
    ("cifar10", "so that {root}/cifar-10-batches-py/"),
    ("cifar100", "cifar-100-python"),
    ("svhn", "under {root}/svhn/"),
])
def test_missing_dataset(tmp_path, name, hint):
    """The fix names the data.root the user gave, never the default data/ folder."""
    dm = build(name, f"data.root={tmp_path}", NO_DOWNLOAD)
    hint = hint.replace("{root}", str(tmp_path))
    with data_error("root", tmp_path, contains=(hint, "data.download is false", "data.download=true")) as caught:
        dm.setup("fit")
    assert " data/" not in str(caught.value)


def test_failed_download_is_explained(tmp_path, monkeypatch):
    from data.mnist import MNISTDataModule

    def offline(self, root):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(MNISTDataModule, "_download", offline)
    dm = build("fashion_mnist", f"data.root={tmp_path}", "data.download=true")
    with data_error("root", tmp_path, contains=("the download failed", "name resolution", "apt-get install")):
        dm.setup("fit")


def test_missing_imagefolder(tmp_path):
    with data_error("root", tmp_path, contains=("train/",)):
        build("imagefolder", f"data.root={tmp_path}")


# --- corrupt IDX ------------------------------------------------------------------------------------
def mnist_files(tmp_path, gz=False):
    images, labels = random_mnist(np.random.default_rng(0))
    folder = tmp_path / "mnist"
    write_idx_set(folder, images, labels, gz=gz)
    return folder


def corrupt_idx_cases():
    def truncate(path: Path):
        path.write_bytes(path.read_bytes()[:1000])

    def truncate_header(path: Path):
        path.write_bytes(path.read_bytes()[:6])

    def bad_magic(path: Path):
        raw = bytearray(path.read_bytes())
        raw[0:4] = b"\x1f\x8b\x08\x00"
        path.write_bytes(bytes(raw))

    def truncate_gz(path: Path):
        path.write_bytes(path.read_bytes()[:500])

    def scramble_gz(path: Path):  # valid gzip header, garbage deflate stream (zlib.error)
        raw = bytearray(path.read_bytes())
        raw[10:400] = bytes(range(256)) + bytes(range(134))
        path.write_bytes(bytes(raw))

    def not_gzip(path: Path):
        path.write_bytes(b"this is not gzip at all" * 10)

    def empty(path: Path):
        path.write_bytes(b"")

    return [
        ("plain", "train-images-idx3-ubyte", truncate),
        ("plain", "train-images-idx3-ubyte", truncate_header),
        ("plain", "train-labels-idx1-ubyte", bad_magic),
        ("plain", "train-labels-idx1-ubyte", empty),
        ("gz", "train-images-idx3-ubyte.gz", truncate_gz),
        ("gz", "train-images-idx3-ubyte.gz", scramble_gz),
        ("gz", "train-labels-idx1-ubyte.gz", not_gzip),
    ]


@pytest.mark.parametrize(("kind", "filename", "damage"), corrupt_idx_cases(),
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_corrupt_idx(tmp_path, kind, filename, damage):
    folder = mnist_files(tmp_path, gz=kind == "gz")
    damage(folder / filename)
    dm = build("mnist", f"data.root={tmp_path}", NO_DOWNLOAD, "data.val_size=10")
    with data_error("root", folder, contains=(filename, "truncated or corrupt")):
        dm.setup("fit")


def test_idx_images_and_labels_disagree(tmp_path):
    folder = mnist_files(tmp_path)
    labels = np.zeros(7, dtype=np.uint8)
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    dm = build("mnist", f"data.root={tmp_path}", NO_DOWNLOAD, "data.val_size=2")
    with data_error("root", folder, contains=("do not match",)):
        dm.setup("fit")


def test_idx_labels_beyond_num_classes(tmp_path):
    images, labels = random_mnist(np.random.default_rng(0))
    labels[True][5] = 12
    write_idx_set(tmp_path / "mnist", images, labels, gz=False)
    dm = build("mnist", f"data.root={tmp_path}", NO_DOWNLOAD, "data.val_size=10")
    with data_error("num_classes", 10, contains=("0..12", "data.num_classes=13")):
        dm.setup("fit")


# --- corrupt CIFAR ----------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_shape", "no_meta", "bad_meta", "not_a_dict"])
def test_corrupt_cifar10(tmp_path, damage):
    write_cifar10(tmp_path, np.random.default_rng(0))
    folder = tmp_path / "cifar-10-batches-py"
    batch = folder / "data_batch_3"
    if damage == "truncate":
        batch.write_bytes(batch.read_bytes()[: len(batch.read_bytes()) // 2])
    elif damage == "garbage":
        batch.write_bytes(os.urandom(3000))
    elif damage == "wrong_shape":
        entry = pickle.loads(batch.read_bytes(), encoding="latin1")
        entry["data"] = entry["data"][:, :1000]
        batch.write_bytes(pickle.dumps(entry, protocol=2))
    elif damage == "no_meta":
        (folder / "batches.meta").unlink()
    elif damage == "bad_meta":
        (folder / "batches.meta").write_bytes(b"\x80\x02}q\x00")
    else:
        batch.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    dm = build("cifar10", f"data.root={tmp_path}", NO_DOWNLOAD, "data.val_size=10")
    if damage == "no_meta":  # then the folder is incomplete: reported as missing, with the file list
        with data_error("root", tmp_path, contains=("batches.meta",)):
            dm.setup("fit")
        return
    with data_error("root", folder, contains=("truncated or corrupt",)):
        dm.setup("fit")


def test_truncated_cifar100(tmp_path):
    write_cifar100(tmp_path, np.random.default_rng(0))
    train = tmp_path / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:5000])
    dm = build("cifar100", f"data.root={tmp_path}", NO_DOWNLOAD, "data.val_size=10")
    with data_error("root", tmp_path / "cifar-100-python", contains=("truncated or corrupt",)):
        dm.setup("fit")


def test_cifar_labels_beyond_num_classes(tmp_path):
    write_cifar100(tmp_path, np.random.default_rng(0))
    dm = build("cifar100", f"data.root={tmp_path}", NO_DOWNLOAD, "data.val_size=10", "data.num_classes=10")
    with data_error("num_classes", 10, contains=("data.num_classes=",)):
        dm.setup("fit")


def test_cifar_wrong_in_channels(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(0))
    dm = build("cifar10", f"data.root={tmp_path}", NO_DOWNLOAD, "data.val_size=10", "data.in_channels=1",
               "data.mean=[0.5]", "data.std=[0.25]")
    with data_error("in_channels", 1, contains=("3 channels", "data.in_channels=3")):
        dm.setup("fit")


def test_in_channels_that_disagree_with_mean_std():
    with data_error("in_channels", 1, contains=("mean", "std", "3")):
        build("cifar10", "data.in_channels=1", NO_DOWNLOAD)


# --- corrupt SVHN -----------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "truncate", "no_X", "float_X"])
def test_corrupt_svhn(tmp_path, damage):
    import scipy.io

    folder = tmp_path / "svhn"
    write_svhn(folder, np.random.default_rng(0))
    mat = folder / "train_32x32.mat"
    if damage == "garbage":
        mat.write_bytes(os.urandom(2000))
    elif damage == "truncate":
        mat.write_bytes(mat.read_bytes()[:3000])
    elif damage == "no_X":
        scipy.io.savemat(mat, {"y": np.ones((4, 1), dtype=np.uint8)})
    else:
        scipy.io.savemat(mat, {"X": np.zeros((32, 32, 3, 4)), "y": np.ones((4, 1), dtype=np.uint8)})
    dm = build("svhn", f"data.root={tmp_path}", NO_DOWNLOAD, "data.val_size=2")
    if damage == "float_X":  # parses, but is not a uint8 image array
        with data_error("root", tmp_path, contains=("malformed", "float64")):
            dm.setup("fit")
        return
    with data_error("root", folder, contains=("train_32x32.mat", "truncated or corrupt")):
        dm.setup("fit")


# --- ImageFolder ------------------------------------------------------------------------------------
def imagefolder(root, *overrides):
    return build("imagefolder", f"data.root={root}", "data.image_size=32", "data.augment.scale=[36,48]",
                 "data.num_workers=0", "data.batch_size=4", *overrides)


@pytest.mark.parametrize("damage", ["garbage_jpg", "truncated_png", "empty_png"])
def test_imagefolder_unreadable_image(tmp_path, damage):
    write_imagefolder(tmp_path)
    bad = tmp_path / "train" / "dog" / "0.png"
    if damage == "garbage_jpg":
        bad = bad.with_suffix(".jpg")
        bad.write_bytes(os.urandom(500))
    elif damage == "truncated_png":
        bad.write_bytes(bad.read_bytes()[:60])
    else:
        bad.write_bytes(b"")
    with data_error("root", bad, contains=("verify_images",)):
        imagefolder(tmp_path)


def test_imagefolder_unreadable_image_without_verification(tmp_path):
    write_imagefolder(tmp_path, per_class_val=1)
    (tmp_path / "val" / "dog" / "0.png").write_bytes(b"not a png")
    dm = imagefolder(tmp_path, "data.verify_images=false", "data.val_size=2")
    dm.setup("test")
    with pytest.raises(RuntimeError, match=r"data.root: cannot read image .*0.png"):
        list(dm.test_dataloader())


def test_imagefolder_one_class(tmp_path):
    write_imagefolder(tmp_path, classes=("only",))
    with data_error("root", tmp_path, contains=("1 class folder", "at least 2")):
        imagefolder(tmp_path)


def test_imagefolder_empty_class(tmp_path):
    write_imagefolder(tmp_path)
    (tmp_path / "train" / "fox").mkdir()
    with data_error("root", tmp_path, contains=("fox",)):
        imagefolder(tmp_path)


def test_imagefolder_val_misses_a_class(tmp_path):
    write_imagefolder(tmp_path)
    for file in (tmp_path / "val" / "eel").iterdir():
        file.unlink()
    with data_error("root", tmp_path, contains=("eel",)):
        imagefolder(tmp_path)


def test_imagefolder_no_test_folder(tmp_path):
    write_imagefolder(tmp_path, per_class_val=0)
    for folder in (tmp_path / "val").iterdir():
        folder.rmdir()
    (tmp_path / "val").rmdir()
    with data_error("root", tmp_path, contains=("val/",)):
        imagefolder(tmp_path).setup("fit")


def test_imagefolder_num_classes_mismatch(tmp_path):
    write_imagefolder(tmp_path)
    with data_error("num_classes", 10, contains=("3 classes", "data.num_classes=3")):
        imagefolder(tmp_path, "data.num_classes=10")


@pytest.mark.parametrize(("key", "value"), [
    ("batch_size", 0), ("batch_size", -4), ("eval_batch_size", 0), ("num_workers", -1), ("image_size", 0),
    ("val_size", 18), ("val_size", 1.0), ("val_size", -1), ("in_channels", 4),
])
def test_imagefolder_bad_settings(tmp_path, key, value):
    write_imagefolder(tmp_path)
    with data_error(key, value):
        imagefolder(tmp_path, f"data.{key}={value}").setup("fit")


# --- settings of the in-memory datasets ------------------------------------------------------------
@pytest.mark.parametrize(("key", "value"), [
    ("batch_size", 0), ("batch_size", -1), ("eval_batch_size", 0), ("image_size", 0), ("in_channels", 0),
    ("num_classes", 0), ("num_workers", -2), ("val_size", -5), ("subset", 0), ("native_size", 0),
    ("resize_mode", "stretch"), ("augment.crop_padding", -1), ("augment.color_jitter", 1.5),
    ("split_seed", "abc"), ("std", [0.0, 0.2, 0.2]),
])
def test_bad_settings(key, value, tmp_path):
    override = f"data.{key}={value}" if not isinstance(value, list) else f"data.{key}=[{','.join(map(str, value))}]"
    expected_key = "mean/std" if key == "std" else key
    with data_error(expected_key, value if key != "std" else "0.0"):
        build("synthetic", override)


def test_unknown_augment_key():
    with data_error("augment", "['rotate']", contains=("crop_padding",)):
        build("synthetic", "+data.augment.rotate=10")


@pytest.mark.parametrize(("val_size", "shown"), [(1024, "1024"), (5000, "5000"), (1.0, "1.0"), (0.9999999, "")])
def test_val_size_too_large(val_size, shown):
    with data_error("val_size", shown, contains=("1024",) if val_size != 1.0 else ()):
        build("synthetic", f"data.val_size={val_size}").setup("fit")


def test_val_size_too_large_real_files(tmp_path):
    images, labels = random_mnist(np.random.default_rng(0), n_train=50)
    write_idx_set(tmp_path, images, labels, gz=True)
    dm = build("mnist", f"data.root={tmp_path}", NO_DOWNLOAD, "data.val_size=50")
    with data_error("val_size", 50, contains=("has 50",)):
        dm.setup("fit")


def test_gz_and_plain_side_by_side_prefers_plain(tmp_path):
    """Both forms present: the plain file wins (torchvision extracts next to the .gz)."""
    images, labels = random_mnist(np.random.default_rng(0))
    write_idx_set(tmp_path / "mnist", images, labels, gz=False)
    gz = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(b"garbage"))
    dm = build("mnist", f"data.root={tmp_path}", NO_DOWNLOAD, "data.val_size=10")
    dm.setup("fit")
    assert len(dm.train_set) == 110
