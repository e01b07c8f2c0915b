"""``python -m experiments.summary model=<name>``: the model's table as the papers print it.

One row per stage or module (type, kernel/stride, output H x W x C, parameters, multiply-adds), the
totals, and the paper's figures from ``model.paper`` with the difference in percent. The numbers come
from :func:`models.profile.profile_model`, the same function training uses for ``summary.json``.
Torch is imported inside the task so ``--help`` stays instant; the model is built on the ``meta``
device, so even ResNet-1202 or VGG-19 is summarised in seconds without memory.

``python -m experiments.summary --map [--models A,B] [--no-timing]`` draws the map of the architectures
instead: every model config with a published ImageNet error (``paper.top1_err``) on the lectures' chart
of top-1 error against multiply-adds (marker area proportional to parameters), with latency and
throughput measured on this machine. Its code lives in :mod:`experiments.bench.architecture_map`; it
writes a new folder under ``outputs/architecture_map``.
"""

from __future__ import annotations

from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from experiments.core.errors import exits_cleanly_on_user_error
from experiments.training.validation import require_a_model


def input_shape_of(cfg: DictConfig) -> tuple[int, int, int]:
    size = int(cfg.data.image_size)
    return int(cfg.data.in_channels), size, size


def summarise(cfg: DictConfig) -> dict[str, Any]:
    """Build ``cfg.model`` for ``cfg.data`` and return its profile plus the paper comparison."""
    import torch

    from experiments.training.build import build_model
    from models.profile import compare_with_paper, profile_model

    shape = input_shape_of(cfg)
    device = torch.device("meta") if cfg.get("meta_device", True) else torch.device("cpu")
    with device:
        model = build_model(cfg.model, shape)
    profile = profile_model(model, shape)
    paper = OmegaConf.to_container(cfg.model.paper, resolve=True) if cfg.model.get("paper") else None
    profile["paper"] = paper
    profile["comparison"] = compare_with_paper(profile, paper)
    profile["model"] = str(cfg.model.get("_target_", "?"))
    return profile


def _human(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def render(profile: dict[str, Any], show_rows: bool = True, console=None) -> None:
    """Print the profile with rich: the per-row table, then totals beside the paper's numbers."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    channels, height, width = profile["input_shape"]
    title = f"{profile['model']} on a {height}x{width}x{channels} input"
    if show_rows:
        table = Table(title=title, title_justify="left")
        for column, justify in (("layer", "left"), ("type", "left"), ("kernel/stride", "left"),
                                ("output (HxWxC)", "right"), ("params", "right"), ("mult-adds", "right")):
            table.add_column(column, justify=justify)
        for row in profile["rows"]:
            output = "x".join(str(s) for s in row["output"]) if row["output"] else "- (training only)"
            table.add_row(row["name"], row["type"], row["kernel"], output, f"{row['params']:,}", _human(row["macs"]))
        table.add_section()
        table.add_row("total", "", "", "x".join(map(str, profile["output_shape"] or [])),
                      f"{profile['params']:,}", _human(profile["macs"]))
        console.print(table)
    totals = Table(title=None if show_rows else title, title_justify="left")
    for column in ("", "ours", "paper", "difference"):
        totals.add_column(column, justify="right" if column else "left")
    compared = {c["quantity"]: c for c in profile["comparison"]}
    lines = [("parameters", "params", profile["inference_params"]), ("multiply-adds", "macs", profile["macs"])]
    for label, key, ours in lines:
        comparison = compared.get(key)
        if comparison is None:
            totals.add_row(label, f"{ours:,}", "-", "-")
        else:
            diff = comparison["diff_pct"]
            totals.add_row(label, f"{ours:,}", f"{comparison['paper']:,.0f}", f"{diff:+.2f}%" if diff is not None else "-")
    if profile["inference_params"] != profile["params"]:
        totals.add_row("parameters incl. training-only heads", f"{profile['params']:,}", "", "")
    console.print(totals)
    paper = profile.get("paper") or {}
    if paper.get("title"):
        console.print(f"paper: {paper['title']}")
    native = (paper.get("input_size"), paper.get("num_classes"))
    if paper and native != (height, profile["output_shape"][0] if profile["output_shape"] else None):
        console.print(f"note: the paper's figures are for a {native[0]}x{native[0]} input and {native[1]} classes; "
                      f"compose with e.g. data.image_size={native[0]} data.num_classes={native[1]} "
                      "data.in_channels=3 to compare like with like.")


@hydra.main(version_base="1.3", config_path="../../conf", config_name="summary")
@exits_cleanly_on_user_error
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    require_a_model(cfg, HydraConfig.get().runtime.choices.get("model"))
    _check_memory_settings(cfg)
    render(summarise(cfg), show_rows=bool(cfg.get("rows", True)))
    if cfg.get("memory"):
        render_memory(cfg)


MEMORY_OPTIMIZERS = ("sgd", "sgd_momentum", "adam")  # experiments.bench.memory.OPTIMIZER_SLOTS (no torch here)


def _check_memory_settings(cfg: DictConfig) -> None:
    from experiments.core.errors import UserError

    batch = cfg.get("memory_batch")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise UserError("memory_batch", batch, "must be a positive number of images (or null: data.batch_size).",
                        "Use e.g. memory_batch=128.")
    if str(cfg.get("memory_optimizer", "sgd_momentum")) not in MEMORY_OPTIMIZERS:
        raise UserError("memory_optimizer", cfg.get("memory_optimizer"), "is not an optimizer the bill knows.",
                        f"Use one of: {', '.join(MEMORY_OPTIMIZERS)}.")


def render_memory(cfg: DictConfig) -> None:
    """The lectures' memory bill of one training step (see :mod:`experiments.bench.memory`)."""
    import torch

    from experiments.bench.memory import account
    from experiments.bench.memory import render as render_bill
    from experiments.training.build import build_model

    shape = input_shape_of(cfg)
    with torch.device("meta"):
        model = build_model(cfg.model)
    batch = int(cfg.get("memory_batch") or cfg.data.batch_size)
    optimizer = str(cfg.get("memory_optimizer", "sgd_momentum"))
    render_bill(account(model, shape, batch, optimizer), f"memory of a training step (fp32, {optimizer})")


@exits_cleanly_on_user_error
def map_main(argv: list[str]) -> int:
    """``--map``: an argparse command beside the Hydra one (it takes options, not config overrides)."""
    from experiments.bench.architecture_map import run

    return run(argv)


if __name__ == "__main__":
    import sys

    from experiments.core.fast_help import print_help, wants_app_help

    if "--map" in sys.argv[1:]:
        sys.exit(map_main(sys.argv[1:]))
    if wants_app_help(sys.argv):  # the groups' options without the bases (conf/model/_*.yaml)
        print_help("summary", "summary", sys.argv)
        print("\n--map: the map of the architectures (python -m experiments.summary --map --help)")
        sys.exit(0)
    from experiments.core.fast_help import unknown_key, unknown_option

    unknown = unknown_option(sys.argv[1:]) or unknown_key(sys.argv[1:], config_name="summary")
    if unknown:  # one paragraph, not Hydra's listing of every option
        import textwrap

        print(textwrap.fill(unknown, width=100), file=sys.stderr)
        sys.exit(2)
    main()
