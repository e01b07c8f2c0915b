"""Ctrl-C and SIGTERM (a scheduler's pre-emption) end a run cleanly with a resumable last.ckpt.

Lightning turns SIGTERM into ``SIGTERMException`` after the current batch and Ctrl-C into
``KeyboardInterrupt`` (then ``sys.exit(1)``); both reach ``on_exception``, where this callback saves
the current state as ``last.ckpt``. Lightning writes checkpoints through an fsspec transaction (a
temporary file moved into place), so a kill during the save leaves the previous last.ckpt intact.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

INTERRUPTIONS = (KeyboardInterrupt, SIGTERMException)


class SaveOnInterrupt(pl.Callback):
    def __init__(self, checkpoint_path: Path) -> None:
        self.checkpoint_path = Path(checkpoint_path)
        self.signal_name: str | None = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, INTERRUPTIONS):
            return
        self.signal_name = "SIGTERM" if isinstance(exception, SIGTERMException) else "SIGINT"
        if trainer.global_step > 0 and not trainer.sanity_checking:
            trainer.save_checkpoint(self.checkpoint_path, weights_only=False)
