"""Loggers with run-folder semantics: metrics.csv at the top of the run, W&B that never blocks a run."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; a resumed run must keep its history.

    Rows of epochs after ``keep_through_epoch`` (what a killed run logged past its last checkpoint)
    are dropped, so the resumed history has no duplicates.
    """

    keep_through_epoch: int | None = None

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        limit = self.keep_through_epoch
        if limit is not None:
            rows = [r for r in rows if not r.get("epoch") or float(r["epoch"]) <= limit]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(header)


class RunCSVLogger(CSVLogger):
    """CSVLogger writing ``<run>/metrics.csv`` (no name/version subfolders) and appending on resume."""

    def __init__(self, save_dir: str, keep_through_epoch: int | None = None) -> None:
        super().__init__(save_dir=save_dir, name="", version="")
        self._keep_through_epoch = keep_through_epoch

    @property
    def log_dir(self) -> str:
        return str(self.root_dir)

    @property
    @rank_zero_only
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            _AppendingWriter.keep_through_epoch = self._keep_through_epoch
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_mode(requested: str = "auto") -> str:
    """``offline`` unless an API key is configured (W&B's own env var or netrc) and mode is not forced."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    has_key = bool(os.environ.get("WANDB_API_KEY")) or "api.wandb.ai" in _netrc_text()
    return "online" if has_key else "offline"


def _netrc_text() -> str:
    try:
        return (Path.home() / ".netrc").read_text()
    except OSError:
        return ""


def make_wandb_logger(save_dir: str, project: str, name: str, mode: str = "auto", group: str | None = None,
                      tags: list[str] | None = None) -> WandbLogger:
    """A WandbLogger that falls back to offline mode; it prints how to sync an offline run later."""
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        if name in os.environ and not os.environ[name].strip():
            del os.environ[name]  # W&B rejects an empty setting instead of ignoring it
    mode = wandb_mode(mode)
    os.environ.setdefault("WANDB_SILENT", "true")
    settings = None
    if mode == "online":
        import wandb

        # Give up quickly when the network is gone instead of hanging the run, and stay offline then.
        settings = wandb.Settings(init_timeout=30)
    logger = WandbLogger(save_dir=save_dir, project=project, name=name, group=group, tags=list(tags or []),
                         mode=mode, settings=settings)
    if mode == "offline":
        rank_zero_info(f"W&B is offline; to upload this run later: wandb sync {save_dir}/wandb/offline-run-*")
    return logger
