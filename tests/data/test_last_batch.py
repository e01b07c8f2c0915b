"""A training epoch of a model with BatchNorm never ends in a batch of one image: BatchNorm cannot train on
it where a map is 1x1."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning_fabric.utilities.data import _set_sampler_epoch

from data.base import last_batch_is_one_image
from tests.conftest import TINY, assert_refused, run_cli, run_folders
from tests.data.formats import build


@pytest.mark.parametrize(("images", "batch", "world", "dropped"), [
    (129, 128, 1, True),    # 128 + 1
    (257, 128, 1, True),    # 2 * 128 + 1
    (128, 128, 1, False),   # whole batches
    (130, 128, 1, False),   # a last batch of 2 is trainable
    (1, 128, 1, False),     # the only batch: nothing would be left (kept, and trains what it can)
    (258, 128, 2, True),    # DDP: 129 a rank
    (257, 128, 2, True),    # 129 a rank (the sampler pads the odd image)
    (256, 128, 2, False),   # 128 a rank
    (129, 128, 2, False),   # 65 a rank: one partial batch of 65
])
def test_a_last_batch_of_one_image_per_rank_is_dropped(images: int, batch: int, world: int, dropped: bool) -> None:
    assert last_batch_is_one_image(images, batch, SimpleNamespace(world_size=world)) is dropped


def test_the_training_loader_drops_only_the_single_last_image_and_eval_loaders_keep_everything() -> None:
    dm = build("synthetic", "data.num_train=501", "data.val_size=100", "data.batch_size=50",
               "data.eval_batch_size=50", seed=0)
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 9  # no Trainer, no model with BatchNorm: every batch kept
    dm.trainer = SimpleNamespace(world_size=1, lightning_module=torch.nn.Conv2d(1, 1, 1))
    assert len(dm.train_dataloader()) == 9  # a model without BatchNorm trains on a batch of one
    dm.trainer = SimpleNamespace(world_size=1, lightning_module=torch.nn.BatchNorm2d(1))
    assert len(dm.train_set) == 401  # 8 * 50 + 1
    dm.train_set.labels = torch.arange(401)  # label = index
    seen = []
    for epoch in (0, 1):
        loader = dm.train_dataloader()
        _set_sampler_epoch(loader, epoch)
        batches = [labels for _, labels in loader]
        assert [len(b) for b in batches] == [50] * 8 and len(loader) == 8
        order = torch.cat(batches)
        assert len(set(order.tolist())) == 400  # 400 distinct images; a different one left out each epoch
        seen.append(set(range(401)) - set(order.tolist()))
    assert seen[0] != seen[1]
    assert [len(labels) for _, labels in dm.val_dataloader()] == [50, 50]  # evaluation sees every image


def test_a_batchnorm_net_whose_last_map_is_1x1_trains_when_an_epoch_would_end_in_one_image(tmp_path) -> None:
    """ResNet-18 at 32x32 ends in a 1x1 map: a batch of one image stopped it mid-epoch before."""
    run_cli("experiments.train", *TINY, "model=resnet18", "data.in_channels=3", "data.mean=[0.5,0.5,0.5]",
            "data.std=[0.25,0.25,0.25]", "data.num_train=137", "data.val_size=128", "data.batch_size=4",
            "data.num_test=8", "trainer.max_epochs=1", cwd=tmp_path, check=True)  # 9 = 2 * 4 + 1 images
    (run,) = run_folders(tmp_path / "outputs")
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_a_batch_size_of_one_is_refused_for_a_net_with_a_one_value_batchnorm_and_nothing_is_written(tmp_path) -> None:
    result = run_cli("experiments.train", *TINY, "model=resnet18", "data.in_channels=3", "data.mean=[0.5,0.5,0.5]",
                     "data.std=[0.25,0.25,0.25]", "data.batch_size=1", cwd=tmp_path)
    assert_refused(result, ["data.batch_size=1", "BatchNorm", "layer4.0.bn1", "data.batch_size >= 2"])
    assert list(tmp_path.iterdir()) == []


def test_a_batch_size_of_one_still_trains_a_net_without_batchnorm(tmp_path) -> None:
    run_cli("experiments.train", *TINY, "data.batch_size=1", "trainer.max_steps=3", cwd=tmp_path, check=True)
    (run,) = run_folders(tmp_path / "outputs")
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_one_value_norms_names_the_batchnorms_after_the_map_is_1x1() -> None:
    from torch import nn

    from experiments.training.build import one_value_norms

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(4),
                        nn.Flatten(), nn.Linear(4, 4), nn.BatchNorm1d(4))
    assert one_value_norms(net, (1, 8, 8)) == ["3", "6"]  # 6x6 maps give 36 values a channel; the rest 1
    assert one_value_norms(net, (1, 3, 3)) == ["1", "3", "6"]  # a 3x3 input leaves a 1x1 map after the conv
    assert net.training
