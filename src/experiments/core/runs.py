"""Run folders: the contract between training and every tool that reads results afterwards.

A run folder holds ``config.yaml`` (the composed config, resolved), ``.hydra/`` (Hydra's own record,
including the command-line overrides), ``metrics.csv``, ``checkpoints/{last,best-*}.ckpt``,
``summary.json`` and ``train.log``. Everything another tool needs is written here.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from experiments.core.errors import UserError

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
FAILURE_FILE = "failure.json"
LOCK_FILE = ".lock"
DIAGNOSTICS_DIR = "diagnostics"
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


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


# Run folders written before the code moved into packages (issue 15) name these targets in config.yaml.
LEGACY_TARGETS = {
    "experiments.study_callback.": "experiments.studies.study_callback.",
    "experiments.loggers.": "experiments.training.loggers.",
}


def _rewrite_strings(config: DictConfig, rewrite) -> None:
    """Apply ``rewrite(key, text) -> text`` to every string value of ``config``, in place."""
    def walk(node: Any) -> None:
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else enumerate(node)
        for key, value in list(items):
            if isinstance(value, (DictConfig, ListConfig)):
                walk(value)
            elif isinstance(value, str):
                new = rewrite(key, value)
                if new != value:
                    node[key] = new

    walk(config)


def modernise_targets(config: DictConfig) -> DictConfig:
    """Point every ``_target_`` of a config written before the move at where that code lives now."""
    def rewrite(key: Any, text: str) -> str:
        if key != "_target_":
            return text
        old = next((old for old in LEGACY_TARGETS if text.startswith(old)), None)
        return LEGACY_TARGETS[old] + text[len(old):] if old else text

    _rewrite_strings(config, rewrite)
    return config


def relocate_paths(config: DictConfig, folder: Path) -> DictConfig:
    """A moved or copied run folder: every path under its saved ``paths.run_dir`` now points into
    ``folder``, so the run reads and writes its own files, never the original's."""
    saved = OmegaConf.select(config, "paths.run_dir", default=None)
    if not isinstance(saved, str) or not saved or Path(saved) == folder or Path(saved).resolve() == folder.resolve():
        return config
    new = str(folder)

    def rewrite(_key: Any, text: str) -> str:
        if text == saved or text.startswith(saved.rstrip("/") + "/"):
            return new + text[len(saved.rstrip("/")):]
        return text

    _rewrite_strings(config, rewrite)
    return config


class RunFolder:
    """One run folder: the only code that knows its file names and how to read each file.

    Every tool that reads results (eval, resume, analyze, compare, report, sweep_report, fine-tuning)
    goes through this type. A missing optional file reads as empty; a required one that is missing or
    corrupt is a :class:`UserError` naming the file, what is wrong with it and what to do.
    """

    CONFIG = CONFIG_FILE
    SUMMARY = SUMMARY_FILE
    METRICS = METRICS_FILE
    FAILURE = FAILURE_FILE
    CHECKPOINTS = CHECKPOINT_DIR
    LAST = LAST_CHECKPOINT
    HYDRA = ".hydra"

    def __init__(self, path: str | Path, key: str = "run") -> None:
        self.path = Path(path)
        self.key = key  # the command-line key that named this folder, for error messages

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # --- finding -----------------------------------------------------------------------------------
    @staticmethod
    def is_run_folder(folder: Path) -> bool:
        return (folder / CONFIG_FILE).is_file() or (folder / ".hydra" / "config.yaml").is_file()

    @classmethod
    def of(cls, target: str | Path, key: str = "run") -> tuple[RunFolder, Path | None]:
        """(run folder, explicit checkpoint or None) for a run folder or a checkpoint given as ``key``."""
        path = Path(str(target)).expanduser()
        if not path.exists():
            raise UserError(key, str(target), "does not exist.",
                            "Pass a run folder under outputs/ (it holds config.yaml) or a .ckpt file inside one.")
        if path.is_file():
            for parent in path.parents:
                if cls.is_run_folder(parent):
                    if path.suffix not in CHECKPOINT_SUFFIXES:
                        raise UserError(key, str(target), f"is a file of run {parent.name} but not a checkpoint "
                                        f"({path.name}).", f"Pass the run folder ({key}={parent}) or one of its "
                                        f"{CHECKPOINT_DIR}/*.ckpt files.")
                    return cls(parent, key), path
            hint = (" (config.yaml is the run's record, not the run: pass its folder)"
                    if path.name in (CONFIG_FILE, SUMMARY_FILE) else "")
            raise UserError(key, str(target), f"is a file outside any run folder, so its config is unknown{hint}.",
                            f"Point {key}= at the run folder, or keep the checkpoint inside its run's checkpoints/.")
        if not cls.is_run_folder(path):
            raise UserError(key, str(target), "is not a run folder (no config.yaml or .hydra/config.yaml).",
                            "Pass the folder that `experiments.train` printed at the end of the run.")
        return cls(path, key), None

    # --- files ---------------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def failure_file(self) -> Path:
        return self.path / FAILURE_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / LAST_CHECKPOINT

    # --- reading -------------------------------------------------------------------------------------
    def _yaml(self, path: Path) -> Any:
        try:
            return OmegaConf.load(path)
        except Exception as error:  # yaml's ParserError/ScannerError, OmegaConf's errors, OSError
            raise UserError(self.key, str(self.path), f"has a damaged {path.relative_to(self.path)} "
                            f"({' '.join(str(error).split())[:160]}).",
                            "Restore the file from a copy of the run, or pick another run.") from None

    def config(self) -> DictConfig:
        """The run's resolved ``config.yaml`` (required), with targets of code that moved updated and the
        paths inside the folder resolved against where the folder is now (a folder is movable)."""
        if not self.config_file.is_file():
            raise UserError(self.key, str(self.path), f"has no {CONFIG_FILE} (the run did not get past its start).",
                            "Pick a run that trained; its folder holds config.yaml and checkpoints/.")
        config = self._yaml(self.config_file)
        if not isinstance(config, DictConfig):
            raise UserError(self.key, str(self.path), f"has a {CONFIG_FILE} that is not a mapping of keys.",
                            "Restore the file from a copy of the run, or pick another run.")
        return relocate_paths(modernise_targets(config), self.path.absolute())

    def composed_config(self) -> DictConfig:
        """``config.yaml``, else Hydra's unresolved record (a run that failed early), else empty."""
        for path in (self.config_file, self.path / ".hydra" / "config.yaml"):
            if path.is_file():
                config = self._yaml(path)
                return modernise_targets(config) if isinstance(config, DictConfig) else OmegaConf.create({})
        return OmegaConf.create({})

    def overrides(self) -> list[str]:
        """The command-line overrides of the call that made the run (Hydra's record)."""
        path = self.path / ".hydra" / "overrides.yaml"
        return [str(o) for o in self._yaml(path)] if path.is_file() else []

    def choices(self) -> dict[str, str]:
        """Hydra's choice per config group (``model: resnet20``); empty when the record is missing."""
        path = self.path / ".hydra" / "hydra.yaml"
        if not path.is_file():
            return {}
        raw = OmegaConf.select(self._yaml(path), "hydra.runtime.choices", default=None)
        return {str(k): str(v) for k, v in (OmegaConf.to_container(raw) if raw is not None else {}).items()}

    def _json(self, path: Path) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            value = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(self.key, str(self.path), f"has a damaged {path.name} ({error}).",
                            "Restore the file from a copy of the run, or pick another run.") from None
        if not isinstance(value, dict):
            raise UserError(self.key, str(self.path), f"has a {path.name} that is not a JSON object.",
                            "Restore the file from a copy of the run, or pick another run.")
        return value

    def summary(self) -> dict[str, Any]:
        """``summary.json`` ({} when the run has none yet)."""
        return self._json(self.summary_file) or {}

    def failure(self) -> dict[str, Any] | None:
        """``failure.json`` of a failed sweep trial, or None."""
        return self._json(self.failure_file)

    def diagnostic(self, name: str) -> dict[str, Any] | None:
        """``diagnostics/<name>.json``, written by a diagnostics callback (None when it was not recorded)."""
        return self._json(self.path / DIAGNOSTICS_DIR / f"{name}.json")

    def status(self) -> str:
        """finished, running, interrupted, diverged, failed, ... ("unknown" when nothing says)."""
        if self.failure_file.is_file():
            return "failed"
        return str(self.summary().get("status") or "unknown")

    def is_finished(self) -> bool:
        return self.summary().get("status") == "finished"

    def metrics_rows(self) -> list[dict[str, str]]:
        """``metrics.csv`` as Lightning's CSV logger wrote it: one dict per row, values as text."""
        if not self.metrics_file.is_file():
            return []
        try:
            with self.metrics_file.open(newline="") as handle:
                return list(csv.DictReader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise UserError(self.key, str(self.path), f"has a damaged {METRICS_FILE} ({error}).",
                            "Restore the file from a copy of the run, or pick another run.") from None

    def epochs(self) -> list[dict[str, float]]:
        """``metrics.csv`` merged to one row per epoch (a train row and a val row of one epoch become one)."""
        per_epoch: dict[int, dict[str, float]] = {}
        for row in self.metrics_rows():
            epoch_text = row.get("epoch") or ""
            if not epoch_text:
                continue
            values = {}
            for key, text in row.items():
                if key in ("epoch", "step") or key is None or text in (None, "") or key.endswith("_step"):
                    continue  # per-step rows are not part of the epoch curves
                try:
                    values[key] = float(text)
                except ValueError:
                    continue
            if not any(k.startswith(("train/", "val/")) for k in values):
                continue  # the test row (and lr-only rows) belong to no training epoch's curve
            epoch = int(float(epoch_text))
            merged = per_epoch.setdefault(epoch, {"epoch": epoch})
            merged.update(values)
            if row.get("step"):
                merged["step"] = max(merged.get("step", 0.0), float(row["step"]))
        return [per_epoch[e] for e in sorted(per_epoch)]

    # --- in use ---------------------------------------------------------------------------------------
    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    @contextlib.contextmanager
    def locked(self, command: str = "experiments.train") -> Iterator[None]:
        """Hold this folder for one command: an OS lock (``flock``) on ``.lock``, released when the block
        ends or the process dies (a killed run never leaves a stale lock). A second command that wants
        the folder meanwhile is refused with one paragraph."""
        self.path.mkdir(parents=True, exist_ok=True)
        handle = self.lock_file.open("a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._in_use_error(command) from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{command} pid {os.getpid()}\n")
            handle.flush()
            yield
        finally:
            handle.close()  # closing the file releases the lock

    def refuse_if_in_use(self, command: str) -> None:
        """A UserError when another process holds this folder (a training run in progress)."""
        if not self.lock_file.is_file():
            return  # never held: nothing is running here
        with self.lock_file.open("r") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._in_use_error(command) from None

    def _in_use_error(self, command: str) -> UserError:
        try:
            holder = self.lock_file.read_text().strip() or "another process"
        except OSError:
            holder = "another process"
        return UserError(self.key, str(self.path), f"is in use by {holder}, so {command} may not write into it now.",
                         "Wait until that command ends (or stop it), then run this one again.")

    # --- checkpoints ---------------------------------------------------------------------------------
    def best_checkpoint(self) -> Path | None:
        best = sorted(self.checkpoint_dir.glob("best*.ckpt"))
        return best[-1] if best else None

    def checkpoint(self, which: str = "best") -> Path:
        """``best`` (falling back to last), ``last``, or a path (relative ones inside this folder)."""
        if which not in ("best", "last"):
            path = Path(which)
            return path if path.is_absolute() else self.path / path
        last = self.last_checkpoint
        chosen = self.best_checkpoint() if which == "best" else None
        chosen = chosen or (last if last.is_file() else None)
        if chosen is None:
            raise UserError(self.key, str(self.path), f"has no checkpoint in {CHECKPOINT_DIR}/.",
                            "Train it (or resume it with resume=<run folder>) until an epoch finishes.")
        return chosen


# The functions below are the shapes most callers need; they all go through RunFolder.
def is_run_folder(folder: Path) -> bool:
    return RunFolder.is_run_folder(Path(folder))


def run_folder_of(target: str | Path, key: str = "run") -> tuple[Path, Path | None]:
    """(run folder, explicit checkpoint or None) for a run folder or a checkpoint path given as ``key``."""
    folder, explicit = RunFolder.of(target, key)
    return folder.path, explicit


def load_run_config(run_dir: Path) -> DictConfig:
    return RunFolder(run_dir).config()


def choose_checkpoint(run_dir: Path, which: str = "best") -> Path:
    return RunFolder(run_dir).checkpoint(which)


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
    except MemoryError:
        raise
    except Exception as error:  # truncated, text, another format: torch's unpickler raises all kinds
        raise UserError("checkpoint", str(path), f"is truncated or not a PyTorch checkpoint "
                        f"({type(error).__name__}: {' '.join(str(error).split())[:200]}).",
                        "Use checkpoints/last.ckpt or the best checkpoint of a finished run.") from None
    if not isinstance(checkpoint, dict):
        raise UserError("checkpoint", str(path), "is not a checkpoint dictionary.", "Use a .ckpt from a run.")
    return checkpoint


def load_model_weights(module, checkpoint: dict[str, Any], path: Path) -> None:
    """Load a checkpoint's weights into ``module``; a different architecture is a clear error."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise UserError("checkpoint", str(path), "holds no state_dict of tensors (a dictionary of other data).",
                        "Use a .ckpt from a run, or a state_dict file saved with torch.save(model.state_dict()).")
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
    return RunFolder(run_dir).overrides()


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
        try:
            if RunFolder(run).status() in ("finished", "diverged"):
                continue
        except UserError:
            continue  # a damaged run is nothing to resume
        candidates.append(run)
    if not candidates:
        raise UserError("resume", True, f"found no unfinished run of this command ({' '.join(wanted) or 'defaults'}) "
                        f"with {CHECKPOINT_DIR}/{LAST_CHECKPOINT} under {output_root}/train.",
                        "Pass the run folder itself (resume=outputs/train/<date>/<time>_<name>) or drop resume.")
    return max(candidates, key=lambda p: (p.parent.name, p.name))
