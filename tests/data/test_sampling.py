"""Batch order: every training image once per epoch, an order that is a function of (seed, epoch)."""

from __future__ import annotations

import pytest
import torch
from lightning_fabric.utilities.data import _set_sampler_epoch  # what Lightning's loops call per epoch

from tests.data.formats import build

FASHION_SIZED = ("data.num_train=60000", "data.num_test=16", "data.in_channels=1", "data.native_size=28",
                 "data.mean=[0.5]", "data.std=[0.25]", "data.val_size=5000", "data.batch_size=128")


@pytest.fixture(scope="module")
def fashion_sized():
    dm = build("synthetic", *FASHION_SIZED, seed=3)
    dm.setup("fit")
    dm.original_labels = dm.train_set.labels
    dm.train_set.labels = torch.arange(len(dm.train_set))  # label = index: batches say what they hold
    return dm


def epoch_order(dm, epoch: int, check_images: bool = False) -> torch.Tensor:
    loader = dm.train_dataloader()
    _set_sampler_epoch(loader, epoch)
    seen, sizes, batches = [], [], []
    for images, index in loader:
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 28, 28)
        if check_images:
            batches.append(images)
        seen.append(index)
        sizes.append(len(index))
    assert sizes == [128] * 429 + [88]  # 55,000 = 429 * 128 + 88, nothing dropped
    order = torch.cat(seen)
    if check_images:  # each batch holds the images its labels (indices) name
        rows = dm.train_set.images.view(len(dm.train_set), -1)
        assert torch.equal(torch.cat(batches).view(len(order), -1), rows.index_select(0, order))
    return order


def test_every_training_image_once_per_epoch(fashion_sized):
    order = epoch_order(fashion_sized, 0, check_images=True)
    assert len(fashion_sized.train_set) == 55_000
    assert torch.equal(order.sort().values, torch.arange(55_000))
    assert not torch.equal(order, torch.arange(55_000))  # shuffled


def test_set_epoch_changes_the_order_deterministically(fashion_sized):
    first, second = epoch_order(fashion_sized, 0), epoch_order(fashion_sized, 1)
    assert not torch.equal(first, second)
    assert torch.equal(torch.sort(second).values, torch.arange(55_000))
    assert torch.equal(epoch_order(fashion_sized, 1), second)  # same epoch, same order
    assert torch.equal(epoch_order(fashion_sized, 0), first)


def test_order_survives_a_restart_and_follows_the_seed():
    """A fresh DataModule (a resumed run) at the same (seed, epoch) sees the same batches."""
    small = ("data.num_train=500", "data.val_size=100", "data.batch_size=50")

    def labels(seed, epoch):
        dm = build("synthetic", *small, seed=seed)
        dm.setup("fit")
        loader = dm.train_dataloader()
        _set_sampler_epoch(loader, epoch)
        return torch.cat([batch_labels for _, batch_labels in loader])

    assert torch.equal(labels(5, 2), labels(5, 2))
    assert not torch.equal(labels(5, 2), labels(6, 2))
    assert not torch.equal(labels(5, 2), labels(5, 3))


def test_val_and_test_are_sequential_and_complete(fashion_sized):
    val = list(fashion_sized.val_dataloader())
    assert [len(labels) for _, labels in val] == [256] * 19 + [136]  # eval_batch_size 256
    assert torch.equal(torch.cat([images for images, _ in val]), fashion_sized.val_set.images)


def test_a_real_trainer_shuffles_per_epoch_and_normalises(tmp_path):
    import pytorch_lightning as pl

    class Recorder(pl.LightningModule):
        def __init__(self, outputs: int):
            super().__init__()
            self.layer = torch.nn.Linear(3 * 8 * 8, outputs)
            self.orders: dict[int, list[int]] = {}
            self.stats: list[tuple[torch.dtype, float]] = []

        def training_step(self, batch, _):
            images, labels = batch
            self.orders.setdefault(self.current_epoch, []).extend(labels.tolist())
            self.stats.append((images.dtype, images.min().item()))
            return torch.nn.functional.cross_entropy(self.layer(images.flatten(1)), labels)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = build("synthetic", "data.num_train=96", "data.val_size=0", "data.native_size=8", "data.batch_size=16",
               "data.augment.hflip=true", seed=1)
    dm.setup("fit")
    dm.train_set.labels = torch.arange(96)  # label = index
    model = Recorder(outputs=96)
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    orders = [model.orders[e] for e in range(3)]
    assert all(sorted(o) == list(range(96)) for o in orders)
    assert orders[0] != orders[1] != orders[2]  # Lightning reached our sampler's set_epoch
    assert all(dtype == torch.float32 and low < 0 for dtype, low in model.stats)  # normalised floats
    expected = []
    for epoch in range(3):
        loader = dm.train_dataloader()
        _set_sampler_epoch(loader, epoch)
        expected.append(torch.cat([labels for _, labels in loader]).tolist())
    assert orders == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_resident_batches_stay_on_the_gpu():
    dm = build("synthetic", "data.device_resident=true", "data.augment.crop_padding=4", "data.augment.hflip=true")
    dm.setup("fit")
    assert dm.train_set.images.is_cuda
    images, labels = next(iter(dm.train_dataloader()))
    assert images.is_cuda and labels.is_cuda and images.dtype == torch.uint8
    out = dm.transform_batch(images, train=True)
    assert out.is_cuda and out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
