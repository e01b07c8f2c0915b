"""``python -m experiments.summary --map``: the map of the architectures, with their speed on this machine.

For every model config with a published ImageNet top-1 error (``paper.top1_err``, found by
:mod:`.zoo_models`): the parameters and multiply-adds of the network built at the paper's input size
(:func:`models.profile.profile_model`, on the ``meta`` device) beside the paper's own figures, the
lectures' chart of error against multiply-adds with marker area proportional to parameters
(:mod:`.architecture_map_figure`), and, unless ``--no-timing``, the inference latency and throughput
at batch 1 and batch 64 measured here (:mod:`.inference_timing`: batch 1 at the paper's size, batch 64
at the largest size the ``--budget`` allows, the size recorded).

Writes ``architecture_map.{png,svg,csv,json}`` into a new folder ``<--out>/<date>_<time>`` (``-2``,
``-3``, ... when that exists: nothing is ever overwritten) and prints the tables. A bad option is
refused in one paragraph, exit status 2, before anything is measured or written.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from experiments.bench.zoo_models import MODELS_OPTION, ZooModel, select
from experiments.core.errors import UserError

PROG = "python -m experiments.summary"
DESCRIPTION = """The map of the architectures: every model config with a published ImageNet top-1 error
(paper.top1_err) on the chart of top-1 error against multiply-adds (log scale), marker area
proportional to parameters. Parameters and multiply-adds are counted on the network built at the
paper's input size and printed beside the paper's figures. Unless --no-timing, inference latency and
throughput are measured here at batch 1 (the paper's input size) and batch 64 (the largest of the
paper's size, its half, quarter, ... that the --budget allows; the size is printed). Writes the figure
(PNG, SVG) and the numbers (CSV, JSON) into a new folder under --out."""
STEM = "architecture_map"
BATCHES = (1, 64)
DEFAULT_OUT = Path("outputs") / STEM
TIMING_KEYS = ("size", "rebuilt", "latency_ms", "images_per_s", "passes")
CSV_COLUMNS = ("model", "family", "top1_err", "top1_crops", "input_size", "params", "paper_params", "params_diff_pct",
               "macs", "paper_macs", "macs_diff_pct", "marker_area_pt2",
               *(f"b{b}_{key}" for b in BATCHES for key in TIMING_KEYS))


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as a :class:`UserError` (one paragraph, exit 2)."""

    argv: list[str] = []

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError("summary", " ".join(self.argv), f"{message}.",
                        f"See `{PROG} --map --help` (key=value overrides belong to the summary without --map).")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog="examples:\n  python -m experiments.summary --map\n"
                            "  python -m experiments.summary --map --no-timing\n"
                            "  python -m experiments.summary --map --models 'resnet*,vgg16,mobilenet_v2'")
    parser.add_argument("--map", action="store_true", required=True, help="draw the map (this command)")
    parser.add_argument(MODELS_OPTION, default=None, metavar="A,B,...",
                        help="only these model configs (names or shell patterns, comma-separated); "
                             "default: every config with paper.top1_err")
    parser.add_argument("--no-timing", action="store_true", help="skip the latency/throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per batch size, at least (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first (default 1)")
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds for all batch-64 timing together; decides the input size of that batch "
                             "(default 120)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder that receives a new <date>_<time> folder (default {DEFAULT_OUT})")
    parser.argv = list(argv)
    args = parser.parse_args(argv)
    for key, value, low, fix in (("--rounds", args.rounds, 1, "--rounds 3"), ("--warmup", args.warmup, 0, "--warmup 1")):
        if value < low:
            raise UserError(key, value, f"must be at least {low}.", f"Use e.g. {fix}.")
    if not math.isfinite(args.budget) or args.budget <= 0:
        raise UserError("--budget", args.budget, "must be a positive number of seconds.", "Use e.g. --budget 120.")
    if args.models is not None:
        args.models = [m.strip() for m in args.models.split(",") if m.strip()]
        if not args.models:
            raise UserError(MODELS_OPTION, "", "names no model.", f"Use e.g. {MODELS_OPTION} resnet18,vgg16.")
    return args


def profile_point(model: ZooModel) -> dict[str, Any]:
    """The map's figures of one model: ours from the network built at the paper's input size (meta
    device: no memory, no arithmetic), the paper's, and the published error."""
    import torch

    from experiments.bench.architecture_map_figure import marker_area
    from experiments.training.build import build_model
    from models.profile import compare_with_paper, profile_model

    with torch.device("meta"):
        network = build_model(model.cfg.model, model.input_shape)
    profile = profile_model(network, model.input_shape)
    compared = {c["quantity"]: c for c in compare_with_paper(profile, model.paper)}
    params = profile["inference_params"]  # without training-only heads, as the papers count
    return {
        "model": model.name, "family": model.family, "title": model.paper.get("title"),
        "top1_err": model.top1_err, "top1_crops": model.crops, "input_size": model.input_size,
        "num_classes": profile["output_shape"][0] if profile["output_shape"] else None,
        "params": params, "params_with_training_heads": profile["params"], "macs": profile["macs"],
        "paper_params": model.paper.get("params"), "paper_macs": model.paper.get("macs"),
        "params_diff_pct": compared.get("params", {}).get("diff_pct"),
        "macs_diff_pct": compared.get("macs", {}).get("diff_pct"),
        "marker_area_pt2": marker_area(params), "paper": model.paper, "timing": None,
    }


def time_point(model: ZooModel, rounds: int, warmup: int, budget_per_pass: float) -> dict[str, Any]:
    """Latency and throughput at batch 1 (paper's size) and batch 64 (the size the budget allows)."""
    import gc

    import torch

    from experiments.bench.inference_timing import time_forward, time_within_budget
    from experiments.training.build import build_model

    torch.manual_seed(0)
    network = build_model(model.cfg.model)  # no input check: the count on the meta device made it
    channels = model.input_shape[0]
    single = time_forward(network, 1, model.input_size, channels, warmup, rounds)
    batched = time_within_budget(network, BATCHES[1], model.input_size, single.median_s, budget_per_pass,
                                 channels, warmup, rounds, rebuild=lambda size: build_at_size(model, size))
    del network
    gc.collect()
    return {f"batch_{t.batch}": t.as_dict() for t in (single, batched)}


def build_at_size(model: ZooModel, size: int):
    """The model's config built for ``size`` pixels (``data.image_size``, which the configs of networks
    with a size-bound classifier pass on as ``input_size``); its refusal becomes a ``ValueError``."""
    from experiments.training.build import build_model

    cfg = model.cfg.copy()
    cfg.data.image_size = size
    try:
        return build_model(cfg.model)
    except UserError as error:
        raise ValueError(str(error)) from None


def csv_row(point: dict[str, Any]) -> dict[str, Any]:
    row = {key: point.get(key) for key in CSV_COLUMNS}
    for batch in BATCHES:
        timing = (point.get("timing") or {}).get(f"batch_{batch}") or {}
        for key in TIMING_KEYS:
            row[f"b{batch}_{key}"] = timing.get(key)
    return row


def write(folder: Path, points: list[dict[str, Any]], meta: dict[str, Any]) -> list[Path]:
    """The figure (PNG, SVG), the numbers (CSV, one row per model; JSON with every timed pass)."""
    from experiments.bench.architecture_map_figure import draw, save

    paths = save(draw(points), folder, STEM)
    with (folder / f"{STEM}.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_row(p) for p in points)
    (folder / f"{STEM}.json").write_text(json.dumps({**meta, "points": points}, indent=1, default=str) + "\n")
    return [*paths, folder / f"{STEM}.csv", folder / f"{STEM}.json"]


def _number(value: float | None, scale: float) -> str:
    return "-" if value is None else f"{float(value) / scale:,.2f}"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f}%"


def render(points: list[dict[str, Any]], meta: dict[str, Any], console=None) -> None:
    """The map's numbers as a table; then, when timed, latency and throughput at both batch sizes."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="The map: published ImageNet top-1 error; parameters and multiply-adds of the built network "
                        "(ours) beside the paper's", title_justify="left")
    for column in ("model", "top-1 err %", "crops", "input", "params M", "paper", "diff", "mult-adds G", "paper", "diff"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for p in points:
        table.add_row(p["model"], f"{p['top1_err']:.2f}", str(p["top1_crops"]), f"{p['input_size']}",
                      _number(p["params"], 1e6), _number(p["paper_params"], 1e6), _percent(p["params_diff_pct"]),
                      _number(p["macs"], 1e9), _number(p["paper_macs"], 1e9), _percent(p["macs_diff_pct"]))
    console.print(table)
    timed = [p for p in points if p.get("timing")]
    if not timed:
        return
    machine = meta.get("machine") or {}
    timing = Table(title=f"Inference on this machine ({machine.get('cpu', '?')}, {machine.get('torch_threads', '?')} "
                         f"thread(s), fp32, eval, no grad): warm-up {meta['settings']['warmup']}, median of at least "
                         f"{meta['settings']['rounds']} passes; 'input' is the size timed", title_justify="left")
    for column in ("model", *(f"{label} b{b}" for b in BATCHES for label in ("input", "ms/batch", "img/s"))):
        timing.add_column(column, justify="left" if column == "model" else "right")
    for p in timed:
        cells = []
        for batch in BATCHES:
            t = p["timing"][f"batch_{batch}"]
            cells += [f"{t['size']}{'*' if t.get('rebuilt') else ''}", f"{t['latency_ms']:,.1f}", f"{t['images_per_s']:,.1f}"]
        timing.add_row(p["model"], *cells)
    console.print(timing)
    if any(t.get("rebuilt") for p in timed for t in p["timing"].values()):
        console.print("* built for that input size: the paper's convolutions, the first FC layer taking the smaller map")


def profile_all(models: list[ZooModel], named: set[str], log) -> tuple[list[dict[str, Any]], list[ZooModel], list[dict]]:
    """The points of ``models``, the models kept, and those left out. A config that does not build
    (another engineer's work in progress) is left out of a map of everything, with its reason printed
    and recorded, rather than stopping the map; a model the user named is still refused."""
    from experiments.core.errors import user_error_types

    points, kept, left_out = [], [], []
    for index, model in enumerate(models, 1):
        log(f"[{index}/{len(models)}] {model.name}: counting at {model.input_size}x{model.input_size}")
        try:
            points.append(profile_point(model))
        except user_error_types() as error:
            if model.name in named or len(models) == 1:
                raise
            left_out.append({"model": model.name, "reason": " ".join(str(error).split())})
            log(f"    left out: {left_out[-1]['reason']}")
            continue
        kept.append(model)
    if not kept:
        raise UserError(MODELS_OPTION, ",".join(m.name for m in models), "picks no config that builds.",
                        f"See the reasons above; fix the configs or choose others with {MODELS_OPTION}.")
    return points, kept, left_out


def run(argv: list[str]) -> int:
    """Parse, select, measure, then write and print; returns the exit status."""
    from experiments.core.output_folders import check_can_create, new_folder

    args = parse_args(argv)
    check_can_create(args.out, "--out")
    models = select(args.models)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731 - progress of a minutes-long command
    started = time.time()
    points, models, left_out = profile_all(models, named=set(args.models or ()), log=log)
    meta: dict[str, Any] = {"command": " ".join([PROG, *argv]),
                            "settings": {"rounds": args.rounds, "warmup": args.warmup, "budget_s": args.budget,
                                         "batches": list(BATCHES), "timing": not args.no_timing},
                            "machine": None, "left_out": left_out}
    if not args.no_timing:
        import torch

        from experiments.bench.common import machine_facts

        meta["machine"] = machine_facts()
        per_pass = args.budget / (len(models) * (args.warmup + args.rounds))
        meta["settings"]["budget_per_batch64_pass_s"] = per_pass
        for index, (model, point) in enumerate(zip(models, points), 1):
            log(f"[{index}/{len(models)}] {model.name}: timing on {torch.get_num_threads()} thread(s)")
            point["timing"] = time_point(model, args.rounds, args.warmup, per_pass)
    points.sort(key=lambda p: (p["macs"], p["model"]))
    meta["seconds"] = round(time.time() - started, 1)
    folder = new_folder(args.out, time.strftime("%Y-%m-%d_%H-%M-%S"))
    paths = write(folder, points, meta)
    render(points, meta)
    for entry in left_out:
        print(f"left out: {entry['model']} ({entry['reason']})")
    print(f"written: {', '.join(str(p) for p in paths)}  ({meta['seconds']:.0f} s)")
    return 0
