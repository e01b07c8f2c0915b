"""The zoo's models that have a published ImageNet top-1 error, each composed at its paper's setting.

A model is on the architecture map because of its config alone: every ``conf/model/<name>.yaml``
whose composed ``paper`` block has ``top1_err`` is found here, with no list of models in the code, so
a config added tomorrow is on the map tomorrow. Each config is composed once (``conf/summary.yaml``,
the summary command's own config) with the data the paper used: ``paper.input_size`` pixels square,
three channels, ``paper.num_classes`` classes; ``data=cifar10`` only carries those three numbers.

Only Hydra and OmegaConf are imported here: a misspelt ``--models`` is refused before torch loads.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from experiments.core.errors import UserError
from experiments.core.locations import CONF_DIR

TOP1_KEY = "top1_err"
CROPS_KEY = "top1_crops"
MODELS_OPTION = "--models"


@dataclass(frozen=True)
class ZooModel:
    """One model config at its paper's input size, with its ``paper`` block as plain data."""

    name: str
    cfg: DictConfig
    paper: dict[str, Any]

    @property
    def top1_err(self) -> float:
        return float(self.paper[TOP1_KEY])

    @property
    def crops(self) -> int:
        """Test crops behind ``top1_err``: 1 (single crop) unless the config says the paper only has more."""
        return int(self.paper.get(CROPS_KEY) or 1)

    @property
    def input_size(self) -> int:
        return int(self.cfg.data.image_size)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return int(self.cfg.data.in_channels), self.input_size, self.input_size

    @property
    def family(self) -> str:
        """The class that builds it (``ResNet``, ``VGG``, ...): the map's colour, read from ``_target_``."""
        return str(self.cfg.model.get("_target_", "?")).rpartition(".")[2]


def model_names(conf_dir: Path = CONF_DIR) -> list[str]:
    """The options of the ``model`` group (``_``-prefixed bases left out), sorted."""
    return sorted(p.stem for p in (conf_dir / "model").glob("*.yaml") if not p.stem.startswith("_"))


def resolve_names(patterns: Sequence[str], names: Sequence[str]) -> list[str]:
    """The model names that ``patterns`` (names or shell patterns such as ``resnet*``) pick, in order,
    without repeats; a pattern that picks nothing is refused with the closest names."""
    chosen: list[str] = []
    for pattern in patterns:
        matches = [pattern] if pattern in names else fnmatch.filter(names, pattern)
        if not matches:
            close = difflib.get_close_matches(pattern, names, n=4, cutoff=0.5)
            hint = f" Closest: {', '.join(close)}." if close else ""
            raise UserError(MODELS_OPTION, pattern, "names no model config (conf/model/<name>.yaml).",
                            f"Give model names or shell patterns (resnet*), comma-separated.{hint}")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def compose_at_paper_setting(names: Sequence[str], conf_dir: Path = CONF_DIR) -> list[ZooModel]:
    """Each named model composed with the paper's input (size, 3 channels, classes) and type-checked."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from experiments.training import schema

    models = []
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        for name in names:
            try:
                cfg = compose(config_name="summary", overrides=[f"model={name}", "data=cifar10"])
            except HydraException as error:
                raise UserError("model", name, f"does not compose: {' '.join(str(error).split())}",
                                f"Fix conf/model/{name}.yaml, or leave it out with {MODELS_OPTION}.") from None
            paper = OmegaConf.to_container(cfg.model.paper, resolve=True) if cfg.model.get("paper") else {}
            with open_dict(cfg):
                cfg.data.image_size = int(paper.get("input_size") or cfg.data.image_size)
                cfg.data.num_classes = int(paper.get("num_classes") or cfg.data.num_classes)
                cfg.data.in_channels = 3
            schema.check(cfg)  # a top1_err of "n/a" or 150 is refused here, naming the key
            models.append(ZooModel(name, cfg, paper))
    return models


def select(patterns: Sequence[str] | None = None, conf_dir: Path = CONF_DIR) -> list[ZooModel]:
    """The models for the map: all with ``paper.top1_err``, or those ``patterns`` pick.

    A model named outright that has no published error is refused (it would silently be missing from
    the map); a shell pattern keeps the models it matches that have one.
    """
    names = model_names(conf_dir)
    chosen = resolve_names(patterns, names) if patterns else names
    models = compose_at_paper_setting(chosen, conf_dir)
    published = [m for m in models if m.paper.get(TOP1_KEY) is not None]
    named = set(patterns or ())
    missing = [m.name for m in models if m.name in named and m.paper.get(TOP1_KEY) is None]
    if missing:
        raise UserError(MODELS_OPTION, ",".join(missing), f"has no paper.{TOP1_KEY} (no published ImageNet "
                        "top-1 error in its config), so it has no place on the map.",
                        f"Leave it out, or add paper.{TOP1_KEY} to conf/model/{missing[0]}.yaml with a "
                        "comment naming the paper's table.")
    if not published:
        picked = ",".join(patterns) if patterns else "(all)"
        raise UserError(MODELS_OPTION, picked, f"picks no model config with paper.{TOP1_KEY}.",
                        f"Choose models with a published ImageNet error ({MODELS_OPTION} resnet*,vgg16).")
    return published
