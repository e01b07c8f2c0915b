"""The benchmark's outputs: one rich table of ratios (with targets) and a JSON file with everything.

The table shows ratios only, because only ratios survive a shared machine; the JSON keeps the raw
per-round samples too, so a doubtful figure can be checked against its spread.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from experiments.bench.memory import human_bytes

Row = tuple[str, str, str, str, str]  # section, figure, value, target, verdict


def _verdict(value: float, target: float | None, higher_is_better: bool = True) -> str:
    if target is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    ok = value >= target if higher_is_better else value < target
    return "[green]ok[/green]" if ok else "[red]below target[/red]" if higher_is_better else "[red]over target[/red]"


def rows(results: dict[str, Any]) -> list[Row]:
    """Flatten the sections' results into table rows."""
    out: list[Row] = []
    for item in results.get("overhead", []):
        value = item["ratio_ours_over_plain"]
        extra = f", {item['precision']}" + (", channels_last" if item["channels_last"] else "")
        out.append(("1 overhead", f"ours / plain, {item['case']} b{item['batch_size']} ({item['device']}{extra})",
                    f"{value:.3f}", ">= 0.97", _verdict(value, 0.97)))
        probe = item.get("sync_probe")
        if probe:
            per_step = probe["host_reads_per_step"]
            out.append(("1 overhead", f"host reads (device syncs) per step, {item['case']}",
                        f"{per_step:.3f} ({probe['host_reads']} in {probe['steps']} steps)", "< 1", _verdict(per_step, 1.0, False)))
        if "ratio_data_over_ours_training" in item:
            value = item["ratio_data_over_ours_training"]
            out.append(("2 data", f"data path / training images/s, {item['case']}", f"{value:.1f}x", ">= 10x",
                        _verdict(value, 10.0)))
    startup = results.get("startup")
    if startup:
        for key, label in (("help_seconds", "train --help"), ("cfg_job_seconds", "train --cfg job")):
            out.append(("3 start-up", f"{label} (s, median)", f"{startup[key]:.2f}", "< 1.0",
                        _verdict(startup[key], 1.0, False)))
        if "first_step_seconds" in startup:
            out.append(("3 start-up", "command to first training step (s)", f"{startup['first_step_seconds']:.1f}", "", ""))
    for item in results.get("memory", []):
        if "measured_bytes" in item:
            out.append(("4 memory", f"{item['name']} b{item['batch_size']}: accounted / measured ({item['measured_how']})",
                        f"{human_bytes(item['total_bytes'])} / {human_bytes(item['measured_bytes'])}", "", ""))
        elif "largest_batch" in item:
            out.append(("4 memory", f"{item['name']}: largest batch that fits", str(item["largest_batch"]), "", ""))
        else:
            out.append(("4 memory", f"{item['name']} b{item['batch_size']}: accounted (per image fwd "
                        f"{human_bytes(item['activation_bytes_per_image_forward'])})", human_bytes(item["total_bytes"]), "", ""))
    options = results.get("options")
    if options:
        for name, row in options["options"].items():
            value = f"{row['ratio_over_baseline']:.3f}"
            if "compile_seconds" in row:
                value += f" (compile {row['compile_seconds']:.1f} s)"
            out.append(("5 options", f"{name} / baseline, {options['case']} b{options['batch_size']} ({options['device']})",
                        value, "", ""))
    return out


def print_table(results: dict[str, Any], machine: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 140)
    gpu = machine.get("gpu")
    where = gpu["name"] if gpu else f"{machine['cpu']}, {machine['cpus_usable']} cores, {machine['torch_threads']} threads"
    table = Table(title=f"benchmark ({where}; torch {machine['torch']})", title_justify="left")
    for column, justify in (("section", "left"), ("figure", "left"), ("value", "right"), ("target", "right"),
                            ("", "left")):
        table.add_column(column, justify=justify)
    for row in rows(results):
        table.add_row(*row)
    console.print(table)


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """Every ratio under one flat key: what tests and the README read."""
    flat: dict[str, float] = {}
    for item in results.get("overhead", []):
        flat[f"overhead/{item['case']}"] = item["ratio_ours_over_plain"]
        if "ratio_data_over_ours_training" in item:
            flat[f"data/{item['case']}"] = item["ratio_data_over_ours_training"]
    for item in results.get("memory", []):
        if "ratio_measured_over_accounted" in item:
            flat[f"memory/{item['name']}"] = item["ratio_measured_over_accounted"]
    options = results.get("options")
    if options:
        for name, row in options["options"].items():
            flat[f"options/{name}"] = row["ratio_over_baseline"]
    return flat


def write_json(folder: Path, payload: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}.json"
    counter = 1
    while path.exists():  # never overwrite an earlier result
        path = folder / f"{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}-{counter}.json"
        counter += 1
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(payload, indent=2, default=str))
    temporary.replace(path)
    return path
