"""The GPU data path's logic, checked without a GPU (issue 19).

The decision (``data.device_resident=auto|true|false``) is a pure function of the split's size, the
training device and its free memory, so it is checked with made-up memory figures. The resident path
itself (a split copied to "the device" once, batches cut and augmented there) runs with
``device="cpu"`` standing for the device; tests/gpu/ checks it on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from data import base
from data.base import RESIDENT_SHARE, TensorBatches, resident_decision
from data.errors import DataConfigError
from data.synthetic import SyntheticDataModule

CUDA = torch.device("cuda", 0)
GIB = 2**30


@pytest.mark.parametrize("setting, size, device, free, expected", [
    ("auto", int(RESIDENT_SHARE * 8 * GIB), CUDA, 8 * GIB, True),       # exactly the share: fits
    ("auto", int(RESIDENT_SHARE * 8 * GIB) + 1, CUDA, 8 * GIB, False),  # one byte more: stays on the host
    ("auto", 150 * 2**20, CUDA, 2 * GIB, True),                         # CIFAR-10 as uint8 on a 2 GiB GPU
    ("auto", 150 * 2**20, CUDA, None, False),                           # free memory unknown: be safe
    ("auto", 1, torch.device("cpu"), None, False),                      # training on the CPU
    ("auto", 1, None, None, False),                                     # no Trainer yet
    (True, 100 * GIB, CUDA, GIB, True),                                 # forced, whatever the size
    (True, 1, torch.device("cpu"), None, False),                        # forced, but no CUDA device
    (False, 1, CUDA, 80 * GIB, False),                                  # never
])
def test_the_decision(setting, size, device, free, expected):
    resident, why = resident_decision(setting, size, device, free)
    assert resident is expected and why


def data(**kwargs) -> SyntheticDataModule:
    settings = {"num_train": 96, "num_test": 32, "signal": 0.5, "seed": 0, "in_channels": 3, "num_classes": 4,
                "native_size": 8, "mean": [0.5] * 3, "std": [0.25] * 3, "val_size": 32, "batch_size": 16,
                "augment": {"crop_padding": 2, "hflip": True}}
    return SyntheticDataModule(**{**settings, **kwargs})


def test_a_resident_split_is_copied_once_and_cut_on_its_device(monkeypatch):
    monkeypatch.setattr(base, "resident_decision", lambda *args: (True, "test"))
    dm = data()
    dm.setup("fit")
    device = torch.device("cpu")  # stands for the GPU
    placed = dm.placed(dm.train_set, device)
    assert placed is not dm.train_set and dm.placed(dm.train_set, device) is placed  # one copy, reused
    assert torch.equal(placed.images, dm.train_set.images) and placed.images.device == device
    indices = [5, 0, 63, 17]
    images, labels = placed.__getitems__(indices)
    assert images.device == device and torch.equal(images, dm.train_set.images[indices])
    assert torch.equal(labels, dm.train_set.labels[indices])
    out = dm.transform_batch(images, train=True)  # the batched augmentation on the batch's device
    assert out.device == device and out.shape == (4, 3, 8, 8) and out.dtype == torch.float32


def test_auto_without_a_trainer_keeps_the_data_on_the_host():
    dm = data()
    dm.setup("fit")
    assert dm.training_device() is None
    assert dm.train_dataloader().dataset is dm.train_set


def test_the_pipeline_copies_its_constants_to_a_device_once():
    dm = data()
    device = torch.device("cpu")
    first = dm.pipeline.constants(device)
    assert dm.pipeline.constants(device) is first  # cached: no host-to-device copy per batch


@pytest.mark.parametrize("value", ["yes", 1.5, None])
def test_a_bad_setting_names_the_key(value):
    with pytest.raises(DataConfigError, match="device_resident"):
        data(device_resident=value)


def test_tensor_batches_size():
    split = TensorBatches(torch.zeros(10, 3, 4, 4, dtype=torch.uint8), torch.zeros(10, dtype=torch.long))
    assert split.nbytes == 10 * 3 * 4 * 4 + 10 * 8


def test_true_places_the_data_on_the_trainers_device_only(monkeypatch, caplog):
    """``true`` is "on the training GPU, whatever the size": never on cuda:0 when the Trainer trains on the
    CPU (or on another rank's GPU); on a CPU Trainer it stays on the host, and says so."""
    import logging

    dm = data(device_resident=True)
    dm.setup("fit")
    assert dm.train_set.images.device.type == "cpu"  # setup leaves every split on the host
    with caplog.at_level(logging.WARNING, logger="data.base"):
        assert dm.placed(dm.train_set, torch.device("cpu")) is dm.train_set
    assert "device_resident=true has no effect here" in caplog.text
    placed_on = []
    monkeypatch.setattr(base.TensorBatches, "to", lambda self, device: placed_on.append(device) or self)
    monkeypatch.setattr(base, "free_memory", lambda device: None)
    dm.placed(dm.val_set, torch.device("cuda", 1))  # true: no free-memory figure needed
    assert placed_on == [torch.device("cuda", 1)]


def test_a_loop_without_a_trainer_names_its_device_with_the_hint(monkeypatch):
    """The benchmark's plain loop has no Trainer: its device_resident=true data must still go to its GPU."""
    placed_on = []
    monkeypatch.setattr(base.TensorBatches, "to", lambda self, device: placed_on.append(device) or self)
    dm = data(device_resident=True)
    dm.setup("fit")
    dm.device_hint = torch.device("cuda", 0)
    dm.train_dataloader()
    assert dm.training_device() == torch.device("cuda", 0) and placed_on == [torch.device("cuda", 0)]
