"""``python -m experiments.sweep_report <sweep folder>``: every trial of a sweep, best first.

Reads run folders only (the contract of :mod:`experiments.core.runs`), so it works for any sweeper and
launcher, for a sweep still running, and for trials whose folder holds nothing but ``failure.json``:

* ``multirun.yaml`` (the sweep's own config) gives the objective (``optimized_metric``), the direction
  and the searched keys: ``hydra.sweeper.params`` plus sweep overrides given on the command line;
* each trial folder ``<num>_<model>-<data>/`` gives its values (``.hydra/overrides.yaml``, or the
  overrides in ``failure.json``), its result (``summary.json``) and, when it failed, the reason
  (``failure.json``).

It prints the table with rich, like the lectures' printout (val accuracy beside each trial's lr and
reg, best first), writes ``trials.csv`` and ``trials.md`` into the sweep folder, one scatter plot per
searched number (``plots/<metric>_vs_<key>.png``, log axes for log-scale keys), and the best trial
as a ready-to-run ``python -m experiments.train ...`` line (also in ``best_command.txt``).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.core.errors import EXIT_USER_ERROR, UserError, report
from experiments.core.runs import RunFolder
from experiments.sweeps import pruned

SWEEP_CONFIG = "multirun.yaml"
_TRIAL_DIR = re.compile(r"^(\d+)(?:_.*)?$")


@dataclass
class SweepInfo:
    """What the sweep optimised and over which keys (from its ``multirun.yaml``)."""

    metric: str = "val/err_best"
    direction: str = "minimize"
    keys: list[str] = field(default_factory=list)      # searched keys, in the order they were declared
    log_keys: set[str] = field(default_factory=set)    # keys searched on a log scale
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # interval bounds, where given
    study_name: str | None = None


@dataclass
class Trial:
    """One trial's row: where it ran, what it tried and what came out."""

    number: int
    run_dir: Path
    status: str
    params: dict[str, Any]
    overrides: list[str]
    objective: float | None = None
    best_val_err: float | None = None
    epochs: int | None = None
    wall_time_s: float | None = None
    reason: str | None = None
    pruned_value: float | None = None   # the objective when the pruner stopped the trial

    @property
    def best_val_acc(self) -> float | None:
        return None if self.best_val_err is None else 100.0 - self.best_val_err

    @property
    def ok(self) -> bool:
        return self.status == "finished" and self.objective is not None and math.isfinite(self.objective)


# ---------------------------------------------------------------------------------------------- reading


def read_sweep(sweep_dir: Path) -> tuple[SweepInfo, list[Trial]]:
    """The sweep's settings and its trials, best first (failed and unfinished ones last)."""
    sweep_dir = Path(sweep_dir)
    if sweep_dir.is_file():
        raise UserError("sweep folder", str(sweep_dir), "is a file, not a sweep folder.",
                        "Pass the folder a sweep printed, e.g. outputs/sweeps/<study> or outputs/multirun/<date>/<time>.")
    if not sweep_dir.is_dir():
        raise UserError("sweep folder", str(sweep_dir), "does not exist.",
                        "Pass the folder a sweep printed, e.g. outputs/sweeps/<study> or outputs/multirun/<date>/<time>.")
    trial_dirs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and _TRIAL_DIR.match(p.name)),
                        key=lambda p: int(_TRIAL_DIR.match(p.name).group(1)))
    if not trial_dirs:
        raise UserError("sweep folder", str(sweep_dir), "holds no trial folders (<num>_<model>-<data>/).",
                        "Pass the sweep folder itself, not one trial or the outputs folder.")
    info = sweep_info(_sweep_config(sweep_dir, trial_dirs))
    trials = [_read_trial(p, info) for p in trial_dirs]
    return info, sort_trials(trials, info.direction)


def _sweep_config(sweep_dir: Path, trial_dirs: list[Path]) -> DictConfig:
    """``multirun.yaml``, or (older sweeps) the first trial's Hydra record."""
    if (sweep_dir / SWEEP_CONFIG).is_file():
        return OmegaConf.load(sweep_dir / SWEEP_CONFIG)
    for trial in trial_dirs:
        hydra_file, config_file = trial / ".hydra" / "hydra.yaml", trial / ".hydra" / "config.yaml"
        if hydra_file.is_file() and config_file.is_file():
            return OmegaConf.merge(OmegaConf.load(config_file), OmegaConf.load(hydra_file))
    return OmegaConf.create({})


def sweep_info(config: DictConfig) -> SweepInfo:
    """Objective, direction and searched keys from a sweep's composed (unresolved) config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from experiments.sweeps.trial import flatten

    sweeper = OmegaConf.select(config, "hydra.sweeper") or OmegaConf.create({})
    metric = str(config.get("optimized_metric", "val/err_best"))
    direction = sweeper.get("direction")
    direction = str(direction).split(".")[-1] if direction is not None else (
        "maximize" if metric.endswith(("acc", "acc5")) else "minimize")
    params = sweeper.get("params")  # Hydra's basic sweeper (a grid on the command line) may have none
    params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params or {})
    declared = [f"{k}={v}" for k, v in flatten(params).items()]
    declared += list(OmegaConf.select(config, "hydra.overrides.task") or [])
    info = SweepInfo(metric=metric, direction=direction, study_name=sweeper.get("study_name"))
    for override in OverridesParser.create().parse_overrides(declared):
        if not override.is_sweep_override():
            continue
        key = override.get_key_element()
        if key not in info.keys:
            info.keys.append(key)
        value = override.value()
        if override.is_interval_sweep():
            info.ranges[key] = (float(value.start), float(value.end))
            (info.log_keys.add if "log" in value.tags else info.log_keys.discard)(key)
        elif override.is_choice_sweep() or override.is_range_sweep():
            numbers = [v for v in override.sweep_iterator() if isinstance(v, (int, float))]
            if numbers and min(numbers) > 0 and max(numbers) / min(numbers) >= 10:
                info.log_keys.add(key)  # a log-spaced grid
    return info


def _read_trial(run_dir: Path, info: SweepInfo) -> Trial:
    number = int(_TRIAL_DIR.match(run_dir.name).group(1))
    folder = RunFolder(run_dir, key="trial")
    damaged = []

    def tolerant(read, empty):
        try:
            return read()
        except UserError as error:
            damaged.append(" ".join(str(error).split()))
            return empty

    summary = tolerant(folder.summary, {})
    failure = tolerant(folder.failure, None)
    overrides = tolerant(folder.overrides, []) or list((failure or {}).get("overrides") or [])
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    params = {key: _number_or_text(values.get(key, values.get(f"+{key}"))) for key in info.keys}
    status = (failure or summary or {}).get("status") or ("unreadable" if damaged else "not started")
    if status == "running" and not failure:
        status = "running/interrupted"
    metrics = summary.get("metrics") or {}
    objective = pruned.finite_or_none(metrics.get(info.metric)) if status == "finished" else None
    reason = f"{failure.get('kind')}: {failure.get('reason')}" if failure else ("; ".join(damaged) or None)
    record = (summary.get("pruned") or pruned.read_record(run_dir) or {}) if status == pruned.STATUS else {}
    if record and not reason:
        reason = pruned.describe(record)
    return Trial(number=number, run_dir=run_dir, status=status, params=params, overrides=overrides,
                 objective=objective, best_val_err=pruned.finite_or_none(summary.get("best_val_err")),
                 epochs=summary.get("epochs"),
                 wall_time_s=(summary or failure or {}).get("wall_time_s"), reason=reason,
                 pruned_value=pruned.finite_or_none(record.get("value")))




def _number_or_text(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def sort_trials(trials: list[Trial], direction: str) -> list[Trial]:
    """Best first by the objective; trials without a result after them, by trial number."""
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(trials, key=lambda t: (0, sign * t.objective, t.number) if t.ok else (1, 0.0, t.number))


def best_command(trial: Trial) -> str:
    """The trial as one ``python -m experiments.train`` line (without the search preset)."""
    kept = [o for o in trial.overrides if not o.lstrip("+~").startswith("hparams_search=")]
    return " ".join(["python -m experiments.train", *(shlex.quote(o) for o in kept)])


# ---------------------------------------------------------------------------------------------- writing


def columns(info: SweepInfo) -> list[str]:
    metric_cols = [] if info.metric == "val/err_best" else [info.metric]
    return ["trial", "status", *info.keys, *metric_cols, "best val acc %", "best val err %", "epochs",
            "wall time s", "reason"]


def row(trial: Trial, info: SweepInfo, precise: bool = False) -> list[str]:
    def number(value: Any, log_scale: bool = False) -> str:
        if value is None:
            return ""
        if not isinstance(value, float):
            return str(value)
        if precise:
            return repr(value)
        return f"{value:.3e}" if log_scale else f"{value:.4g}"

    metric_cols = [] if info.metric == "val/err_best" else [number(trial.objective)]
    acc = "" if trial.best_val_acc is None else f"{trial.best_val_acc:.2f}"
    err = "" if trial.best_val_err is None else f"{trial.best_val_err:.2f}"
    wall = "" if trial.wall_time_s is None else f"{float(trial.wall_time_s):.1f}"
    return [str(trial.number), trial.status, *(number(trial.params.get(k), k in info.log_keys) for k in info.keys),
            *metric_cols, acc, err, "" if trial.epochs is None else str(trial.epochs), wall, trial.reason or ""]


def write_tables(sweep_dir: Path, info: SweepInfo, trials: list[Trial]) -> tuple[Path, Path]:
    header = columns(info)
    csv_path, md_path = sweep_dir / "trials.csv", sweep_dir / "trials.md"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(row(t, info, precise=True) for t in trials)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row(t, info)) + " |" for t in trials]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def print_table(info: SweepInfo, trials: list[Trial], title: str, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:  # piped or logged: wide enough that a failure's reason stays on one line
        terminal = Console()
        console = terminal if terminal.is_terminal else Console(width=220)
    table = Table(title=title, title_justify="left")
    for name in columns(info):
        table.add_column(name, justify="left" if name in ("status", "reason") else "right",
                         overflow="fold")
    for trial in trials:
        style = None if trial.ok else ("red" if trial.status == "failed" else "dim" if trial.status == pruned.STATUS
                                       else "yellow")
        table.add_row(*row(trial, info), style=style)
    console.print(table)


def plot(sweep_dir: Path, info: SweepInfo, trials: list[Trial]) -> list[Path]:
    """One scatter per searched number: the objective against it, failures marked along the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = sweep_dir / "plots"
    written = []
    ok = [t for t in trials if t.ok]
    for key in info.keys:
        good = [(t.params[key], t.objective) for t in ok if isinstance(t.params.get(key), float)]
        bad = [t.params[key] for t in trials if t.status == "failed" and isinstance(t.params.get(key), float)]
        stopped = [(t.params[key], t.pruned_value) for t in trials if t.status == pruned.STATUS
                   and t.pruned_value is not None and isinstance(t.params.get(key), float)]
        if not good and not bad and not stopped:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 4))
        if good:
            ax.scatter([x for x, _ in good], [y for _, y in good], s=28, label="trials")
            best = ok[0]
            if isinstance(best.params.get(key), float):
                ax.scatter([best.params[key]], [best.objective], s=140, marker="*", color="gold",
                           edgecolors="black", zorder=3, label=f"best (trial {best.number})")
        if stopped:
            ax.scatter([x for x, _ in stopped], [y for _, y in stopped], s=22, marker="v", color="grey",
                       label="pruned (value when stopped)")
        if bad:
            top = max((y for _, y in good), default=1.0)
            ax.scatter(bad, [top] * len(bad), marker="x", color="red", label="failed", clip_on=False)
        if key in info.log_keys and all(x > 0 for x in [*(x for x, _ in good), *bad, *(x for x, _ in stopped)]):
            ax.set_xscale("log")
        ax.set_xlabel(key + (" (log scale)" if key in info.log_keys else ""))
        ax.set_ylabel(f"{info.metric} ({'lower' if info.direction == 'minimize' else 'higher'} is better)")
        ax.set_title(f"{info.metric} vs {key}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        out_dir.mkdir(exist_ok=True)
        path = out_dir / f"{_safe(info.metric)}_vs_{_safe(key)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def make_report(sweep_dir: Path, plots: bool = True, console=None) -> tuple[SweepInfo, list[Trial]]:
    """Read, print and save everything; returns what it read (for coarse-to-fine and tests)."""
    sweep_dir = Path(sweep_dir)
    info, trials = read_sweep(sweep_dir)
    done = sum(t.ok for t in trials)
    failed = sum(t.status == "failed" for t in trials)
    stopped = sum(t.status == pruned.STATUS for t in trials)
    title = (f"{sweep_dir}: {len(trials)} trials, {done} finished, " + (f"{stopped} pruned, " if stopped else "")
             + f"{failed} failed; objective {info.metric} ({info.direction}), best first")
    print_table(info, trials, title, console=console)
    csv_path, md_path = write_tables(sweep_dir, info, trials)
    written = plot(sweep_dir, info, trials) if plots else []
    out = console.print if console is not None else print
    if trials and trials[0].ok:
        command = best_command(trials[0])
        (sweep_dir / "best_command.txt").write_text(command + "\n")
        out(f"best: trial {trials[0].number}, {info.metric} = {trials[0].objective:.4g}\n{command}")
    else:
        out("no trial finished: see the reasons above")
    out(f"saved: {csv_path}, {md_path}" + (f", {len(written)} plot(s) in {sweep_dir / 'plots'}" if written else ""))
    _to_dashboards(sweep_dir, info, trials, out)
    return info, trials


def _to_dashboards(sweep_dir: Path, info: SweepInfo, trials: list[Trial], out) -> None:
    """The same table to TensorBoard's HParams tab / a W&B table, when the trials logged there."""
    from experiments.sweeps import dashboards as sweep_dashboards

    used = sweep_dashboards.loggers_of(trials)
    if "tensorboard" in used:
        folder = sweep_dashboards.to_tensorboard(sweep_dir, info, trials)
        out(f"TensorBoard HParams: tensorboard --logdir {folder}")
    if "wandb" in used:
        rows = [row(trial, info, precise=True) for trial in trials]
        folder = sweep_dashboards.to_wandb(sweep_dir, info, trials, columns(info), rows)
        out(f"W&B table: in {folder} (offline runs: wandb sync {folder}/offline-run-*)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder (outputs/sweeps/<study> or outputs/multirun/<date>/<time>)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG scatter plots")
    args = parser.parse_args(argv)
    try:
        make_report(args.sweep_dir, plots=not args.no_plots)
    except UserError as error:
        report(error)
        sys.exit(EXIT_USER_ERROR)
