"""``python -m experiments.analyze run=<run folder> [analysis=[saliency,tsne,...]] [analysis.<name>.<key>=v]``

Looks inside a trained network with the methods of the "visualising and understanding CNNs" lectures.
Each analysis is a config in ``conf/analysis/`` (``python -m experiments.analyze --list`` names them);
its pictures go to ``<run>/analysis/<name>/*.png`` (and to the run's TensorBoard/W&B when it had them),
its numbers to ``<run>/analysis/<name>.json``. The run's own saved config rebuilds the model and data;
other ``key=value`` arguments override single keys of it (e.g. ``data.root=/elsewhere``), as in eval.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.core.errors import UserError, exits_cleanly_on_user_error, user_error_types
from experiments.core.locations import CONF_DIR as CONF
from experiments.training import schema

USAGE = ("usage: python -m experiments.analyze run=<run folder or .ckpt> [analysis=[saliency,occlusion,gradcam,...]] "
         "[analysis.<name>.<key>=value] [ckpt=best|last] [key=value ...]")
ANALYZE_KEYS = ("analysis", "ckpt", "dashboards")


def available() -> list[str]:
    return sorted(p.stem for p in (CONF / "analysis").glob("*.yaml"))


def parse_arguments(argv: list[str]) -> tuple[str, list[str], list[str]]:
    """(run, overrides of the analyze config, overrides of the run's config)."""
    run, ours, theirs = None, [], []
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__.strip())
            print(USAGE)
            print(f"analyses: {', '.join(available())}")
            sys.exit(0)
        if arg == "--list":
            print("\n".join(available()))
            sys.exit(0)
        if "=" not in arg:
            raise UserError("argument", arg, "is not of the form key=value.", USAGE)
        key = arg.split("=", 1)[0].lstrip("+~")
        if key == "run":
            run = arg.split("=", 1)[1]
        elif key.split(".")[0] in ANALYZE_KEYS:
            ours.append(arg)
        else:
            theirs.append(arg)
    if not run:
        raise UserError("run", None, "is required.", USAGE)
    return run, ours, theirs


def compose_settings(overrides: list[str]) -> DictConfig:
    """``conf/analyze.yaml`` with the analysis choices; a wrong name or key is a user error."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="analyze", overrides=overrides)
    except HydraException as error:
        detail = " ".join(str(error).split())
        names = ", ".join(available())
        raise UserError("analysis", " ".join(overrides), f"could not be composed: {detail[:400]}",
                        f"Choose from: {names} (e.g. analysis=[saliency,tsne]); set their keys as "
                        "analysis.<name>.<key>=value (keys are in conf/analysis/<name>.yaml).") from None


def dashboard_loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    """The run's TensorBoard / W&B loggers, reopened on its folder (CSV has no pictures to take)."""
    from hydra.utils import instantiate

    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is None or name not in ("tensorboard", "wandb"):
            continue
        settings = OmegaConf.to_container(logger_cfg, resolve=True)
        settings["save_dir"] = str(run_dir)
        if name == "wandb":
            settings["name"] = f"{settings.get('name') or run_dir.name}-analysis"
        try:
            loggers.append(instantiate(settings))
        except Exception as error:  # a dashboard that cannot start must not cost the analysis
            print(f"note: the run's {name} logger could not be reopened ({error}); PNG files only.", file=sys.stderr)
    return loggers


def analyze(run: str, settings: DictConfig, overrides: list[str] | None = None, quiet: bool = False) -> dict[str, dict]:
    """Run every selected analysis; returns name -> its JSON record."""
    from hydra.utils import get_method

    from experiments.analysis.common import AnalysisContext
    from experiments.core import runs
    from experiments.evaluation.trained import load_trained

    chosen = dict(settings.get("analysis") or {})
    if not chosen:
        raise UserError("analysis", "[]", "selects no analysis.", f"Choose from: {', '.join(available())}.")
    schema.check(OmegaConf.masked_copy(settings, ["analysis"]))  # types and ranges of every setting
    trained = load_trained(run, str(settings.get("ckpt", "best")), overrides)
    out_dir = trained.run_dir / "analysis"
    made_out_dir = not out_dir.exists()
    loggers = dashboard_loggers(trained.cfg, trained.run_dir) if settings.get("dashboards", True) else []
    results = {}
    written: list[Path] = []  # this command's outputs: removed again if a setting is refused
    try:
        for name, node in chosen.items():
            params = OmegaConf.to_container(node, resolve=True)
            target = params.pop("_target_")
            stem = new_stem(out_dir, name)
            written += [out_dir / stem, out_dir / f"{stem}.json"]
            ctx = AnalysisContext(trained=trained, name=name, out_dir=out_dir, loggers=loggers, stem=stem)
            started = time.time()
            try:
                figures = get_method(target)(ctx, **params)
            except TypeError as error:
                raise UserError(f"analysis.{name}", params, f"was rejected ({error}).",
                                f"Use the keys of conf/analysis/{name}.yaml.") from None
            record = {"analysis": name, "run_dir": str(trained.run_dir), "checkpoint": str(trained.checkpoint_path),
                      "settings": params, "files": ctx.files, "figures": figures,
                      "seconds": round(time.time() - started, 2), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            runs.write_json_atomic(out_dir / f"{stem}.json", record)
            with contextlib.suppress(OSError):
                (out_dir / stem).rmdir()  # an analysis with numbers only leaves no empty folder
            results[name] = record
            if not quiet:
                print(f"{name}: {', '.join(ctx.files) or 'no pictures'} ({record['seconds']} s)")
    except user_error_types():
        remove_outputs(written, out_dir if made_out_dir else None)  # a refused setting writes nothing
        raise
    finally:
        for logger in loggers:
            logger.finalize("success")
        if any(type(logger).__name__ == "WandbLogger" for logger in loggers):
            import wandb

            wandb.finish()
    if not quiet:
        print(f"analysis folder: {out_dir}")
    return results


def new_stem(out_dir: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``, ... when an earlier analysis of that name is in ``out_dir``:
    a rerun (other settings, another checkpoint) never overwrites what an earlier one found."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for number in range(1, 10_000):
        stem = name if number == 1 else f"{name}-{number}"
        if (out_dir / f"{stem}.json").exists():
            continue
        try:
            (out_dir / stem).mkdir()  # atomic: two commands on one run never pick the same stem
        except FileExistsError:
            continue
        return stem
    raise UserError("analysis", name, f"has 10,000 results in {out_dir} already.", "Clean up the folder.")


def latest_record(out_dir: Path, name: str) -> Path | None:
    """The JSON of the newest ``name`` analysis in ``out_dir`` (``name-3.json`` after ``name-2.json``)."""
    found = [(1, out_dir / f"{name}.json")] + [(int(p.stem.rsplit("-", 1)[1]), p) for p in out_dir.glob(f"{name}-*.json")
                                                if p.stem.rsplit("-", 1)[1].isdigit()]
    found = [(number, path) for number, path in found if path.is_file()]
    return max(found)[1] if found else None


def remove_outputs(paths: list[Path], made_folder: Path | None) -> None:
    """Remove what this command wrote (its own new files and folders), and the folder it made for them."""
    import shutil

    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    if made_folder is not None:
        with contextlib.suppress(OSError):
            made_folder.rmdir()  # only when empty


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> dict[str, dict]:
    run, ours, theirs = parse_arguments(sys.argv[1:] if argv is None else argv)
    return analyze(run, compose_settings(ours), theirs)
