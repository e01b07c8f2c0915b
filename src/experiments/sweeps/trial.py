"""One sweep trial, fault tolerant: a failed trial is written down and the sweep goes on.

A job that raises leaves its reason in a log at best, and with Hydra's basic sweeper it stops the
whole sweep; a job that returns NaN is recorded by the project's sweeper (experiments.sweeps.sweeper)
as a FAILED trial, never as a best value. So under ``-m`` every failure of a trial (an exception, a
user error in its sampled values, CUDA running out of memory, a diverged loss) ends here: its reason
goes into ``failure.json`` and ``summary.json`` (``status: failed``) in the trial's run folder, where
the sweeper reads it back for Optuna's record, and the trial returns NaN.
KeyboardInterrupt is not caught, so Ctrl-C still stops the sweep.

In a sweep with a pruner, the job's environment names its Optuna trial
(:mod:`experiments.sweeps.trial_link`): the trial then trains with the pruning callback
(:mod:`experiments.sweeps.pruning`), and a trial the pruner stopped gets ``status: pruned`` in its
``summary.json`` here, once training has ended (the pipeline writes that file as it ends any run).

Kept free of torch and Lightning imports: ``experiments.train`` imports this module at start-up.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from experiments.core.errors import UserError
from experiments.core.runs import RunFolder, write_json_atomic
from experiments.sweeps import pruned, trial_link

log = logging.getLogger(__name__)

# What Lightning's DDP launcher sets in the launching process's environment.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "GLOBAL_RANK", "RANK")


def in_multirun() -> bool:
    """True inside a job of ``-m`` (any sweeper or launcher), False for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_trial(cfg: DictConfig, train: Callable[[DictConfig], float]) -> float:
    """Run ``train(cfg)`` as a sweep trial: its objective, or NaN with the reason in its run folder."""
    run_dir = Path(str(cfg.paths.run_dir))
    started = time.time()
    child_overrides = _attach_pruning(cfg, run_dir)
    try:
        with _ddp_children_run_this_trial_only(child_overrides):
            value = float(train(cfg))
    except Exception as error:  # every failure of one trial, on purpose: the other trials still run
        kind, reason = classify(error)
        log.error(f"Trial failed ({kind}): {reason}")
        record_failure(run_dir, kind, reason, started, traceback_text=traceback.format_exc())
        return math.nan
    finally:
        _clean_up_after_trial()
    try:
        problem = bad_result(run_dir, str(cfg.get("optimized_metric", "val/err_best")), value)
    except Exception as error:  # an unreadable metrics.csv or summary.json: the result cannot be trusted
        problem = "exception", f"reading the trial's results failed: {type(error).__name__}: {error}"
    if problem is not None:
        kind, reason = problem
        log.error(f"Trial failed ({kind}): {reason}")
        record_failure(run_dir, kind, reason, started)
        return math.nan
    record = pruned.read_record(run_dir)
    if record is not None:
        pruned.mark_summary(run_dir, record)
    return value


PRUNING_CALLBACK = "sweep_pruning"
_PRUNING_TARGET = "experiments.sweeps.pruning.PruneTrial"


def _attach_pruning(cfg: DictConfig, run_dir: Path) -> list[str]:
    """In a pruning sweep, add the pruning callback to this trial's config; returns the overrides that
    give Lightning's DDP processes the same callback (they compose their config from the command line)."""
    from omegaconf import open_dict

    if trial_link.from_env() is None:
        return []
    metric = str(cfg.get("optimized_metric", "val/err_best"))
    with open_dict(cfg):
        if cfg.get("callbacks") is None:
            cfg.callbacks = {}
        cfg.callbacks[PRUNING_CALLBACK] = {"_target_": _PRUNING_TARGET, "metric": metric, "run_dir": str(run_dir)}
    return [f"+callbacks.{PRUNING_CALLBACK}._target_={_PRUNING_TARGET}",
            f"+callbacks.{PRUNING_CALLBACK}.metric={metric}"]


def bad_result(run_dir: Path, metric: str, value: float) -> tuple[str, str] | None:
    """(kind, reason) when a trial that ran to the end must still count as failed, else None."""
    diverged = divergence_in(run_dir)
    if diverged:
        return "diverged", diverged
    if math.isfinite(value):
        return None
    metrics = RunFolder(run_dir).summary().get("metrics") or {}
    if metric not in metrics:
        return "missing_metric", (f"optimized_metric={metric} is not among the run's metrics "
                                  f"({', '.join(sorted(metrics)) or 'none'}); set optimized_metric=val/err_best "
                                  "or another logged key")
    return "non_finite_objective", f"{metric} = {value}"


def _clean_up_after_trial() -> None:
    """Leave the process as a fresh trial needs it: a DDP trial's process group closed (its other
    processes have exited; the next trial must start its own group instead of talking to them) and
    the GPU's cached memory handed back (after an out-of-memory error above all)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    distributed = getattr(torch, "distributed", None)
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def classify(error: BaseException) -> tuple[str, str]:
    """(kind, one-line reason): ``user_error``, ``out_of_memory`` or ``exception``."""
    from experiments.core.errors import user_error_types

    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, user_error_types()):
        return "user_error", text
    oom_types = tuple(t for t in (_torch_oom_type(), MemoryError) if t is not None)
    if isinstance(error, oom_types) or "out of memory" in text.lower():
        return "out_of_memory", f"{type(error).__name__}: {text}"
    return "exception", f"{type(error).__name__}: {text}"


def _torch_oom_type() -> type[BaseException] | None:
    torch = sys.modules.get("torch")  # only when training got as far as importing it
    return getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch else None


def divergence_in(run_dir: Path) -> str | None:
    """Why the run counts as diverged (a non-finite training loss in ``metrics.csv``), else None."""
    for row in RunFolder(run_dir).metrics_rows():
        if row.get("alerts/nonfinite_loss") not in (None, ""):
            return f"non-finite training loss at epoch {row.get('epoch', '?')} (non-finite guard)"
        for key in ("train/loss", "train/loss_step"):
            value = row.get(key)
            if value not in (None, "") and not math.isfinite(_float(value)):
                return f"{key} = {value} at epoch {row.get('epoch', '?')}, step {row.get('step', '?')}"
    return None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def record_failure(run_dir: Path, kind: str, reason: str, started: float, traceback_text: str | None = None) -> None:
    """Write ``failure.json`` and mark ``summary.json`` failed, so every reader of run folders sees it.

    A trial that failed before training (a bad sampled value) had its folder removed by the pipeline;
    the folder is made again with the trial's overrides in ``failure.json``, so a report still shows
    which values failed.
    """
    try:
        overrides = _job_overrides()
        failure = {"status": "failed", "kind": kind, "reason": reason, "overrides": overrides, "job_num": _job_num(),
                   "wall_time_s": round(time.time() - started, 2), "traceback": traceback_text}
        folder = RunFolder(run_dir)
        write_json_atomic(folder.failure_file, failure)
        try:
            summary = folder.summary()
        except UserError:
            summary = {}  # a damaged summary is replaced by the failure's
        summary = summary or {
            "run_dir": str(run_dir), "command": " ".join(["python -m experiments.train", *overrides]),
            "wall_time_s": failure["wall_time_s"], "metrics": {}}
        summary.update(status="failed", failure={"kind": kind, "reason": reason})
        write_json_atomic(folder.summary_file, summary)
    except Exception as error:  # a full disk must not turn one failed trial into a crashed sweep
        log.error(f"Could not record the failure in {run_dir}: {error}")


def _job_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _job_num() -> int | None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    num = OmegaConf.select(HydraConfig.get(), "job.num", default=None, throw_on_missing=False)
    return None if num is None else int(num)


@contextmanager
def _ddp_children_run_this_trial_only(extra_overrides: list[str] = ()) -> Iterator[None]:
    """Make Lightning's DDP child processes re-run this one trial, not the whole sweep.

    Lightning starts the extra DDP processes by re-running the command line: ``sys.argv[1:]`` plus
    ``hydra.run.dir=<HydraConfig.run.dir>``. Inside a multirun job ``sys.argv`` still holds ``-m`` and
    the search space, so each child would start a sweep of its own, and ``run.dir`` is not the trial's
    folder. While the trial trains, the command line is this job's own overrides (no ``-m``) and
    ``run.dir`` is its folder: every process trains the same trial, which writes one run folder.
    Lightning also leaves ``LOCAL_RANK``, ``MASTER_PORT``... in this process's environment, which
    would make the next trial believe its processes were started for it (and wait for them forever),
    so those are put back afterwards too.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, read_write

    if not HydraConfig.initialized():
        yield
        return
    hydra_cfg = HydraConfig.get()
    output_dir = OmegaConf.select(hydra_cfg, "runtime.output_dir", default=None, throw_on_missing=False)
    if output_dir is None:  # not a job Hydra launched (a composed config in a test)
        yield
        return
    saved_argv, saved_run_dir = list(sys.argv), hydra_cfg.run.dir
    saved_env = {key: os.environ.get(key) for key in _DDP_ENV}
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task, *extra_overrides]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = output_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = saved_run_dir
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"lr": x}, "model.width": y}`` -> ``{"optimizer.lr": x, "model.width": y}``:
    search spaces may be written nested (overridable) or with dotted keys (the plugin's style)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def read_failure(run_dir: Path) -> dict[str, Any] | None:
    return RunFolder(run_dir).failure()
