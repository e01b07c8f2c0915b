"""The sweep table in the dashboards the trials logged to: TensorBoard's HParams tab and a W&B table.

Only when the trials themselves used those loggers (their ``config.yaml`` names them), so a CSV-only
sweep stays file-only. The files and tables written by :mod:`experiments.sweep_report` stay the
source of truth; these are views of the same rows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from experiments.core.errors import UserError
from experiments.core.runs import RunFolder


def loggers_of(trials: list) -> set[str]:
    """The logger names (csv, tensorboard, wandb) any trial ran with."""
    names: set[str] = set()
    for trial in trials:
        folder = RunFolder(trial.run_dir, key="trial")
        if folder.config_file.is_file():
            try:
                names |= set((folder.config().get("logger") or {}).keys())
            except UserError:
                continue  # a damaged trial is reported by sweep_report itself
    return names


def _hparam(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def _metric(value: float | None) -> float:
    return float(value) if value is not None and math.isfinite(value) else math.nan


def to_tensorboard(sweep_dir: Path, info, trials: list) -> Path:
    """One HParams session per trial under ``<sweep>/tensorboard`` (`tensorboard --logdir` that folder)."""
    from torch.utils.tensorboard import SummaryWriter

    root = Path(sweep_dir) / "tensorboard"
    for trial in trials:
        hparams = {key: _hparam(trial.params.get(key)) for key in info.keys}
        hparams["status"] = trial.status
        metrics = {"hparam/objective": _metric(trial.objective), "hparam/best_val_err": _metric(trial.best_val_err)}
        with SummaryWriter(log_dir=str(root / f"trial_{trial.number:04d}")) as writer:
            writer.add_hparams(hparams, metrics, run_name=".")
    return root


def to_wandb(sweep_dir: Path, info, trials: list, columns: list[str], rows: list[list[str]]) -> Path:
    """The table as a W&B Table in one run (offline unless an API key is set), synced like any run."""
    import wandb

    from experiments.training.loggers import wandb_mode

    run = wandb.init(project="cnn-experiments", name=f"sweep-report-{info.study_name or Path(sweep_dir).name}",
                     job_type="sweep_report", dir=str(sweep_dir), mode=wandb_mode("auto"), reinit=True)
    try:
        run.log({"sweep/trials": wandb.Table(columns=columns, data=rows)})
    finally:
        run.finish()
    return Path(sweep_dir) / "wandb"
