"""Writers for small dataset files in the REAL on-disk formats, plus Hydra composition of conf/data."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_data(name: str, *overrides: str, seed: int | None = None):
    """The composed config of ``conf/data/<name>.yaml`` (as ``cfg.data``) with ``data.*`` overrides."""
    from hydra import compose, initialize_config_dir

    extra = [f"+seed={seed}"] if seed is not None else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(overrides=[f"+data={name}", *extra, *overrides])


def build(name: str, *overrides: str, seed: int | None = None):
    """Instantiate the DataModule of ``conf/data/<name>.yaml`` as the training pipeline does.

    Like ``experiments.core.errors.instantiate_or_explain``, a data error raised in a constructor is
    unwrapped from Hydra's InstantiationException, so tests see the DataConfigError itself.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from data.errors import DataConfigError

    try:
        return instantiate(compose_data(name, *overrides, seed=seed).data)
    except InstantiationException as error:
        if isinstance(error.__cause__, DataConfigError):
            raise error.__cause__ from None
        raise


# --- MNIST / Fashion-MNIST: IDX ---------------------------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.tobytes()


def write_idx_set(folder: Path, images: dict[bool, np.ndarray], labels: dict[bool, np.ndarray],
                  gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    for train, (image_name, label_name) in names.items():
        for name, array in ((image_name, images[train]), (label_name, labels[train])):
            raw = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)


def random_mnist(rng: np.random.Generator, n_train: int = 120, n_test: int = 30, classes: int = 10):
    images = {True: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              False: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)}
    labels = {True: (np.arange(n_train) % classes).astype(np.uint8),
              False: (np.arange(n_test) % classes).astype(np.uint8)}
    return images, labels


# --- CIFAR-10 / CIFAR-100: python pickles -----------------------------------------------------------
def _dump(path: Path, obj) -> None:
    """Pickle like the original Python 2 files: protocol 2, ``str`` keys (read back with latin1)."""
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def write_cifar10(root: Path, rng: np.random.Generator, per_batch: int = 20, n_test: int = 30):
    """``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``; returns the arrays (N,C,H,W)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5".encode(), "data": x,
                                            "labels": y, "filenames": [b"x.png"] * per_batch})
        train_x.append(x)
        train_y += y
    test_x = rng.integers(0, 256, (n_test, 3 * 32 * 32), dtype=np.uint8)
    test_y = [int(v) for v in rng.integers(0, 10, n_test)]
    _dump(folder / "test_batch", {"batch_label": b"testing batch 1 of 1", "data": test_x, "labels": test_y})
    _dump(folder / "batches.meta", {"label_names": [f"class{i}".encode() for i in range(10)],
                                    "num_cases_per_batch": per_batch, "num_vis": 3072})
    return (np.concatenate(train_x).reshape(-1, 3, 32, 32), np.array(train_y),
            test_x.reshape(-1, 3, 32, 32), np.array(test_y))


def write_cifar100(root: Path, rng: np.random.Generator, n_train: int = 120, n_test: int = 40):
    """``root/cifar-100-python/{train, test, meta}`` with ``fine_labels`` (and coarse ones, ignored)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        fine = [int(v) for v in np.arange(n) * 7 % 100]
        _dump(folder / name, {"filenames": [b"x.png"] * n, "batch_label": name.encode(), "data": x,
                              "fine_labels": fine, "coarse_labels": [v // 5 for v in fine]})
        out += [x.reshape(-1, 3, 32, 32), np.array(fine)]
    _dump(folder / "meta", {"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                            "coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return tuple(out)


# --- SVHN: MATLAB .mat ------------------------------------------------------------------------------
def write_svhn(folder: Path, rng: np.random.Generator, n_train: int = 60, n_test: int = 20):
    """``train_32x32.mat``/``test_32x32.mat``: X is 32x32x3xN uint8, y is Nx1 with 10 meaning digit 0.

    Returns (images N x C x H x W, digit labels 0..9) per split.
    """
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        digits = np.arange(n) % 10
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(folder / name, {"X": x, "y": y})
        out += [x.transpose(3, 2, 0, 1), digits]
    return tuple(out)


# --- ImageFolder: PNG / JPEG ------------------------------------------------------------------------
def class_colour(c: int) -> tuple[int, int, int]:
    return (40 * c + 10, 100, 200 - 40 * c)


def write_imagefolder(root: Path, classes=("cat", "dog", "eel"), per_class: int = 6, per_class_val: int = 2,
                      size: int = 40) -> None:
    """``root/{train,val}/<class>/<i>.{png,jpg}``; every image is one flat colour, ``class_colour(c)``.

    A flat image stays flat through any resize and crop, so its normalised pixels are known exactly.
    """
    from PIL import Image

    for split, count in (("train", per_class), ("val", per_class_val)):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.empty((size, size + 8 * (i % 2), 3), dtype=np.uint8)
                pixels[:] = class_colour(c)
                Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 == 0 else 'jpg'}")
