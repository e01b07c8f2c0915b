"""A multirun whose every job failed ends with exit status 1 and a few lines saying why.

Inside a multirun a failing job does not stop the others (:func:`experiments.sweeps.trial.run_trial`
records the reason in its run folder and returns NaN), so Hydra's own launchers would end such a sweep
with status 0 even when no job trained. This Hydra callback (``conf/train.yaml`` registers it) reads the
job folders at the end; the project's Optuna sweeper makes the same check on its study itself.
Imports nothing heavy: Hydra instantiates it when any command starts.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from experiments.core.errors import UserError
from experiments.core.runs import RunFolder

SUCCEEDED = ("finished", "pruned", "running", "interrupted")


def failed_jobs(sweep_dir: Path) -> tuple[int, list[str]] | None:
    """(number of jobs, the failure reason of each) when every job folder of the sweep failed, else None."""
    jobs = [p for p in sorted(sweep_dir.iterdir()) if p.is_dir() and p.name[:1].isdigit()] if sweep_dir.is_dir() else []
    reasons = []
    for job in jobs:
        folder = RunFolder(job, key="job")
        try:
            if folder.status() in SUCCEEDED:
                return None
            failure = folder.failure() or {}
        except UserError as error:
            failure = {"kind": "unreadable", "reason": str(error)}
        reasons.append(f"{failure.get('kind', 'unknown')}: {failure.get('reason', 'no record')}")
    return (len(jobs), reasons) if jobs else None


class ExitWhenEveryJobFailed(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        found = failed_jobs(Path(str(config.hydra.sweep.dir)))
        if found is None:
            return
        count, reasons = found
        kinds = Counter(reason.split(":", 1)[0] for reason in reasons)
        lines = [f"Error: every job of this multirun failed ({count} of {count}: "
                 + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()) + "); the first reasons:"]
        lines += [f"  - {reason}" for reason in list(dict.fromkeys(reasons))[:3]]
        lines.append(f"Each job's folder under {config.hydra.sweep.dir} holds its failure.json.")
        print("\n".join(lines), file=sys.stderr, flush=True)
        raise SystemExit(1)
