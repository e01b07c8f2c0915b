"""Recompute the per-channel mean/std that a data config stores: ``python -m data.stats data=cifar10``.

What the numbers are (the same rule for every dataset): the mean and std, per channel on the [0, 1]
scale, of the stored uint8 images of the WHOLE training file (the hold-out validation images included,
so the numbers do not change with ``data.val_size`` or ``data.split_seed``), at their native size,
before any resize or augmentation. For ``digits`` that means the 8x8 images, not the upsampled ones.
``tests/data/test_stats.py`` checks the YAML numbers against this to 3 decimals.

Usage: ``python -m data.stats [data=<option>] [data.key=value ...]`` (e.g. ``data.root=/elsewhere``).
"""

from __future__ import annotations

import sys
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "conf"


def compute(overrides: list[str]) -> tuple[str, list[float], list[float], int]:
    """(option, mean, std, image count) of the training file of the composed data config."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from data.base import InMemoryDataModule, channel_stats
    from data.errors import DataConfigError

    option = next((o.split("=", 1)[1] for o in overrides if o.startswith("data=")), "fashion_mnist")
    rest = [o for o in overrides if not o.startswith("data=")]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(overrides=[f"+data={option}", *rest])
    datamodule = instantiate(cfg.data)
    if not isinstance(datamodule, InMemoryDataModule):
        raise DataConfigError("_target_", cfg.data._target_, "is not an in-memory dataset, so data.stats "
                              "cannot hold it as one tensor.", "Keep the published statistics (ImageNet's).")
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
    print(f"# {option}: {count} training images, per-channel statistics on the [0, 1] scale")
    print(f"mean: [{', '.join(f'{v:.4f}' for v in mean)}]")
    print(f"std: [{', '.join(f'{v:.4f}' for v in std)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
