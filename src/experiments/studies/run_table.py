"""Runs as rows: read run folders (``metrics.csv``, ``summary.json``, ``config.yaml``), group them, average seeds.

Reads the run-folder contract of :mod:`experiments.core.runs` only; no torch, no Lightning, no dashboard.
Errors are in percent, as the training module logs them. ``std`` is the sample standard deviation
(n - 1) over the runs of one group; a group of one run has no std.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.core.errors import UserError
from experiments.core.runs import RunFolder

# Per-run numbers of the table, in display order: (column, header).
RUN_METRICS = [
    ("final_train_err", "final train err"),
    ("best_train_err", "best train err"),
    ("final_val_err", "final val err"),
    ("best_val_err", "best val err"),
    ("test_err", "test err"),
    ("gap", "gap (final val - train)"),
]
# Overrides that never describe a configuration (for the default grouping keys).
_NOT_CONFIG = ("seed", "quiet", "resume", "paths.", "hydra.", "experiment", "trainer.accelerator", "trainer.devices")


@dataclass
class Run:
    """One run folder, read."""

    path: Path
    name: str
    config: DictConfig
    choices: dict[str, str]
    overrides: list[str]
    summary: dict[str, Any]
    epochs: list[dict[str, float]]   # one merged row per epoch: epoch, step, train/err, val/err, ...
    group: tuple = ()
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.summary.get("status") or ("failed" if RunFolder(self.path).failure_file.is_file() else "unknown"))

    @property
    def seed(self) -> Any:
        return self.summary.get("seed", OmegaConf.select(self.config, "seed", default=None))

    @property
    def command(self) -> str:
        return str(self.summary.get("command") or " ".join(["python -m experiments.train", *self.overrides]))

    def series(self, column: str, x: str = "epoch") -> tuple[list[float], list[float]]:
        """(x, y) of one per-epoch column; x is the epoch count (1 = after the first epoch) or the step."""
        xs, ys = [], []
        for row in self.epochs:
            if column in row:
                xs.append(row["epoch"] + 1 if x == "epoch" else row.get("step", math.nan))
                ys.append(row[column])
        return xs, ys

    def value(self, key: str) -> Any:
        return lookup(self, key)

    def metrics(self) -> dict[str, float | None]:
        _, train = self.series("train/err")
        _, val = self.series("val/err")
        final_metrics = self.summary.get("metrics") or {}
        test = self.summary.get("test_err")
        if test is None:
            test = final_metrics.get("test/err")
        if test is None:
            test = next((row["test/err"] for row in reversed(self.epochs) if "test/err" in row), None)
        best_val = min(val) if val else self.summary.get("best_val_err")
        return {
            "final_train_err": train[-1] if train else None,
            "best_train_err": min(train) if train else None,
            "final_val_err": val[-1] if val else None,
            "best_val_err": best_val,
            "test_err": test,
            "gap": val[-1] - train[-1] if train and val else None,
            "params": self.summary.get("params"),
            "macs": self.summary.get("macs"),
            "wall_time_s": self.summary.get("wall_time_s"),
            "epochs": self.epochs[-1]["epoch"] + 1 if self.epochs else 0,
        }


# ---------------------------------------------------------------------------------------------- reading


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders given directly or found (up to three levels) under the given folders, in order."""
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a folder")
        if RunFolder.is_run_folder(path):
            found.append(path)
            continue
        candidates = set()
        for pattern in ("*/", "*/*/", "*/*/*/"):
            for sub in path.glob(pattern):
                if sub.is_dir() and RunFolder.is_run_folder(sub) and not any(RunFolder.is_run_folder(p) for p in sub.parents
                                                                   if path in p.parents):
                    candidates.add(sub)
        found.extend(sorted(candidates, key=_natural_key))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def _natural_key(path: Path) -> list:
    parts = []
    for part in path.parts:
        head = part.split("_", 1)[0]
        parts.append((0, int(head), part) if head.isdigit() else (1, 0, part))
    return parts


def read_run(path: Path) -> Run:
    """One run folder, read through :class:`RunFolder`. A missing file leaves its part empty (with a
    note); a damaged one is a :class:`UserError` (the caller skips the run)."""
    folder = RunFolder(Path(path))
    try:
        os.fsencode(folder.path.name).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("run", folder.path.name.encode("utf-8", "replace").decode(), "has a folder name that is not "
                        "valid UTF-8, so it cannot be written into tables and reports.", "Rename the folder.") from None
    run = Run(path=folder.path, name=folder.path.name, config=folder.composed_config(), choices=folder.choices(),
              overrides=folder.overrides(), summary=folder.summary(), epochs=folder.epochs())
    if not folder.metrics_file.is_file():
        run.notes.append(f"{run.name}: no metrics.csv (status {run.status}): not plotted.")
    return run


def read_runs(paths: list[Path], skipped: list[str] | None = None) -> list[Run]:
    """Every run under ``paths``; a run that cannot be read is left out, with a one-line note in ``skipped``."""
    runs = []
    for path in find_runs(paths):
        try:
            runs.append(read_run(path))
        except UserError as error:
            if skipped is not None:
                skipped.append(f"skipped {' '.join(str(error).split())}")
    return runs


# --------------------------------------------------------------------------------------------- grouping


def _override_pairs(overrides: list[str]) -> dict[str, str]:
    pairs = {}
    for override in overrides:
        if "=" not in override:
            continue
        key, value = override.split("=", 1)
        pairs[key.lstrip("+~")] = value
    return pairs


def lookup(run: Run, key: str) -> Any:
    """A grouping value: the config's dotted key, or for a config group (``model``) the option chosen."""
    value = OmegaConf.select(run.config, key, default=None, throw_on_resolution_failure=False)
    if value is None or OmegaConf.is_config(value):
        if key in run.choices:
            return run.choices[key]
        pairs = _override_pairs(run.overrides)
        if key in pairs:
            return pairs[key]
        if key == "model" and run.summary.get("model_name"):
            return run.summary["model_name"]
        return None if value is None else "<config>"
    return value


def default_keys(runs: list[Run]) -> list[str]:
    """The overridden keys whose values differ between the runs (seed aside): what the sweep varied."""
    keys: list[str] = []
    for run in runs:
        for key in _override_pairs(run.overrides):
            if key not in keys and not any(key == p or key.startswith(p) for p in _NOT_CONFIG):
                keys.append(key)
    return [k for k in keys if len({repr(lookup(r, k)) for r in runs}) > 1]


def _sort_value(value: Any) -> tuple:
    if isinstance(value, bool):
        return (0, float(value), "")
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def assign_groups(runs: list[Run], keys: list[str]) -> list[tuple]:
    """Set each run's group (its values of ``keys``); the distinct groups, sorted."""
    for run in runs:
        run.group = tuple(lookup(run, k) for k in keys)
    groups = list(dict.fromkeys(r.group for r in runs))
    return sorted(groups, key=lambda g: tuple(_sort_value(v) for v in g))


def group_label(keys: list[str], group: tuple, skip: tuple[str, ...] = ()) -> str:
    parts = [f"{k.rsplit('.', 1)[-1]}={_fmt_value(v)}" for k, v in zip(keys, group, strict=False) if k not in skip]
    return ", ".join(parts) or "all runs"


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# ---------------------------------------------------------------------------------------------- tables


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def run_rows(runs: list[Run], keys: list[str]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.name}
        row.update({k: _fmt_value(v) for k, v in zip(keys, run.group, strict=False)})
        row.update({"seed": run.seed, "status": run.status})
        row.update(run.metrics())
        rows.append(row)
    return rows


def group_rows(runs: list[Run], keys: list[str], groups: list[tuple]) -> list[dict[str, Any]]:
    """Per configuration (same group values): n, seeds, and best / mean / std of every error."""
    rows = []
    for group in groups:
        members = [r for r in runs if r.group == group]
        metrics = [r.metrics() for r in members]
        row: dict[str, Any] = {k: _fmt_value(v) for k, v in zip(keys, group, strict=False)}
        row["n"] = len(members)
        row["seeds"] = " ".join(str(r.seed) for r in members)
        for column, _ in RUN_METRICS:
            values = [m[column] for m in metrics if m[column] is not None]
            mean, std = mean_std(values)
            row[f"{column}_best"] = min(values) if values else None
            row[f"{column}_mean"] = mean
            row[f"{column}_std"] = std
        for column in ("params", "macs", "wall_time_s"):
            mean, _ = mean_std([m[column] for m in metrics if isinstance(m[column], (int, float))])
            row[column] = mean
        rows.append(row)
    return rows


def fmt_number(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_count(value: Any) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def fmt_best_mean_std(row: dict[str, Any], column: str) -> str:
    """The paper's "best (mean ± std)"; one run: its value."""
    best, mean, std = row.get(f"{column}_best"), row.get(f"{column}_mean"), row.get(f"{column}_std")
    if best is None:
        return "-"
    if std is None:
        return fmt_number(best)
    return f"{best:.2f} ({mean:.2f} ± {std:.2f})"


def display_run_table(rows: list[dict[str, Any]], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    headers = ["run", *keys, "seed", "status", "epochs", *(h for _, h in RUN_METRICS), "params", "mult-adds",
               "wall time (s)"]
    body = []
    for row in rows:
        body.append([str(row["run"]), *(str(row[k]) for k in keys), str(row["seed"]), str(row["status"]),
                     str(row["epochs"]), *(fmt_number(row[c]) for c, _ in RUN_METRICS), fmt_count(row["params"]),
                     fmt_count(row["macs"]), fmt_number(row["wall_time_s"], 1)])
    return headers, body


def display_group_table(rows: list[dict[str, Any]], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    headers = [*(keys or ["group"]), "n", "seeds", *(f"{h}: best (mean ± std)" for _, h in RUN_METRICS), "params",
               "mult-adds", "wall time (s, mean)"]
    body = []
    for row in rows:
        body.append([*(str(row[k]) for k in keys), *([] if keys else ["all runs"]), str(row["n"]), row["seeds"],
                     *(fmt_best_mean_std(row, c) for c, _ in RUN_METRICS), fmt_count(row["params"]),
                     fmt_count(row["macs"]), fmt_number(row["wall_time_s"], 1)])
    return headers, body


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns: list[str] = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})


def markdown_table(headers: list[str], body: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ notes


def epoch_notes(runs: list[Run]) -> list[str]:
    """Clear notes for runs that are missing, unfinished, or shorter than the others."""
    notes = [n for r in runs for n in r.notes]
    counts = {r.name: (r.epochs[-1]["epoch"] + 1 if r.epochs else 0) for r in runs}
    plotted = {name: n for name, n in counts.items() if n > 0}
    if plotted and len(set(plotted.values())) > 1:
        longest = max(plotted.values())
        short = ", ".join(f"{name} ({n})" for name, n in plotted.items() if n < longest)
        notes.append(f"Unequal epochs: the longest run has {longest}; shorter runs: {short}. Each curve is drawn as "
                     "far as its run got, and its final errors are from its last epoch, so they are not comparable "
                     "one-to-one.")
    for run in runs:
        if counts[run.name] == 0 and RunFolder(run.path).metrics_file.is_file():
            notes.append(f"{run.name}: metrics.csv has no epoch-level rows (stopped before its first epoch ended).")
        if run.status not in ("finished", "unknown") and counts[run.name] > 0:
            notes.append(f"{run.name}: status {run.status}; its curves stop at epoch {counts[run.name]}.")
        missing = [c for c in ("train/err", "val/err") if counts[run.name] and not run.series(c)[1]]
        if missing:
            notes.append(f"{run.name}: no {' or '.join(missing)} in metrics.csv: that curve is missing.")
    return notes


# ----------------------------------------------------------------------------------------- degradation


# A difference between two depths counts only when it is larger than this many standard errors of the
# difference of the means (Welch's form, sqrt(s1^2/n1 + s2^2/n2)): about a 95% two-sided interval for
# large n. With 3 seeds per depth it is a lenient bar (Student's t for 2-4 degrees of freedom is 2.8-4.3),
# so the json also gives the raw numbers, to judge by.
SPREAD_FACTOR = 2.0
# A run "collapsed" when its training error went back UP by at least this many points above the best
# it had reached (the loss climbing back toward ln 10): training at a fixed lr should only go down, give
# or take a point or two of noise between epochs.
COLLAPSE_POINTS = 15.0


def compare_depths(shallow: list[float], deep: list[float]) -> dict[str, Any]:
    """Mean, sample std and n of each depth, the difference of the means (deep - shallow) and its spread.

    ``spread`` is SPREAD_FACTOR standard errors of the difference; None with a single run at either depth
    (nothing to measure it from), in which case the verdict rests on the means alone and says so.
    """
    (m_s, s_s), (m_d, s_d) = mean_std(shallow), mean_std(deep)
    diff = m_d - m_s
    spread = None
    if len(shallow) > 1 and len(deep) > 1:
        spread = SPREAD_FACTOR * math.sqrt(s_s ** 2 / len(shallow) + s_d ** 2 / len(deep))
    return {"shallow_mean": m_s, "shallow_std": s_s, "shallow_n": len(shallow), "deep_mean": m_d, "deep_std": s_d,
            "deep_n": len(deep), "difference": diff, "spread": spread}


def collapsed(run: Run) -> int | None:
    """The first epoch (1-based) at which ``run``'s training error was COLLAPSE_POINTS above its best so far."""
    xs, train = run.series("train/err")
    best = math.inf
    for epoch, err in zip(xs, train, strict=True):
        if err >= best + COLLAPSE_POINTS:
            return int(epoch)
        best = min(best, err)
    return None


def degradation_check(runs: list[Run]) -> dict[str, Any] | None:
    """He et al. Fig. 1/6: the deeper plain net trains worse; the deeper residual net does not.

    Needs runs with ``model.depth`` and ``model.residual`` in their config, at least two depths for both
    plain and residual nets. Final training error = the last epoch's ``train/err``. The decision is on the
    means over seeds AND their spread: plain degrades when the deep mean is above the shallow one by more
    than the spread (SPREAD_FACTOR standard errors of the difference); the deeper ResNet is "not worse" when
    its mean is not above the shallow one by more than the spread, and "better" when below by more than it.
    """
    table: dict[bool, dict[int, list[float]]] = {False: {}, True: {}}
    epochs: dict[tuple[bool, int], list[int]] = {}
    seeds: dict[tuple[bool, int], list[Any]] = {}
    collapses: dict[tuple[bool, int], list[dict[str, Any]]] = {}
    for run in runs:
        depth = OmegaConf.select(run.config, "model.depth", default=None, throw_on_resolution_failure=False)
        residual = OmegaConf.select(run.config, "model.residual", default=None, throw_on_resolution_failure=False)
        if not isinstance(depth, int) or not isinstance(residual, bool):
            continue
        final = run.metrics()["final_train_err"]
        if final is None:
            continue
        table[residual].setdefault(depth, []).append(final)
        epochs.setdefault((residual, depth), []).append(run.metrics()["epochs"])
        seeds.setdefault((residual, depth), []).append(run.seed)
        at = collapsed(run)
        if at is not None:
            collapses.setdefault((residual, depth), []).append({"run": run.name, "seed": run.seed, "epoch": at})
    if len(table[False]) < 2 or len(table[True]) < 2:
        return None
    result: dict[str, Any] = {
        "measure": "final training error (%), last epoch; mean and sample std over seeds",
        "rule": (f"a difference counts when it exceeds {SPREAD_FACTOR:g} standard errors of the difference of the "
                 "means (sqrt(s1^2/n1 + s2^2/n2)); with one run at a depth there is no spread and the means decide"),
    }
    for residual, name in ((False, "plain"), (True, "residual")):
        depths = sorted(table[residual])
        shallow, deep = depths[0], depths[-1]
        stats = {d: mean_std(table[residual][d]) for d in depths}
        versus = compare_depths(table[residual][shallow], table[residual][deep])
        margin = versus["spread"] or 0.0
        entry = {"depths": depths,
                 "final_train_err": {str(d): stats[d][0] for d in depths},
                 "final_train_err_std": {str(d): stats[d][1] for d in depths},
                 "final_train_err_runs": {str(d): table[residual][d] for d in depths},
                 "seeds": {str(d): seeds[(residual, d)] for d in depths},
                 "runs": {str(d): len(table[residual][d]) for d in depths},
                 "epochs": {str(d): epochs[(residual, d)] for d in depths},
                 "collapsed": {str(d): collapses.get((residual, d), []) for d in depths},
                 "shallow_depth": shallow, "deep_depth": deep,
                 "shallow_final_train_err": versus["shallow_mean"], "deep_final_train_err": versus["deep_mean"],
                 "difference": versus["difference"], "spread": versus["spread"]}
        if residual:
            entry["deeper_not_worse"] = versus["difference"] <= margin
            entry["deeper_better"] = versus["difference"] < -margin
        else:
            entry["deeper_is_worse"] = versus["difference"] > margin
        result[name] = entry
    plain, res = result["plain"], result["residual"]
    result["plain_degrades"] = plain["deeper_is_worse"]
    result["residual_deeper_not_worse"] = res["deeper_not_worse"]
    result["reproduced"] = bool(plain["deeper_is_worse"] and res["deeper_not_worse"])
    all_epochs = {e for v in epochs.values() for e in v}
    result["equal_epochs"] = len(all_epochs) == 1
    result["verdict"] = _verdict(result)
    return result


def _side(entry: dict[str, Any], depth_key: str, name: str) -> str:
    depth = entry[depth_key]
    mean = entry["shallow_final_train_err" if depth_key == "shallow_depth" else "deep_final_train_err"]
    std = entry["final_train_err_std"][str(depth)]
    n = entry["runs"][str(depth)]
    return f"{name}-{depth} {mean:.2f}%" + (f" ± {std:.2f} (n={n})" if std is not None else f" (n={n})")


def _spread(entry: dict[str, Any]) -> str:
    if entry["spread"] is None:
        return "no spread: one run at a depth"
    return f"difference {entry['difference']:+.2f}, spread {entry['spread']:.2f}"


def _verdict(result: dict[str, Any]) -> str:
    plain, res = result["plain"], result["residual"]
    res_word = "better" if res["deeper_better"] else ("not worse" if res["deeper_not_worse"] else "worse")
    text = (
        f"Degradation {'REPRODUCED' if result['reproduced'] else 'NOT reproduced'}: "
        f"{_side(plain, 'deep_depth', 'plain')} vs {_side(plain, 'shallow_depth', 'plain')} "
        f"({'degrades' if plain['deeper_is_worse'] else 'no degradation beyond the spread'}; {_spread(plain)}); "
        f"{_side(res, 'deep_depth', 'resnet')} vs {_side(res, 'shallow_depth', 'resnet')} "
        f"({res_word}; {_spread(res)})."
    )
    falls = [f"{name}-{depth}: {len(c)} of {entry['runs'][depth]} (epoch {', '.join(str(x['epoch']) for x in c)})"
             for name, entry in (("plain", plain), ("resnet", res)) for depth, c in entry["collapsed"].items() if c]
    if falls:
        text += f" Training error back up by {COLLAPSE_POINTS:g}+ points (collapsed): " + "; ".join(falls) + "."
    if not result["equal_epochs"]:
        text += " Note: the runs have unequal epochs."
    return text
