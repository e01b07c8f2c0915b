"""Callbacks that simulate failures, importable by the CLI subprocesses the tests start."""

import os

import pytorch_lightning as pl


class DieAtEpochStart(pl.Callback):
    """Kill the process abruptly (no cleanup, like SIGKILL) when epoch ``epoch`` begins.

    Only while the environment variable CNN_TEST_DIE is set, so the same command line can run
    uninterrupted, crash, and be resumed.
    """

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if os.environ.get("CNN_TEST_DIE") and trainer.current_epoch == self.epoch:
            os._exit(17)
