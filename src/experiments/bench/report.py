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
        low, high = item.get("block_ratio_quartiles", [value, value])
        out.append(("1 overhead", f"ours / plain, {item['case']} b{item['batch_size']} ({item['device']}{extra})",
                    f"{value:.3f} ({low:.3f}-{high:.3f})", ">= 0.98", _verdict(value, 0.98)))  # issue 19 (was 0.97)
        bare = item.get("lightning")
        if bare:
            low, high = bare["block_ratio_quartiles"]
            out.append(("1 overhead", f"bare Lightning / plain, {item['case']} (Lightning's own loop)",
                        f"{bare['ratio_over_plain']:.3f} ({low:.3f}-{high:.3f})", "", ""))
            out.append(("1 overhead", f"ours / bare Lightning, {item['case']} (what we add)",
                        f"{item['ratio_ours_over_lightning']:.3f}", "", ""))
        probe = item.get("sync_probe")
        if probe:
            per_step = probe["reads_per_step_outside_scheduled"]
            out.append(("1 overhead", f"host reads (device syncs) per step outside the every-{probe['every_n_steps']} "
                        f"steps, {item['case']}", f"{per_step:.3f} ({probe['host_reads']} in {probe['steps']} steps, "
                        f"{probe['reads_on_scheduled_steps']} on {probe['scheduled_steps']})", "0",
                        "[green]ok[/green]" if per_step == 0 else "[red]over target[/red]"))
        if "ratio_data_over_ours_training" in item:
            value = item["ratio_data_over_ours_training"]
            out.append(("2 data", f"data path / training images/s, {item['case']}", f"{value:.1f}x", ">= 10x",
                        _verdict(value, 10.0)))
    allocator = results.get("allocator")
    if allocator:
        faults = allocator["page_faults_per_step"]
        out.append(("1 overhead", f"host_allocator reuse / system, plain loop (page faults a step: "
                    f"{faults['reuse']:.0f} vs {faults['system']:.0f})", f"{allocator['ratio_reuse_over_system']:.3f}",
                    "", ""))
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
    out.extend(step_rows(results.get("steps")))
    return out


# Targets of issue 19 (CPU): what our pipeline may add per step over a bare Lightning Trainer.
STEP_TARGETS_US = {"callbacks=default": 100.0, "callbacks=diagnostics": 300.0}


def step_rows(steps: dict[str, Any] | None) -> list[Row]:
    if not steps:
        return []
    out: list[Row] = []
    spread = steps["spread_us_per_step"]
    for name, value in steps["us_per_step"].items():
        low, high = spread[name]
        out.append(("6 steps", f"{name}: us per step ({steps['clock']} clock, range {low:.0f}-{high:.0f})",
                    f"{value:.0f}", "", ""))
    for name, diff in steps["over_lightning_us"].items():
        target = STEP_TARGETS_US.get(name) if steps["device"] == "cpu" else None
        out.append(("6 steps", f"{name} - bare Lightning (us per step, range {diff['min']:.0f} to {diff['max']:.0f})",
                    f"{diff['median']:+.0f}", f"<= {target:.0f}" if target else "",
                    _verdict(diff["median"], target, False) if target else ""))
    for name, diff in steps["over_plain_us"].items():
        out.append(("6 steps", f"{name} - plain loop (us per step)", f"{diff['median']:+.0f}", "", ""))
    counted = steps.get("counts")
    if counted:
        for name, calls in counted["python_calls_per_step"].items():
            out.append(("6 steps", f"{name}: Python calls / torch operators per step (counted)",
                        f"{calls:.0f} / {counted['torch_ops_per_step'][name]:.0f}", "", ""))
    probe = steps.get("sync_probe")
    if probe:
        outside = probe["reads_per_step_outside_scheduled"]
        out.append(("6 steps", f"host reads per step outside the every-{probe['every_n_steps']} steps, diagnostics "
                    f"(steps {probe['first_step']}-{probe['first_step'] + probe['steps'] - 1})", f"{outside:.3f}", "0",
                    "[green]ok[/green]" if outside == 0 else "[red]over target[/red]"))
        out.append(("6 steps", f"host reads on the every-{probe['every_n_steps']} steps {probe['scheduled_steps']}",
                    str(probe["reads_on_scheduled_steps"]), "", ""))
    return out


def print_steps(steps: dict[str, Any], console=None) -> None:
    """The breakdown: microseconds per step by category for each Lightning contender (profiled runs)."""
    breakdown = steps.get("breakdown")
    if not breakdown:
        return
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 160)
    names = list(breakdown["categories"])
    over = breakdown.get("over_lightning_us", {})
    lightning = breakdown.get("lightning_over_plain_us")
    table = Table(title=f"where a step's time goes (us per step: median of {breakdown['rounds']} profiled runs of "
                        f"{breakdown['steps']} steps; the profiler's own {breakdown['profiler_cost_us_per_call']:.1f} "
                        "us per action taken out)", title_justify="left")
    table.add_column("category")
    for name in names:
        table.add_column(name.replace("callbacks=", ""), justify="right")
    if lightning is not None:
        table.add_column("lightning - plain", justify="right")
    for name in over:
        table.add_column(f"{name.replace('callbacks=', '')} - lightning", justify="right")
    steps = breakdown["profiled_us_per_step"]
    for category in breakdown["categories"][names[0]]:
        cells = [f"{breakdown['categories'][n][category]:.1f}" for n in names]
        cells += [f"{lightning[category]:+.1f}"] if lightning is not None else []
        cells += [f"{over[n][category]:+.1f}" for n in over]
        table.add_row(category, *cells)
    totals = [f"{steps[n]:.1f}" for n in names]
    totals += [f"{steps['lightning'] - steps['plain']:+.1f}"] if lightning is not None else []
    totals += [f"{steps[n] - steps['lightning']:+.1f}" for n in over]
    table.add_row("[b]step[/b]", *totals)
    console.print(table)


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
        if "lightning" in item:
            flat[f"overhead_lightning/{item['case']}"] = item["lightning"]["ratio_over_plain"]
            flat[f"overhead_ours_over_lightning/{item['case']}"] = item["ratio_ours_over_lightning"]
        if "ratio_data_over_ours_training" in item:
            flat[f"data/{item['case']}"] = item["ratio_data_over_ours_training"]
    if "allocator" in results:
        flat["allocator/reuse_over_system"] = results["allocator"]["ratio_reuse_over_system"]
    for item in results.get("memory", []):
        if "ratio_measured_over_accounted" in item:
            flat[f"memory/{item['name']}"] = item["ratio_measured_over_accounted"]
    options = results.get("options")
    if options:
        for name, row in options["options"].items():
            flat[f"options/{name}"] = row["ratio_over_baseline"]
    return flat


def step_figures(results: dict[str, Any]) -> dict[str, float]:
    """The steps section's headline figures under flat keys (microseconds per step, host reads)."""
    steps = results.get("steps")
    if not steps:
        return {}
    flat = {f"steps/us_per_step/{name}": value for name, value in steps["us_per_step"].items()}
    flat.update({f"steps/over_lightning_us/{name}": d["median"] for name, d in steps["over_lightning_us"].items()})
    flat.update({f"steps/over_plain_us/{name}": d["median"] for name, d in steps["over_plain_us"].items()})
    if steps.get("sync_probe"):
        flat["steps/host_reads_per_step_outside_scheduled"] = steps["sync_probe"]["reads_per_step_outside_scheduled"]
    for kind in ("python_calls_per_step", "torch_ops_per_step"):
        flat.update({f"steps/{kind}/{name}": value for name, value in (steps.get("counts") or {}).get(kind, {}).items()})
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
