"""What a finished job means for its Optuna trial, and why a whole sweep failed.

A job of a sweep never raises for an ordinary failure (see :mod:`experiments.sweeps.trial`): it writes
the reason into its run folder and returns NaN. So a trial is

* **PRUNED** when its run folder holds ``pruned.json`` (Optuna then keeps its last reported value);
* **FAIL** when the job raised anyway, or returned something that is not a finite number per
  objective; the reason (from ``failure.json`` when the trial wrote one) becomes the trial's
  ``failure`` attribute, so the dashboard and the failure summary show it;
* **COMPLETE** otherwise, with the returned value(s).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from experiments.core.runs import RunFolder
from experiments.sweeps import pruned
from experiments.sweeps.workers import FAILURE_ATTR


@dataclass
class Outcome:
    """One trial's verdict."""

    state: TrialState
    values: list[float] | None = None
    reason: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def run_dir_of(ret: JobReturn) -> str | None:
    cfg = ret.hydra_cfg
    return str(cfg.hydra.runtime.output_dir) if cfg is not None else None


def judge(ret: JobReturn, n_objectives: int) -> Outcome:
    """The trial state a job's return and run folder stand for."""
    run_dir = run_dir_of(ret)
    attrs: dict[str, Any] = {"run_dir": run_dir} if run_dir else {}
    if ret.status != JobStatus.COMPLETED:
        error = ret._return_value
        return Outcome(TrialState.FAIL, reason=f"exception: the job raised {type(error).__name__}: {error}", attrs=attrs)
    record = pruned.read_record(run_dir)
    if record is not None:
        return Outcome(TrialState.PRUNED, reason=pruned.describe(record), attrs={**attrs, "pruned": record})
    try:
        values = [float(v) for v in (ret.return_value if isinstance(ret.return_value, (list, tuple))
                                     else [ret.return_value])]
    except (TypeError, ValueError):
        return Outcome(TrialState.FAIL, reason=f"exception: the job returned {ret.return_value!r}, not a number",
                       attrs=attrs)
    if len(values) != n_objectives or not all(math.isfinite(v) for v in values):
        reason = recorded_failure(run_dir) or f"non_finite_objective: the job returned {ret.return_value!r}"
        return Outcome(TrialState.FAIL, reason=reason, attrs=attrs)
    return Outcome(TrialState.COMPLETE, values=values, attrs=attrs)


def recorded_failure(run_dir: str | None) -> str | None:
    """``<kind>: <reason>`` from the trial's ``failure.json``, if it wrote one."""
    failure = RunFolder(Path(run_dir)).failure() if run_dir else None
    return f"{failure.get('kind')}: {failure.get('reason')}" if failure else None


def all_failed(study: optuna.Study) -> bool:
    """True when the study has trials, none is still running, and every one failed."""
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return bool(states) and all(s == TrialState.FAIL for s in states)


def failure_summary(study: optuna.Study, limit: int = 3) -> str:
    """A few lines: how many trials failed of each kind, with the first reason of each."""
    reasons = [str(t.user_attrs.get(FAILURE_ATTR) or "unknown: no reason recorded")
               for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))]
    kinds = Counter(r.split(":", 1)[0] for r in reasons)
    lines = []
    for kind, count in kinds.most_common(limit):
        first = next(r for r in reasons if r.split(":", 1)[0] == kind)
        detail = " ".join(first.split(":", 1)[-1].split())
        lines.append(f"  {count} x {kind}: {detail[:200]}")
    if len(kinds) > limit:
        lines.append(f"  ... and {len(kinds) - limit} other kind(s)")
    return "\n".join(lines)
