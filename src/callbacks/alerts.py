"""Warnings a user can act on: a log line (in ``train.log`` too) plus a logged scalar and text event.

A rule of thumb turned into a warning is only useful if it is seen once and recorded always: the log
line is printed once per (callback, subject) so a long run does not drown in repeats, while the
``alerts/<kind>`` scalar is logged every time the condition holds, so dashboards show when it started.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pytorch_lightning.utilities import rank_zero_only

from callbacks import media

if TYPE_CHECKING:
    import pytorch_lightning as pl

log = logging.getLogger("callbacks")


class Alerts:
    """Per-callback warning state: what was already said, and how many times each kind fired."""

    def __init__(self) -> None:
        self.said: set[tuple[str, str]] = set()
        self.counts: dict[str, int] = {}
        self.messages: list[str] = []

    @rank_zero_only
    def warn(self, trainer: pl.Trainer, kind: str, subject: str, message: str, value: float = 1.0) -> None:
        """Record ``kind`` for ``subject``; print ``message`` the first time this pair is seen."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        media.log_scalars(trainer, {f"alerts/{kind}": value})
        if (kind, subject) in self.said:
            return
        self.said.add((kind, subject))
        text = f"[{kind}] epoch {trainer.current_epoch}, step {trainer.global_step}: {message}"
        self.messages.append(text)
        log.warning(text)
        media.log_text(trainer, f"alerts/{kind}", text)
