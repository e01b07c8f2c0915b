"""A pruned trial's record in its run folder: ``pruned.json``, then ``summary.json`` says ``status: pruned``.

The pruning callback stops training cleanly (``trainer.should_stop``), so the training pipeline ends
the run as it ends any run, testing the best checkpoint and writing ``summary.json`` with
``status: finished``. The callback cannot change that file (the pipeline writes it afterwards), so it
leaves ``pruned.json`` (when, at which value, by which pruner), and the sweep side
(:func:`experiments.sweeps.trial.run_trial`) marks ``summary.json`` pruned once the job returns. The
sweeper reads the same record to tell Optuna the trial was PRUNED.

Free of torch and Lightning: ``experiments.train`` imports it through the trial module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from experiments.core.runs import RunFolder, write_json_atomic

PRUNED_FILE = "pruned.json"
STATUS = "pruned"


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """``pruned.json``, written atomically (a reader never sees half of it)."""
    write_json_atomic(Path(run_dir) / PRUNED_FILE, {"status": STATUS, **record})


def read_record(run_dir: Path | str | None) -> dict[str, Any] | None:
    """The pruning record of a run folder, or None (never pruned, or unreadable)."""
    if not run_dir:
        return None
    path = Path(run_dir) / PRUNED_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def describe(record: dict[str, Any]) -> str:
    """``pruned after epoch 2 (val/err_best = 41.3, MedianPruner)``."""
    value = record.get("value")
    shown = f"{value:.4g}" if isinstance(value, (int, float)) else value
    return (f"pruned after epoch {record.get('epoch', '?')} ({record.get('metric', 'objective')} = {shown}, "
            f"{record.get('pruner', 'pruner')})")


def mark_summary(run_dir: Path, record: dict[str, Any]) -> None:
    """``summary.json``: ``status: pruned`` and the record (a missing summary is made from the record)."""
    folder = RunFolder(run_dir)
    summary = folder.summary() if folder.summary_file.is_file() else {"run_dir": str(run_dir), "metrics": {}}
    summary["status"] = STATUS
    summary["pruned"] = {k: v for k, v in record.items() if k != "status"}
    write_json_atomic(folder.summary_file, summary)


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float, or None (a missing, non-numeric or non-finite metric)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
