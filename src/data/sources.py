"""Where a dataset's files come from, decided in one place.

Order: ``data.root`` (default ``data/`` in the working directory) -> the system dataset folder (Debian's
``dataset-*`` packages put files under ``/usr/share/datasets``) -> torchvision's download (when
``data.download`` is true and the network answers) -> one clear error that says how to get the files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from data.errors import DataConfigError

SYSTEM_DATASETS = Path(os.environ.get("CNN_SYSTEM_DATASETS", "/usr/share/datasets"))


def find_folder(candidates: Sequence[Path], required: Sequence[str]) -> Path | None:
    """The first candidate folder holding every required file (``name`` or ``name.gz``)."""
    for folder in candidates:
        if all((folder / name).is_file() or (folder / f"{name}.gz").is_file() for name in required):
            return folder
    return None


def locate(
    dataset: str,
    root: str | os.PathLike,
    subfolders: Sequence[str],
    required: Sequence[str],
    system_folder: str | None,
    download: Callable[[Path], None] | None,
    allow_download: bool,
    how_to_get: str,
) -> Path:
    """Find (or download) the folder with ``required`` files for ``dataset``; explain when impossible.
    ``{root}`` in ``how_to_get`` becomes the ``data.root`` the user gave (not the default ``data/``)."""
    root = Path(root).expanduser()
    candidates = [root / sub for sub in subfolders] + [root]
    if system_folder:
        candidates.append(SYSTEM_DATASETS / system_folder)
    found = find_folder(candidates, required)
    if found is not None:
        return found
    download_problem = "data.download is false"
    if allow_download and download is not None:
        try:
            download(root)
        except Exception as error:  # any network or disk failure means: no files this way
            download_problem = f"the download failed ({' '.join(str(error).split())[:160]})"
        else:
            found = find_folder(candidates, required)
            if found is not None:
                return found
            download_problem = "the download finished but the files are not where expected"
    searched = ", ".join(str(c) for c in candidates)
    raise DataConfigError(
        "root", str(root),
        f"the {dataset} files ({', '.join(required)}) were not found in any of: {searched}; {download_problem}.",
        how_to_get.replace("{root}", str(root).rstrip("/") or "/"),
    )
