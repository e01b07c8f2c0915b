"""Every file-backed dataset, loaded from small files in its REAL on-disk format through conf/data/*.yaml."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.data.formats import (
    build,
    class_colour,
    random_mnist,
    write_cifar10,
    write_cifar100,
    write_idx_set,
    write_imagefolder,
    write_svhn,
)


def positions(originals: np.ndarray, images: torch.Tensor) -> np.ndarray:
    """Index in ``originals`` of every image of ``images`` (random uint8 images are all distinct)."""
    where = {row.tobytes(): i for i, row in enumerate(originals)}
    assert len(where) == len(originals)
    return np.array([where[row.numpy().tobytes()] for row in images])


def check_split(dm, images: np.ndarray, labels: np.ndarray, val_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Train + val are the training file, disjoint, with the right sizes and labels; returns their indices."""
    n, c, h, w = images.shape
    assert dm.train_set.images.shape == (n - val_size, c, h, w)
    assert dm.val_set.images.shape == (val_size, c, h, w)
    assert dm.train_set.images.dtype == torch.uint8 and dm.train_set.labels.dtype == torch.int64
    train_idx, val_idx = positions(images, dm.train_set.images), positions(images, dm.val_set.images)
    assert set(train_idx).isdisjoint(val_idx)
    assert sorted([*train_idx, *val_idx]) == list(range(n))
    np.testing.assert_array_equal(dm.train_set.labels.numpy(), labels[train_idx])
    np.testing.assert_array_equal(dm.val_set.labels.numpy(), labels[val_idx])
    return train_idx, val_idx


def check_test_set(dm, images: np.ndarray, labels: np.ndarray) -> None:
    np.testing.assert_array_equal(dm.test_set.images.numpy(), images)
    np.testing.assert_array_equal(dm.test_set.labels.numpy(), labels)


def check_batches(dm, batch_size: int) -> None:
    images, labels = next(iter(dm.train_dataloader()))
    c, s = dm.in_channels, dm.native_size
    assert images.shape == (batch_size, c, s, s) and images.dtype == torch.uint8
    assert labels.shape == (batch_size,) and labels.dtype == torch.int64
    out = dm.transform_batch(images, train=False)
    assert out.dtype == torch.float32 and out.shape == (batch_size, c, dm.image_size, dm.image_size)
    mean = torch.tensor(dm.mean).view(1, -1, 1, 1)
    std = torch.tensor(dm.std).view(1, -1, 1, 1)
    torch.testing.assert_close(out, (images.float() / 255 - mean) / std)
    val_images, _ = next(iter(dm.val_dataloader()))
    assert len(val_images) == min(dm.eval_batch_size, len(dm.val_set))


# --- MNIST / Fashion-MNIST --------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "subfolder", "gz"), [
    ("mnist", "mnist", False),
    ("mnist", "MNIST/raw", True),
    ("fashion_mnist", "fashion_mnist", True),
    ("fashion_mnist", "FashionMNIST/raw", False),
    ("fashion_mnist", ".", True),
])
def test_idx_round_trip(tmp_path, name, subfolder, gz):
    images, labels = random_mnist(np.random.default_rng(1))
    write_idx_set(tmp_path / subfolder, images, labels, gz=gz)
    dm = build(name, f"data.root={tmp_path}", "data.val_size=20", "data.download=false", "data.batch_size=16")
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, 28)
    dm.setup("fit")
    dm.setup("test")
    train = images[True][:, None]
    check_split(dm, train, labels[True].astype(np.int64), val_size=20)
    check_test_set(dm, images[False][:, None], labels[False].astype(np.int64))
    check_batches(dm, 16)


def test_split_is_seeded(tmp_path):
    images, labels = random_mnist(np.random.default_rng(2))
    write_idx_set(tmp_path / "mnist", images, labels, gz=False)
    train = images[True][:, None]

    def split(*overrides):
        dm = build("mnist", f"data.root={tmp_path}", "data.val_size=0.25", "data.download=false", *overrides)
        dm.setup("fit")
        assert len(dm.val_set) == 30  # a fraction of the 120 training images
        return tuple(sorted(idx) for idx in check_split(dm, train, labels[True].astype(np.int64), 30))

    first = split()
    assert split() == first
    assert split("data.split_seed=0") == first
    assert split("data.split_seed=1") != first


def test_shuffle_seed_follows_the_run_seed(tmp_path):
    images, labels = random_mnist(np.random.default_rng(3))
    write_idx_set(tmp_path / "mnist", images, labels, gz=False)
    common = (f"data.root={tmp_path}", "data.val_size=20", "data.download=false", "data.batch_size=100")
    assert build("mnist", *common).shuffle_seed == 0  # no run seed: 0
    orders = {}
    for seed in (7, 7, 8):
        dm = build("mnist", *common, seed=seed)
        assert dm.shuffle_seed == seed
        dm.setup("fit")
        orders.setdefault(seed, []).append(next(iter(dm.train_dataloader()))[1].tolist())
    assert orders[7][0] == orders[7][1]
    assert orders[7][0] != orders[8][0]


# --- CIFAR ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["root", "named", "direct"])
def test_cifar10_round_trip(tmp_path, layout):
    root = {"root": tmp_path, "named": tmp_path / "cifar10", "direct": tmp_path}[layout]
    train_x, train_y, test_x, test_y = write_cifar10(root, np.random.default_rng(4))
    data_root = tmp_path / "cifar-10-batches-py" if layout == "direct" else tmp_path
    dm = build("cifar10", f"data.root={data_root}", "data.val_size=20", "data.download=false",
               "data.batch_size=32")
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 3, 32)
    dm.setup(None)
    assert len(train_y) == 100
    check_split(dm, train_x, train_y, val_size=20)
    check_test_set(dm, test_x, test_y)
    check_batches(dm, 32)
    # a pixel in the pickle's row layout (all red, then all green, then all blue; row-major) lands at (c, y, x)
    row = dm.test_set.images[3]
    assert row[1, 5, 7] == test_x.reshape(len(test_x), -1)[3, 1 * 1024 + 5 * 32 + 7]


def test_cifar100_fine_labels(tmp_path):
    train_x, train_y, test_x, test_y = write_cifar100(tmp_path, np.random.default_rng(5))
    dm = build("cifar100", f"data.root={tmp_path}", "data.val_size=0.1", "data.download=false",
               "data.batch_size=25")
    assert dm.num_classes == 100
    dm.setup(None)
    assert train_y.max() > 20  # fine labels, not the 20 coarse ones
    check_split(dm, train_x, train_y, val_size=12)
    check_test_set(dm, test_x, test_y)
    check_batches(dm, 25)


# --- SVHN -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("subfolder", ["svhn", "."])
def test_svhn_round_trip(tmp_path, subfolder):
    train_x, train_y, test_x, test_y = write_svhn(tmp_path / subfolder, np.random.default_rng(6))
    dm = build("svhn", f"data.root={tmp_path}", "data.val_size=10", "data.download=false", "data.batch_size=8")
    dm.setup(None)
    assert 0 in set(dm.train_set.labels.tolist()) | set(dm.val_set.labels.tolist())  # stored as 10
    assert int(dm.train_set.labels.max()) <= 9
    check_split(dm, train_x, train_y, val_size=10)
    check_test_set(dm, test_x, test_y)
    check_batches(dm, 8)


# --- ImageFolder ------------------------------------------------------------------------------------
def imagefolder(root, *overrides):
    return build("imagefolder", f"data.root={root}", "data.image_size=32", "data.augment.scale=[36,48]",
                 "data.num_workers=0", "data.batch_size=4", *overrides)


def test_imagefolder_round_trip(tmp_path):
    write_imagefolder(tmp_path)
    # ImageNet's numbers: the JPEG tolerance below divides by its std (the flat test colours give the folder's
    # own green channel a std near 0); the folder's own statistics are tested in test_folder_stats.py.
    dm = imagefolder(tmp_path, "data.val_size=3", "data.normalize=imagenet")
    assert dm.classes == ["cat", "dog", "eel"] and dm.num_classes == 3 and dm.in_channels == 3
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (15, 3, 6)
    train_paths = {dm.train_set.dataset.samples[i][0] for i in dm.train_set.indices}
    val_paths = {dm.val_set.dataset.samples[i][0] for i in dm.val_set.indices}
    assert train_paths.isdisjoint(val_paths) and len(train_paths | val_paths) == 18
    mean = torch.tensor(dm.mean).view(-1, 1, 1)
    std = torch.tensor(dm.std).view(-1, 1, 1)
    for subset in (dm.train_set, dm.val_set, dm.test_set):
        for i in range(len(subset)):
            image, label = subset[i]
            assert image.shape == (3, 32, 32) and image.dtype == torch.float32
            expected = (torch.tensor(class_colour(label), dtype=torch.float32).view(3, 1, 1) / 255 - mean) / std
            folder, j = (subset.dataset, subset.indices[i]) if hasattr(subset, "indices") else (subset, i)
            path = folder.samples[j][0]
            tolerance = 1e-5 if path.endswith(".png") else 4 / 255 / 0.224  # JPEG rounds flat colours
            torch.testing.assert_close(image, expected.expand(3, 32, 32), atol=tolerance, rtol=0)
            assert path.split("/")[-2] == dm.classes[label]
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.int64
    assert dm.transform_batch(images, train=True) is images  # already normalised in the loader


def test_imagefolder_split_is_seeded(tmp_path):
    write_imagefolder(tmp_path)

    def val_indices(*overrides):
        dm = imagefolder(tmp_path, "data.val_size=0.25", *overrides)
        dm.setup("fit")
        return sorted(dm.val_set.indices)

    first = val_indices()
    assert len(first) == 4  # round(0.25 * 18)
    assert val_indices() == first
    assert val_indices("data.split_seed=3") != first


def test_imagefolder_grayscale(tmp_path):
    write_imagefolder(tmp_path, classes=("a", "b"))
    dm = imagefolder(tmp_path, "data.in_channels=1", "data.val_size=2")
    dm.setup("fit")
    image, _ = dm.val_set[0]
    assert image.shape == (1, 32, 32)


def test_imagefolder_test_subset_draws_from_every_class(tmp_path):
    # The test files are sorted by class: the first 3 of 3 classes x 2 would be cat, cat, dog.
    write_imagefolder(tmp_path, classes=("ant", "bee", "cat", "dog", "eel"), per_class_val=4)
    dm = imagefolder(tmp_path, "data.test_subset=6")
    dm.setup("test")
    labels = [dm.test_set.dataset.samples[i][1] for i in dm.test_set.indices]
    assert len(labels) == 6 and dm.test_set.indices == sorted(dm.test_set.indices)
    assert len(set(labels)) >= 3  # a seeded draw over the 20 files, not the first 6 (two classes)
    again = imagefolder(tmp_path, "data.test_subset=6")
    again.setup("test")
    assert again.test_set.indices == dm.test_set.indices  # the same draw every time (data.split_seed)
