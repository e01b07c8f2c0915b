"""Per-channel normalisation statistics: recompute a data config's, or measure an image folder's.

What the numbers are (the same rule for every dataset): the mean and std, per channel on the [0, 1]
scale, of the stored uint8 images of the WHOLE training file (the hold-out validation images included,
so the numbers do not change with ``data.val_size`` or ``data.split_seed``), at their native size,
before any resize or augmentation. For ``digits`` that means the 8x8 images, not the upsampled ones.
``tests/data/test_stats.py`` checks the YAML numbers against this to 3 decimals.

An image folder (``data=imagefolder``, ``data.normalize=dataset``) is too large to hold in memory, so
:func:`folder_stats` streams it: the files of ``train/`` (every class, the hold-out included), at most
``cap`` of them drawn with a fixed seed (so the numbers depend on the folder and the cap only),
each decoded at its stored size in the channel mode training uses; every pixel counts once, so a
large image weighs more than a small one, as in the in-memory rule. PIL's per-band histogram of each
image is summed in integers, which makes the result exact for the images read and independent of
their order. The numbers are cached beside the data (``<root>/.channel_stats/``, keyed by the drawn
files' names, sizes and modification times, so an edited or replaced file is measured again); a
read-only folder is measured on every build instead.

Usage: ``python -m data.stats [data=<option>] [data.key=value ...]`` (e.g. ``data.root=/elsewhere``);
``python -m data.stats data=imagefolder data.root=<folder>`` measures (and caches) a folder's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONF = Path(__file__).resolve().parents[2] / "conf"
CACHE_DIR = ".channel_stats"
STATS_SEED = 0  # the draw of the images measured: fixed, so the numbers are the folder's, not the run's
RULE = 1  # bump when the rule above changes: old cache entries are then ignored

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderStats:
    """An image folder's per-channel statistics and where they came from."""

    mean: list[float]
    std: list[float]
    images: int  # images read
    total: int  # training images in the folder
    cache: Path | None  # the cache file read or written (None: the folder was not writable)
    cached: bool  # read from the cache rather than measured now


def draw(paths: Sequence[str], cap: int, seed: int = STATS_SEED) -> list[str]:
    """At most ``cap`` of ``paths``: a seeded draw, kept in the given (file) order."""
    if len(paths) <= cap:
        return list(paths)
    chosen = np.random.default_rng(seed).choice(len(paths), size=cap, replace=False)
    return [paths[i] for i in sorted(chosen.tolist())]


def histogram_stats(paths: Sequence[str], mode: str) -> tuple[list[float], list[float]]:
    """Mean and std per channel, on the [0, 1] scale, of every pixel of the images at ``paths``.

    Streams one image at a time; PIL's ``histogram()`` gives 256 counts per band, summed as integers.
    """
    from PIL import Image, UnidentifiedImageError

    from data.errors import DataConfigError

    bands = len(mode)  # "RGB" or "L"
    counts = np.zeros((bands, 256), dtype=np.int64)
    for path in paths:
        try:
            with open(path, "rb") as handle, Image.open(handle) as image:
                counts += np.asarray(image.convert(mode).histogram(), dtype=np.int64).reshape(bands, 256)
        except (OSError, UnidentifiedImageError) as error:
            raise DataConfigError("root", path, f"is not a readable image ({error}), and data.normalize=dataset "
                                  "reads it to measure the folder's statistics.",
                                  "Remove or replace the file.") from None
    levels = np.arange(256, dtype=np.int64)
    n = counts.sum(axis=1)  # pixels per band (the same for every band)
    total, squares = counts @ levels, counts @ (levels * levels)  # exact integers
    mean = total / n
    var = (squares * n - total * total) / (n * n)  # exact numerator, one division
    std = np.sqrt(var) / 255
    if (std == 0).any():  # a channel with one value everywhere carries nothing: centre it, do not divide by 0
        log.warning("data.normalize=dataset: channel(s) %s have the same value in every image read; their std "
                    "is set to 1.", np.flatnonzero(std == 0).tolist())
        std[std == 0] = 1.0
    return (mean / 255).tolist(), std.tolist()


def _key(paths: Sequence[str], mode: str) -> str:
    """What the numbers depend on: the rule, the mode, and every measured file's name, size and mtime."""
    digest = hashlib.sha256(f"rule={RULE} mode={mode}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"\n{Path(path).name}|{Path(path).parent.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def folder_stats(root: Path, train_dir: str, paths: Sequence[str], mode: str, cap: int) -> FolderStats:
    """The statistics of the training images ``paths`` (under ``root/train_dir``), cached beside them."""
    chosen = draw(paths, cap)
    cache = root / CACHE_DIR / f"{train_dir}-{mode}-{len(chosen)}-{_key(chosen, mode)}.json"
    try:
        stored = json.loads(cache.read_text())
        return FolderStats(stored["mean"], stored["std"], len(chosen), len(paths), cache, cached=True)
    except (OSError, ValueError, KeyError):
        pass  # no cache yet (or a damaged one): measure
    mean, std = histogram_stats(chosen, mode)
    record = {"mean": mean, "std": std, "images": len(chosen), "training_images": len(paths), "mode": mode,
              "seed": STATS_SEED, "files": [Path(p).relative_to(root / train_dir).as_posix() for p in chosen],
              "rule": "per-channel mean/std on the [0, 1] scale of every pixel of the "
              "drawn training images at their stored size (data/stats.py)"}
    try:
        cache.parent.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cache.parent, suffix=".tmp", delete=False) as handle:
            json.dump(record, handle, indent=1)
        os.replace(handle.name, cache)  # atomic: concurrent builds (DDP ranks, sweeps) never read half a file
    except OSError as error:
        log.info("data.normalize=dataset: cannot cache the statistics in %s (%s); they are measured on "
                 "every build.", cache.parent, error)
        cache = None
    return FolderStats(mean, std, len(chosen), len(paths), cache, cached=False)


def compute(overrides: list[str]) -> tuple[str, list[float], list[float], int]:
    """(option, mean, std, image count) of the training file of the composed data config (an image
    folder: of the images drawn from its ``train/``)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from data.base import InMemoryDataModule, channel_stats
    from data.errors import DataConfigError

    option = next((o.split("=", 1)[1] for o in overrides if o.startswith("data=")), "fashion_mnist")
    rest = [o for o in overrides if not o.startswith("data=")]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+data={option}", *rest])
    if cfg.data.get("normalize") is not None:  # an image folder: measure, whatever the config says
        cfg.data.normalize, cfg.data.mean, cfg.data.std = "dataset", None, None
    datamodule = instantiate(cfg.data)
    stats = getattr(datamodule, "folder_stats", None)  # (data.imagefolder imports this module: no import back)
    if stats is not None:
        return option, stats.mean, stats.std, stats.images
    if not isinstance(datamodule, InMemoryDataModule):
        raise DataConfigError("_target_", cfg.data._target_, "is neither an in-memory dataset nor an image "
                              "folder, so data.stats cannot read it.", "Keep the statistics its config gives.")
    images, _ = datamodule._checked(*datamodule.load_split(train=True), "train")
    mean, std = channel_stats(images)
    return option, mean, std, len(images)


def main(argv: list[str] | None = None) -> int:
    from hydra.errors import InstantiationException

    from data.errors import DataConfigError

    try:
        option, mean, std, count = compute(list(sys.argv[1:] if argv is None else argv))
    except (DataConfigError, InstantiationException) as error:
        cause = error.__cause__ if isinstance(error.__cause__, DataConfigError) else error
        print(f"Error: {' '.join(str(cause).split())}", file=sys.stderr)
        return 2
    print(f"# {option}: {count} training images read, per-channel statistics on the [0, 1] scale")
    print(f"mean: [{', '.join(f'{v:.4f}' for v in mean)}]")
    print(f"std: [{', '.join(f'{v:.4f}' for v in std)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
