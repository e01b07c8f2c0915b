"""Folders a command makes: checked before Hydra makes them, made new each time, removed when unused.

Every check here reads the file system and writes nothing, so a refused command leaves no trace.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from experiments.core.errors import UserError
from experiments.core.runs import LOCK_FILE


def new_folder(parent: Path, stem: str) -> Path:
    """Make and return a folder under ``parent`` that did not exist before: ``stem``, else ``stem-2``, ...
    (``mkdir`` without ``exist_ok`` is atomic, so two commands in the same second get two folders)."""
    parent.mkdir(parents=True, exist_ok=True)
    for number in range(1, 10_000):
        folder = parent / (stem if number == 1 else f"{stem}-{number}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise UserError("output folder", str(parent / stem), "exists 10,000 times over.", "Clean up the folder.")


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


# Kernel pseudo file systems: a folder there can never hold a run.
_PSEUDO_FILE_SYSTEMS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "securityfs",
                        "tracefs", "pstore", "bpf", "configfs", "fusectl", "mqueue", "hugetlbfs"}
MIN_FREE_BYTES = 100 * 2**20
NAME_MAX = 255


def _mount_type(path: Path) -> str | None:
    """The file-system type of the mount that holds ``path`` (from /proc/mounts; None where unknown)."""
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return None
    best = max((m for m in mounts if path == Path(m[0]) or Path(m[0]) in path.parents),
               key=lambda m: len(m[0]), default=None)
    return best[1] if best else None


def check_can_create(folder: Path, key: str) -> None:
    """That ``folder`` (given as ``key``) can be made and written, checked WITHOUT writing anything:
    no name longer than the file system allows, no file in the way, a writable real file system with
    room for a run. One paragraph naming the key, the value and the fix otherwise."""
    path = Path(os.path.abspath(folder))
    long = next((part for part in path.parts if len(part.encode()) > NAME_MAX), None)
    if long is not None:
        raise UserError(key, str(folder), f"has a folder name of {len(long.encode())} bytes ({long[:40]}...); "
                        f"file systems allow {NAME_MAX}.", "Use a shorter name.")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(key, str(folder), f"lies under {existing}, which is a file, not a folder.",
                        f"Point {key} at a folder (or a path where one can be made).")
    kind = _mount_type(existing)
    if kind in _PSEUDO_FILE_SYSTEMS:
        raise UserError(key, str(folder), f"lies on the kernel's {kind} file system ({existing}), which holds no "
                        "files of ours.", f"Point {key} at a folder on a disk, e.g. outputs.")
    stats = os.statvfs(existing)
    if stats.f_flag & os.ST_RDONLY or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(key, str(folder), f"cannot be written: {existing} is read-only for this user.",
                        f"Point {key} at a writable folder.")
    free = stats.f_bavail * stats.f_frsize
    if free < MIN_FREE_BYTES:
        raise UserError(key, str(folder), f"has {free / 2**20:.0f} MiB free on its disk, too little for a run.",
                        f"Free some disk space or point {key} at another disk.")


# Command-line keys that name folders Hydra makes before any code of ours runs.
FOLDER_KEYS = ("paths.output_root", "hydra.run.dir", "hydra.sweep.dir")


def check_output_folders(argv: list[str], default: str = "outputs") -> None:
    """Before Hydra makes the run folder (it fails there with a traceback, and leaves folders behind):
    every folder the command line names must be creatable, and a run name must fit a file name.
    Writes nothing; one paragraph and exit 2 otherwise."""
    from experiments.core.errors import EXIT_USER_ERROR, report

    given = dict(a.lstrip("+").split("=", 1) for a in argv if "=" in a)
    try:
        for key in FOLDER_KEYS:
            if key in given and not given[key].strip().strip("'\""):
                raise UserError(key, given[key], "is empty: the run would be written at the top of the file "
                                "system.", f"Give {key} a folder, e.g. {key}=outputs, or leave it out.")
        # DDP children and other nodes join the folder rank 0 made (and wrote). An Optuna search (and a
        # study's sweep) resumes in its sweep folder by design (its job numbers are its trial numbers);
        # Hydra's basic sweeper numbers jobs from 0 again and would overwrite the first run's trials.
        resumable_sweep = any(a.split("=", 1)[0].lstrip("+") in ("hparams_search", "hydra/sweeper", "experiment")
                              for a in argv)
        checked = ["hydra.run.dir"] + ([] if resumable_sweep else ["hydra.sweep.dir"])
        if _is_first_process():
            for key in checked:
                if key in given and "${" not in given[key]:
                    _refuse_folder_with_results(Path(given[key].strip("'\"")), key)
        name = given.get("run_name", "")
        if "/" in name or name in (".", ".."):
            raise UserError("run_name", name, "is a part of a folder name, so it cannot hold '/' or be '.' or '..' "
                            "(it would write the run outside outputs/<command>/<date>/).",
                            "Use a plain name, e.g. run_name=resnet20-baseline.")
        check_can_create(Path(given.get("paths.output_root", default)), "paths.output_root")
        remember_output_root(Path(given.get("paths.output_root", default)))
        for key in FOLDER_KEYS[1:]:
            if key in given and "${" not in given[key]:
                check_can_create(Path(given[key]), key)
        name = given.get("run_name", "")
        if len(name.encode()) + 40 > NAME_MAX:  # <time>_<run_name> is the run folder's name
            raise UserError("run_name", name, f"is {len(name.encode())} bytes long; with the time stamp the run "
                            f"folder's name must fit {NAME_MAX}.", "Use a shorter run_name.")
    except UserError as error:
        report(error)
        raise SystemExit(EXIT_USER_ERROR) from None


def _is_first_process() -> bool:
    """Not a DDP child, another node's or SLURM task's process, nor a restart by torchrun: those join (or
    rejoin) the run folder the first start of rank 0 made."""
    return all(os.environ.get(name, "0") == "0" for name in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID",
                                                               "TORCHELASTIC_RESTART_COUNT"))


def _refuse_folder_with_results(folder: Path, key: str) -> None:
    """A folder named on the command line must not hold results already: a run's files (its config,
    summary, checkpoints, metrics) or a sweep's (its multirun.yaml, its trials' folders), which a new
    command would overwrite. Hydra's own record (``.hydra/``, ``train.log``) of an empty start is fine."""
    if not folder.is_dir():
        return
    results = ("config.yaml", "summary.json", "metrics.csv", "checkpoints", "multirun.yaml", "optuna.db",
               "coarse_to_fine.json")
    found = [name for name in results if (folder / name).exists()]
    found += [p.name for p in folder.iterdir() if p.is_dir() and (p / ".hydra").is_dir()][:3]  # sweep trials
    if found:
        raise UserError(key, str(folder), f"holds results already ({', '.join(found[:4])}); a command never writes "
                        "into a folder that holds results, so they are not overwritten.",
                        "Point it at a new folder (or leave it out: every run gets a new one); to continue an "
                        "unfinished run, use resume=<run folder>.")


def remove_unused_run_folder(folder: Path, output_root: Path) -> None:
    """Remove the folder Hydra made for this call when nothing of a run went into it, and the folders
    above it that it leaves empty (``train/<date>/``; the output root too when this command made it),
    then give the first folder that existed before the command its modification time back: a refused
    command leaves no trace."""
    if not folder.is_dir():
        return
    leftovers = {p.name for p in folder.iterdir()} - {".hydra", "train.log", LOCK_FILE}
    if leftovers:
        return
    shutil.rmtree(folder, ignore_errors=True)
    root = output_root.resolve()
    kept = _EXISTED_BEFORE.get(root)  # (first folder that existed, its atime, its mtime), set by the entry
    stop = kept[0] if kept else root
    for parent in folder.resolve().parents:
        if parent == stop or stop not in parent.parents:
            break
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
    if kept and kept[0].is_dir():
        os.utime(kept[0], ns=(kept[1], kept[2]))


# paths.output_root (resolved) -> its first existing folder and that folder's times, before Hydra ran.
_EXISTED_BEFORE: dict[Path, tuple[Path, int, int]] = {}


def remember_output_root(root: Path) -> None:
    """Note, before Hydra makes anything, which part of ``root`` exists and when it was last changed."""
    existing = Path(os.path.abspath(root))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    stats = existing.stat()
    _EXISTED_BEFORE[Path(os.path.abspath(root)).resolve()] = (existing.resolve(), stats.st_atime_ns, stats.st_mtime_ns)
