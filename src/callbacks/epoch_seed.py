"""Reseed the random generators at every epoch start from (seed, epoch, rank).

Dropout masks and batched augmentation draw from torch's global generator; seeding it per epoch
makes each epoch's randomness independent of what came before, so a run resumed from an
epoch-boundary checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class EpochSeed(pl.Callback):
    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = (self.seed * 1_000_003 + trainer.current_epoch * 1_009 + trainer.global_rank) % 2**63
        torch.manual_seed(value)
