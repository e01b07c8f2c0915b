"""``--help`` for the Hydra apps, without Hydra's cost of composing every option of every group.

Hydra builds its help page by loading each option of each config group, its own plugin groups
included (over 100 with the sweeper and launcher plugins): more than a second before a word is
printed. This prints the same two sections, the app's groups with their options (a directory scan)
and the composed config (one composition), in a fraction of that. ``--hydra-help`` is still Hydra's.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf, open_dict

from experiments.core.locations import CONF_DIR as CONF


def wants_app_help(argv: list[str]) -> bool:
    return any(a in ("--help", "-h") for a in argv[1:]) and "--hydra-help" not in argv


def is_base(path: Path) -> bool:
    """A config named ``_<name>.yaml`` is a base that options inherit (``defaults: [_<name>, _self_]``),
    e.g. ``conf/model/_resnet_cifar.yaml``: it composes, but it is not an option."""
    return path.stem.startswith("_")


def config_groups(conf: Path = CONF) -> dict[str, list[str]]:
    """Each app config group (a folder of conf/, nested ones as a/b) with its options, sorted; bases left out."""
    groups: dict[str, list[str]] = {}
    for path in sorted(conf.rglob("*.yaml")):
        group = path.parent.relative_to(conf).as_posix()
        if group != "." and not group.startswith("hydra") and not is_base(path):
            groups.setdefault(group, []).append(path.stem)
    return groups


# Groups whose options are registered in code by Hydra plugins (our sweeper's samplers and pruners, the
# launchers) rather than written in conf/: checked against Hydra's ConfigStore, which discovering the
# plugins fills. Hydra itself answers a mistyped one with exit 1 and a listing.
PLUGIN_GROUPS = ("hydra/sweeper", "hydra/sweeper/sampler", "hydra/sweeper/pruner", "hydra/launcher")


def plugin_group_options(group: str) -> list[str]:
    """The options of one of PLUGIN_GROUPS (``hydra/sweeper/pruner``: none, median, sha, hyperband)."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # imports every hydra_plugins package, which registers its configs
    return sorted(name.removesuffix(".yaml") for name in ConfigStore.instance().list(group) if name.endswith(".yaml"))


def group_options(group: str, conf: Path = CONF) -> list[str]:
    """The options of one config group (``model``: the model names), bases left out."""
    return sorted(p.stem for p in (conf / group).glob("*.yaml") if not is_base(p))


def print_help(app: str, config_name: str, argv: list[str], stream=sys.stdout) -> None:
    from hydra import compose, initialize_config_dir

    overrides = [a for a in argv[1:] if not a.startswith("-")]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name=app):
        cfg = compose(config_name=config_name, overrides=overrides)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    lines = [f"{app} is powered by Hydra.", "", "== Configuration groups ==",
             "Compose your configuration from those groups (group=option)", ""]
    lines += [f"{group}: {', '.join(options)}" for group, options in config_groups().items()]
    lines += ["", "", "== Config ==", "Override anything in the config (foo.bar=value)", "",
              OmegaConf.to_yaml(cfg), "Powered by Hydra (https://hydra.cc)",
              "Use --hydra-help to view Hydra specific help"]
    print("\n".join(lines), file=stream)


_SIMPLE = re.compile(r"^[A-Za-z0-9_.-]+$")


def unknown_option(argv: list[str], conf: Path = CONF) -> str | None:
    """One paragraph for a ``group=option`` whose option does not exist (Hydra prints its 60-line listing
    of every option instead), with the closest names; None when every choice exists. Sweeps
    (``model=a,b``) are checked name by name; ``glob(...)``, ``null`` and interpolations are Hydra's."""
    groups = config_groups(conf)
    for argument in argv:
        if argument.startswith("-") or "=" not in argument:
            continue
        group, value = argument.lstrip("+~").split("=", 1)
        if (group not in groups and group not in PLUGIN_GROUPS) or not value or value == "null":
            continue
        names = [v.strip() for v in value.strip("[]").split(",")]
        if not all(_SIMPLE.match(n) for n in names):
            continue  # glob(...), range(...), ${...}: Hydra's syntax
        options = groups[group] if group in groups else plugin_group_options(group)
        for name in names:
            if name not in options:
                close = difflib.get_close_matches(name, options, n=4, cutoff=0.5)
                hint = f"Did you mean {', '.join(close)}? " if close else ""
                if group in PLUGIN_GROUPS:
                    return (f"Error: {group}={name}: there is no such option of {group} (a Hydra plugin's config "
                            f"group). {hint}The options are: {', '.join(options)}.")
                return (f"Error: {group}={name}: there is no such {group} (conf/{group}/{name}.yaml does not exist). "
                        f"{hint}`python -m experiments.train --help` lists every {group}.")
    return None


def unknown_key(argv: list[str], config_name: str = "train", conf: Path = CONF) -> str | None:
    """One paragraph for a ``key=value`` override whose key the config does not have (Hydra answers
    "Could not override ... not in struct" with exit 1), with the closest keys; None when all exist.
    ``+key=value`` adds a key on purpose and is left alone, as are Hydra's own ``hydra.*`` keys."""
    from hydra import compose, initialize_config_dir
    from omegaconf import DictConfig

    groups = config_groups(conf)
    choices, dotted = [], []
    for argument in argv:
        if argument.startswith("-") or "=" not in argument or argument.startswith(("+", "~")):
            continue
        key, value = argument.split("=", 1)
        if key in groups or "/" in key:
            choices.append(f"{key}={value.split(',')[0]}")  # a sweep's first option stands for all
        elif not key.startswith("hydra.") and "." in key:
            dotted.append((key, value))
    if not dotted:
        return None
    try:
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=choices)
    except Exception:
        return None  # a composition problem of another kind: Hydra's own message says it
    for key, value in dotted:
        node: Any = cfg
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if not isinstance(node, DictConfig):
                break  # inside a list or a plain value: Hydra's own checks
            if part not in list(node.keys()):  # (`in` is False for a key left at ???)
                where = ".".join(parts[:depth]) or "the top level"
                close = difflib.get_close_matches(part, [str(k) for k in node], n=3, cutoff=0.6)
                names = [".".join([*parts[:depth], c]) for c in close]
                hint = f"Did you mean {', '.join(names)}? " if close else ""
                return (f"Error: {key}={value}: there is no key {part!r} under {where}. {hint}"
                        f"`python -m experiments.{config_name} --cfg job` shows every key; +{key}={value} adds a new one.")
            child = node._get_node(part)
            node = child if isinstance(child, DictConfig) and not child._is_missing() else None
    return None
