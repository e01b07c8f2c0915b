"""Predictions of the validation steps, without a second forward pass.

``ClassificationModule.validation_step`` returns nothing, so a callback cannot read its logits from the
step's output. A forward hook on the LightningModule itself (the module's ``self(images)`` call in
validation; training calls ``self.model`` directly, so the hook never fires there) sees the logits as
they are computed; ``on_validation_batch_end`` then pairs them with the batch's labels. The hook is
registered at the start of each validation epoch and removed at its end.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


class ValidationTap:
    """Hands each validation batch's (images, logits) to ``consume`` together with its labels."""

    def __init__(self) -> None:
        self._handle: Any = None
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def start(self, pl_module: pl.LightningModule) -> None:
        self.stop()

        def hook(module: Any, args: tuple, output: Any) -> None:
            logits = output[0] if isinstance(output, (tuple, list)) else output
            if args and isinstance(args[0], torch.Tensor) and isinstance(logits, torch.Tensor):
                self._last = (args[0], logits.detach())

        self._handle = pl_module.register_forward_hook(hook)

    def take(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(images, logits, labels) of the batch just validated, or None when the hook saw nothing."""
        last, self._last = self._last, None
        if last is None or not isinstance(batch, (tuple, list)) or len(batch) < 2:
            return None
        images, logits = last
        labels = batch[1]
        if len(labels) != len(logits):
            return None
        return images, logits, labels

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._last = None
