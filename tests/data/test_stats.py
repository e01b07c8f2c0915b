"""Stored normalisation statistics match the data, and the real Fashion-MNIST loads as published."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data.base import channel_stats
from tests.data.formats import build, compose_data

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").is_file(),
                                   reason="Debian package dataset-fashion-mnist is not installed")


def test_channel_stats_matches_numpy():
    images = torch.randint(0, 256, (37, 3, 5, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = channel_stats(images, chunk=10)  # chunks that do not divide the count
    x = images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-9)


@pytest.fixture(scope="module")
def real_fashion(tmp_path_factory):
    """The real Fashion-MNIST, found through the system-folder fallback (data.root is empty)."""
    import data.sources

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(data.sources, "SYSTEM_DATASETS", FASHION.parent)
        dm = build("fashion_mnist", f"data.root={tmp_path_factory.mktemp('empty-root')}", "data.download=false")
        dm.setup(None)
    return dm


@needs_fashion
def test_real_fashion_mnist(real_fashion):
    dm = real_fashion
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55_000, 5_000, 10_000)
    assert dm.train_set.images.shape == (55_000, 1, 28, 28) and dm.train_set.images.dtype == torch.uint8
    assert dm.test_set.images.shape == (10_000, 1, 28, 28)
    train_labels = torch.cat([dm.train_set.labels, dm.val_set.labels])
    assert train_labels.bincount().tolist() == [6000] * 10  # Fashion-MNIST is balanced
    assert dm.test_set.labels.bincount().tolist() == [1000] * 10
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (128, 1, 28, 28) and labels.min() >= 0 and labels.max() <= 9


@needs_fashion
def test_fashion_mnist_config_stats(real_fashion):
    images = torch.cat([real_fashion.train_set.images, real_fashion.val_set.images])  # the 60k training file
    mean, std = channel_stats(images)
    cfg = compose_data("fashion_mnist").data
    assert [round(v, 3) for v in cfg.mean] == [round(v, 3) for v in mean] == [0.286]
    assert [round(v, 3) for v in cfg.std] == [round(v, 3) for v in std] == [0.353]
    # the normalised training images then have mean ~0 and std ~1
    x = real_fashion.transform_batch(real_fashion.train_set.images[:20_000], train=False)
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01


def test_digits_config_stats():
    """digits: the stats are of the stored 8x8 training images (before upsampling), see data.stats."""
    dm = build("digits")
    images, labels = dm.load_split(train=True)
    test_images, _ = dm.load_split(train=False)
    assert images.shape == (1348, 1, 8, 8) and test_images.shape == (449, 1, 8, 8)
    assert images.dtype == torch.uint8 and int(images.max()) == 255 and labels.unique().tolist() == list(range(10))
    mean, std = channel_stats(images)
    cfg = compose_data("digits").data
    assert [round(v, 3) for v in cfg.mean] == [round(v, 3) for v in mean]
    assert [round(v, 3) for v in cfg.std] == [round(v, 3) for v in std]
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (1348 - 150, 150)
    batch, _ = next(iter(dm.train_dataloader()))
    assert dm.transform_batch(batch, train=True).shape == (64, 1, 32, 32)  # upsampled to image_size


def test_stats_command(capsys):
    from data.stats import main

    assert main(["data=synthetic", "data.num_train=300", "data.in_channels=1", "data.mean=[0.5]",
                 "data.std=[0.25]"]) == 0
    out = capsys.readouterr().out
    dm = build("synthetic", "data.num_train=300", "data.in_channels=1", "data.mean=[0.5]", "data.std=[0.25]")
    mean, std = channel_stats(dm.load_split(train=True)[0])
    assert "synthetic: 300 training images" in out
    assert f"mean: [{mean[0]:.4f}]" in out and f"std: [{std[0]:.4f}]" in out


def test_stats_command_explains_a_missing_dataset(tmp_path, capsys):
    from data.stats import main

    assert main(["data=cifar10", f"data.root={tmp_path}", "data.download=false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: data.root='{tmp_path}'") and "cifar-10-batches-py" in err
