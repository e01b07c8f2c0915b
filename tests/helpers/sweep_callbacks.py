"""Callbacks that hold sweep trials at a gate, so tests of concurrent sweep workers are deterministic."""

import os
import time
from pathlib import Path

import pytorch_lightning as pl


class WaitForFile(pl.Callback):
    """At the first training epoch, wait until the file named by CNN_TEST_WAIT_FOR exists (at most
    ``timeout_s``). Without that variable it does nothing, so the same command line runs ungated."""

    def __init__(self, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        gate = os.environ.get("CNN_TEST_WAIT_FOR")
        if not gate or trainer.current_epoch != 0:
            return
        deadline = time.monotonic() + self.timeout_s
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
