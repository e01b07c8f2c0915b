"""Run folders: the contract between training and every tool that reads results afterwards.

A run folder holds ``config.yaml`` (the composed config, resolved), ``.hydra/`` (Hydra's own record,
including the command-line overrides), ``metrics.csv``, ``checkpoints/{last,best-*}.ckpt``,
``summary.json`` and ``train.log``. Everything another tool needs is written here.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserError

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
PACKAGES = ("torch", "torchvision", "pytorch-lightning", "torchmetrics", "hydra-core", "omegaconf", "numpy")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


@functools.cache  # read once per process: the code that was loaded at start is the code that ran
def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, text=True,
                             capture_output=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd or Path(__file__).parent, text=True, capture_output=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def check_writable(folder: Path) -> None:
    """Fail before training, not after an hour, when results could not be saved."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-probe"
        probe.write_bytes(b"\0" * 1024 * 1024)
        probe.unlink()
    except OSError as error:
        raise UserError("paths.output_root", str(folder), f"cannot be written ({error.strerror or error}).",
                        "Free some disk space or point paths.output_root at a writable folder.") from None


def check_output_root_of(argv: list[str], default: str = "outputs") -> None:
    """Before Hydra makes the run folder: an unwritable or full output root is one paragraph, exit 2.

    (Hydra creates the run folder before any task code runs, and fails there with a traceback.)
    """
    from experiments.errors import EXIT_USER_ERROR, report

    root = next((a.split("=", 1)[1] for a in argv if a.startswith("paths.output_root=")), default)
    try:
        check_writable(Path(root))
    except UserError as error:
        report(error)
        raise SystemExit(EXIT_USER_ERROR) from None


def is_run_folder(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() or (folder / ".hydra" / "config.yaml").is_file()


def run_folder_of(target: str | Path, key: str = "run") -> tuple[Path, Path | None]:
    """(run folder, explicit checkpoint or None) for a run folder or a checkpoint path given as ``key``."""
    path = Path(str(target)).expanduser()
    if not path.exists():
        raise UserError(key, str(target), "does not exist.",
                        "Pass a run folder under outputs/ (it holds config.yaml) or a .ckpt file inside one.")
    if path.is_file():
        for parent in path.parents:
            if is_run_folder(parent):
                return parent, path
        raise UserError(key, str(target), "is a file outside any run folder, so its config is unknown.",
                        f"Point {key}= at the run folder, or keep the checkpoint inside its run's checkpoints/.")
    if not is_run_folder(path):
        raise UserError(key, str(target), "is not a run folder (no config.yaml or .hydra/config.yaml).",
                        "Pass the folder that `experiments.train` printed at the end of the run.")
    return path, None


def load_run_config(run_dir: Path) -> DictConfig:
    resolved = run_dir / CONFIG_FILE
    if resolved.is_file():
        return OmegaConf.load(resolved)
    raise UserError("run", str(run_dir), f"has no {CONFIG_FILE} (the run did not get past its start).",
                    "Pick a run that trained; its folder holds config.yaml and checkpoints/.")


def best_checkpoint(run_dir: Path) -> Path | None:
    best = sorted((run_dir / CHECKPOINT_DIR).glob("best*.ckpt"))
    return best[-1] if best else None


def choose_checkpoint(run_dir: Path, which: str = "best") -> Path:
    if which not in ("best", "last"):
        path = Path(which)
        return path if path.is_absolute() else run_dir / path
    last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    chosen = best_checkpoint(run_dir) if which == "best" else None
    chosen = chosen or (last if last.is_file() else None)
    if chosen is None:
        raise UserError("run", str(run_dir), "has no checkpoint in checkpoints/.",
                        "Train it (or resume it with resume=<run folder>) until an epoch finishes.")
    return chosen


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: a file never runs code, whoever made it."""
    import pickle

    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UserError("checkpoint", str(path), "holds objects other than tensors and plain data, so it was "
                        f"refused unread ({' '.join(str(error).split()[:12])}...).",
                        "Only load checkpoints written by this framework or plain state_dict files.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise UserError("checkpoint", str(path), f"is truncated or not a PyTorch checkpoint ({error}).",
                        "Use checkpoints/last.ckpt or the best checkpoint of a finished run.") from None
    if not isinstance(checkpoint, dict):
        raise UserError("checkpoint", str(path), "is not a checkpoint dictionary.", "Use a .ckpt from a run.")
    return checkpoint


def load_model_weights(module, checkpoint: dict[str, Any], path: Path) -> None:
    """Load a checkpoint's weights into ``module``; a different architecture is a clear error."""
    state = checkpoint.get("state_dict", checkpoint)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        detail = []
        if mismatched:
            k = mismatched[0]
            detail.append(f"{k} is {tuple(state[k].shape)} there but {tuple(own[k].shape)} here")
        if missing:
            detail.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise UserError("checkpoint", str(path), "belongs to another architecture or class count: "
                        + "; ".join(detail) + ".", "Use the checkpoint of a run trained with the same model and data.")
    module.load_state_dict(state)


def overrides_of(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    return list(OmegaConf.load(path)) if path.is_file() else []


def without_resume(overrides: Iterable[str]) -> list[str]:
    return sorted(o for o in overrides if not o.lstrip("+~").startswith("resume="))


def find_resumable(output_root: Path, overrides: list[str], exclude: Path) -> Path:
    """The newest unfinished run of the same command (same overrides, resume aside) with a last.ckpt."""
    wanted = without_resume(overrides)
    candidates = []
    for ckpt in (output_root / "train").glob(f"*/*/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}"):
        run = ckpt.parent.parent
        if run.resolve() == exclude.resolve() or without_resume(overrides_of(run)) != wanted:
            continue
        summary = run / SUMMARY_FILE
        if summary.is_file() and read_json(summary).get("status") == "finished":
            continue
        candidates.append(run)
    if not candidates:
        raise UserError("resume", True, f"found no unfinished run of this command ({' '.join(wanted) or 'defaults'}) "
                        f"with {CHECKPOINT_DIR}/{LAST_CHECKPOINT} under {output_root}/train.",
                        "Pass the run folder itself (resume=outputs/train/<date>/<time>_<name>) or drop resume.")
    return max(candidates, key=lambda p: (p.parent.name, p.name))
