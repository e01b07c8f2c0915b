"""``python -m experiments.coarse_to_fine [train overrides] [--stage settings]``: the lectures' tuning recipe.

1. A coarse random search in log space with short trials (``--coarse-epochs``, optionally a fraction of
   the training batches), over the preset's ranges (or yours, given as overrides).
2. Each interval is narrowed around the ``--top-k`` best coarse trials: their span, widened by
   ``--widen`` of itself on each side (in log space for log-scale keys), at least ``--min-width`` of the
   coarse width, and clipped to the coarse range, so the fine range lies inside the coarse one and
   holds the best coarse trial.
3. A finer random search with longer trials (``--fine-epochs``) in the narrowed ranges.

``--coarse-pruner median|sha|hyperband`` lets Optuna stop hopeless coarse trials early (the pruned
ones are left out of the top-k, which only ranks trials that trained to the end); the fine stage
never prunes unless a ``hydra/sweeper/pruner=...`` override says so.

Both stages are real Hydra multiruns (``python -m experiments.train -m hparams_search=random_log ...``)
in ``<parent>/coarse`` and ``<parent>/fine``; ``<parent>/coarse_to_fine.json`` records the settings,
both stages' commands and results and every range (coarse, top-k values, fine). Each stage keeps its
Optuna storage, so running the same command again resumes instead of starting over.

    python -m experiments.coarse_to_fine model=lenet5 data=fashion_mnist --coarse-trials 30 \\
        --coarse-epochs 1 --fine-trials 15 --fine-epochs 8 --top-k 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import subprocess
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from experiments.core.errors import EXIT_USER_ERROR, UserError, report, user_error_types

RECORD_FILE = "coarse_to_fine.json"
PRUNERS = ("none", "median", "sha", "hyperband")


@dataclass
class Settings:
    """The stage settings (command-line options), recorded with the results."""

    preset: str = "random_log"
    coarse_trials: int = 20
    coarse_epochs: int = 2
    coarse_fraction: float = 1.0
    fine_trials: int = 10
    fine_epochs: int = 10
    coarse_pruner: str = "none"
    top_k: int = 5
    widen: float = 0.25
    min_width: float = 0.1
    name: str | None = None


def narrow(top_values: list[float], coarse: tuple[float, float], log: bool, widen: float = 0.25,
           min_width: float = 0.1) -> tuple[float, float]:
    """The fine interval around the best trials' values, inside ``coarse``.

    The span of ``top_values`` grows by ``widen`` times itself on each side, and to at least
    ``min_width`` times the coarse width (around its middle), both measured in log10 space when
    ``log``; then it is clipped to the coarse interval. Every top value stays inside, because they all
    lie inside the coarse interval.
    """
    if not top_values:
        raise ValueError("narrow() needs at least one value")
    to, back = (math.log10, lambda v: 10.0**v) if log else (float, float)
    c_lo, c_hi = sorted((to(coarse[0]), to(coarse[1])))
    lo, hi = to(min(top_values)), to(max(top_values))
    pad = widen * (hi - lo)
    lo, hi = lo - pad, hi + pad
    shortfall = min_width * (c_hi - c_lo) - (hi - lo)
    if shortfall > 0:
        lo, hi = lo - shortfall / 2, hi + shortfall / 2
    lo, hi = max(lo, c_lo), min(hi, c_hi)
    fine_lo, fine_hi = back(lo), back(hi)
    # Float round trips (10**log10(x)) must not push a bound past the coarse range or a top value.
    fine_lo = max(min(fine_lo, min(top_values)), min(coarse))
    fine_hi = min(max(fine_hi, max(top_values)), max(coarse))
    return fine_lo, fine_hi


def interval_override(key: str, bounds: tuple[float, float], log: bool) -> str:
    """``hydra.sweeper.params.<key>='tag(log, interval(a, b))'``: one argument, quoted for Hydra."""
    inner = f"interval({bounds[0]!r}, {bounds[1]!r})"
    return f"hydra.sweeper.params.{key}='{f'tag(log, {inner})' if log else inner}'"


def _sets_key(override: str, keys: set[str]) -> bool:
    """True for an override that sets the search space of one of ``keys`` (replaced in the fine stage)."""
    key = override.split("=", 1)[0].lstrip("+~")
    if key.startswith("hydra.sweeper.params."):
        return key.removeprefix("hydra.sweeper.params.") in keys
    return key in keys and any(s in override for s in ("interval(", "choice(", "range(", ","))


def stage_command(settings: Settings, stage: str, overrides: list[str], parent: Path, study: str,
                  extra: list[str]) -> list[str]:
    epochs = settings.coarse_epochs if stage == "coarse" else settings.fine_epochs
    trials = settings.coarse_trials if stage == "coarse" else settings.fine_trials
    ours = ("hparams_search", "trainer.max_epochs", "hydra.sweep.dir", "hydra.sweeper.study_name",
            "hydra.sweeper.n_trials", "trainer.limit_train_batches")
    overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+") not in ours]  # the stage's own win
    command = [sys.executable, "-m", "experiments.train", "-m", f"hparams_search={settings.preset}", *overrides,
               f"trainer.max_epochs={epochs}", f"hydra.sweep.dir={parent / stage}",
               f"hydra.sweeper.study_name={study}-{stage}", f"hydra.sweeper.n_trials={trials}", *extra]
    if stage == "coarse" and settings.coarse_fraction < 1.0:
        command.append(f"trainer.limit_train_batches={settings.coarse_fraction}")
    if stage == "coarse" and settings.coarse_pruner != "none":
        command = [c for c in command if not c.startswith("hydra/sweeper/pruner=")]
        command.append(f"hydra/sweeper/pruner={settings.coarse_pruner}")
    return command


def _shown(command: list[str]) -> str:
    """The stage's command as a user would type it (``python`` for this interpreter)."""
    return " ".join(["python", *(shlex.quote(part) for part in command[1:])])


def run_stage(command: list[str], stage: str) -> None:
    print(f"\n== {stage} stage ==\n{_shown(command)}", flush=True)
    result = subprocess.run(command)
    if result.returncode != 0:
        raise RuntimeError(f"the {stage} sweep exited with status {result.returncode} (its output is above)")


def summarize_stage(sweep_dir: Path) -> dict[str, Any]:
    from experiments.sweeps.report import make_report

    info, trials = make_report(sweep_dir)
    ok = [t for t in trials if t.ok]
    best = ok[0] if ok else None
    return {"sweep_dir": str(sweep_dir), "trials": len(trials), "finished": len(ok),
            "failed": sum(t.status == "failed" for t in trials),
            "pruned": sum(t.status == "pruned" for t in trials), "metric": info.metric,
            "direction": info.direction,
            "best": None if best is None else {"trial": best.number, "objective": best.objective,
                                               "params": best.params, "run_dir": str(best.run_dir)}}


def choose_fine_ranges(coarse_dir: Path, settings: Settings) -> dict[str, dict[str, Any]]:
    """Every interval key of the coarse sweep: its coarse range, the top-k values and the fine range."""
    from experiments.sweeps.report import read_sweep

    info, trials = read_sweep(coarse_dir)
    top = [t for t in trials if t.ok][: settings.top_k]
    if not top:
        raise UserError("coarse stage", str(coarse_dir), "has no finished trial, so there is nothing to narrow "
                        "around.", "Look at its trials.md for the reasons, widen the ranges or train longer.")
    ranges = {}
    for key in info.keys:
        if key not in info.ranges:
            continue  # a choice: kept as it was
        log = key in info.log_keys
        values = [float(t.params[key]) for t in top if isinstance(t.params.get(key), float)]
        fine = narrow(values, info.ranges[key], log, settings.widen, settings.min_width)
        ranges[key] = {"log": log, "coarse": list(info.ranges[key]), "top_k_values": values, "fine": list(fine),
                       "best_coarse_value": values[0]}
    return ranges


def default_name(overrides: list[str], settings: Settings) -> str:
    """``<model>-<data>-<hash>``: the same command line finds the same folder (and resumes)."""
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    chosen = {k: v for k, v in asdict(settings).items() if (k, v) != ("coarse_pruner", "none")}  # older names stay
    identity = "\n".join(sorted(overrides)) + repr({**chosen, "name": None})
    parts = [values.get("model"), values.get("data"), hashlib.sha256(identity.encode()).hexdigest()[:6]]
    return "-".join(p for p in parts if p)


_SEARCH_SYNTAX = ("interval(", "choice(", "range(", "tag(", "glob(")


def check_before_writing(overrides: list[str], settings: Settings, parent: Path) -> None:
    """Everything this command can check before it writes its record and starts the stages: the preset,
    the train overrides (composed and validated as ``experiments.train`` does; search ranges are the
    sweeper's to check), and that ``parent`` holds no record of another search (the same command again
    resumes its own)."""
    from experiments.core.compose import compose_train
    from experiments.core.fast_help import group_options, unknown_key, unknown_option
    from experiments.training.validation import validate

    if settings.preset not in group_options("hparams_search"):
        raise UserError("--preset", settings.preset, "is not an hparams_search preset.",
                        f"Use one of: {', '.join(group_options('hparams_search'))}.")
    plain = [o for o in overrides if not o.lstrip("+~").startswith("hydra")
             and not any(s in o.split("=", 1)[-1] for s in _SEARCH_SYNTAX) and "," not in o.split("=", 1)[-1]]
    problem = unknown_option(plain) or unknown_key(plain)
    if problem:  # the paragraph experiments.train itself prints for it
        print(textwrap.fill(problem, width=100), file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)
    validate(compose_train([*plain, "trainer.max_epochs=1"]), this_machine=False)  # trials may run elsewhere
    record = parent / RECORD_FILE
    if record.is_file():
        try:
            earlier = json.loads(record.read_text())
        except (OSError, ValueError):
            earlier = {}
        same = earlier.get("train_overrides") == overrides and earlier.get("settings") == asdict(settings)
        if not same:
            raise UserError("--name", parent.name, f"holds the record of another search ({record}); its results are "
                            "kept.", "Choose another --name, or run that search's own command again to resume it.")


def coarse_to_fine(overrides: list[str], settings: Settings) -> dict[str, Any]:
    """Run both stages; returns (and writes) the record."""
    from experiments.core import runs

    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    name = settings.name or default_name(overrides, settings)
    parent = Path(values.get("paths.output_root", "outputs")) / "sweeps" / "coarse_to_fine" / name
    check_before_writing(overrides, settings, parent)
    parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"name": name, "folder": str(parent), "settings": asdict(settings),
                              "train_overrides": overrides, "stages": {}, "ranges": {}}

    coarse_cmd = stage_command(settings, "coarse", overrides, parent, name, [])
    record["stages"]["coarse"] = {"command": _shown(coarse_cmd)}
    runs.write_json_atomic(parent / RECORD_FILE, record)
    run_stage(coarse_cmd, "coarse")
    record["stages"]["coarse"].update(summarize_stage(parent / "coarse"))

    record["ranges"] = choose_fine_ranges(parent / "coarse", settings)
    narrowed = [interval_override(k, tuple(r["fine"]), r["log"]) for k, r in record["ranges"].items()]
    fine_overrides = [o for o in overrides if not _sets_key(o, set(record["ranges"]))]
    fine_cmd = stage_command(settings, "fine", fine_overrides, parent, name, narrowed)
    record["stages"]["fine"] = {"command": _shown(fine_cmd)}
    runs.write_json_atomic(parent / RECORD_FILE, record)
    print("\nfine ranges: " + "; ".join(f"{k} {r['coarse']} -> {r['fine']}" for k, r in record["ranges"].items()))
    run_stage(fine_cmd, "fine")
    record["stages"]["fine"].update(summarize_stage(parent / "fine"))
    runs.write_json_atomic(parent / RECORD_FILE, record)
    print(f"\ncoarse-to-fine record: {parent / RECORD_FILE}")
    return record


def parse(argv: list[str]) -> tuple[list[str], Settings]:
    parser = argparse.ArgumentParser(prog="python -m experiments.coarse_to_fine",
                                     description="Coarse random log-space search, then a finer one around the best trials. "
                                     "Every argument that is not an option below is a train override.")
    defaults = Settings()
    parser.add_argument("--preset", default=defaults.preset, help="hparams_search preset of both stages")
    parser.add_argument("--coarse-trials", type=int, default=defaults.coarse_trials)
    parser.add_argument("--coarse-epochs", type=int, default=defaults.coarse_epochs)
    parser.add_argument("--coarse-fraction", type=float, default=defaults.coarse_fraction,
                        help="fraction of the training batches per coarse epoch (trainer.limit_train_batches)")
    parser.add_argument("--fine-trials", type=int, default=defaults.fine_trials)
    parser.add_argument("--fine-epochs", type=int, default=defaults.fine_epochs)
    parser.add_argument("--coarse-pruner", default=defaults.coarse_pruner, choices=PRUNERS,
                        help="stop hopeless coarse trials early (hydra/sweeper/pruner of the coarse stage)")
    parser.add_argument("--top-k", type=int, default=defaults.top_k, help="best coarse trials the fine ranges span")
    parser.add_argument("--widen", type=float, default=defaults.widen,
                        help="the top-k span grows by this fraction of itself on each side (log space)")
    parser.add_argument("--min-width", type=float, default=defaults.min_width,
                        help="smallest fine range, as a fraction of the coarse range's (log) width")
    parser.add_argument("--name", default=None, help="folder name under outputs/sweeps/coarse_to_fine/")
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("--")]
    if unknown:
        parser.error(f"unknown option(s): {' '.join(unknown)}")
    settings = Settings(**{k: v for k, v in vars(args).items()})
    for key in ("coarse_trials", "fine_trials", "top_k", "coarse_epochs", "fine_epochs"):
        if getattr(settings, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    if not (math.isfinite(settings.widen) and settings.widen >= 0):
        parser.error("--widen must be a fraction >= 0 (0: exactly the top-k span)")
    if not 0 < settings.min_width <= 1:
        parser.error("--min-width must be in (0, 1] (a fraction of the coarse range's width)")
    if settings.name is not None and (not settings.name.strip() or "/" in settings.name or settings.name in (".", "..")):
        parser.error(f"--name {settings.name!r} must be a plain folder name (no '/', not '.' or '..')")
    if not 0 < settings.coarse_fraction <= 1:
        parser.error("--coarse-fraction must be in (0, 1]")
    return overrides, settings


def main(argv: list[str] | None = None) -> None:
    overrides, settings = parse(sys.argv[1:] if argv is None else argv)
    try:
        coarse_to_fine(overrides, settings)
    except user_error_types() as error:
        report(error)
        sys.exit(EXIT_USER_ERROR)
    except RuntimeError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)
