"""``python -m experiments.compare <multirun folder or run folders...> [--by KEYS] [--html] [--out DIR]``

Compares finished (or unfinished) runs from their run folders only (``metrics.csv``, ``summary.json``,
``config.yaml``; see :mod:`experiments.core.runs`), with no dashboard:

* ``curves.png`` / ``curves.svg``: error curves of all runs on shared axes, training error thin and
  dashed, validation error bold, coloured by group (``--by``); a group of several seeds is drawn as its
  mean with a shaded band of one standard deviation. When ``model.residual`` is a grouping
  key, plain nets are drawn on the left and residual nets on the right, as in He et al. 2016, Fig. 6;
* ``runs.csv`` / ``runs.md``: final and best train/val/test error, params, multiply-adds and wall
  time per run; ``groups.csv`` / ``groups.md``: per configuration (same group values, any seed) the
  paper's "best (mean ± std)" of every error (std: sample standard deviation, n - 1);
* ``degradation.json``: when the runs hold plain and residual nets of two or more depths, whether the
  deeper plain net's final training error is above the shallower one's by more than the seeds' spread
  and whether the deeper residual net's is not, with every seed's number and the runs that collapsed
  to chance after learning (one line printed; the rule is in :func:`run_table.degradation_check`);
* ``notes.txt``: runs with missing metrics or unequal epochs (plotted as far as they go);
* with ``--html``: ``report.html``, one self-contained file with all of the above, the composed configs
  and the command lines.

``--by`` takes dotted config keys (``model.depth,model.residual``) or config groups (``model``: the
option chosen). Without it the keys that the runs' overrides vary (seed aside) are used.
Outputs go to ``<folder>/compare/`` for one folder, else ``outputs/compare/<time>/`` (``--out`` to choose).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.core.errors import EXIT_USER_ERROR, UserError
from experiments.core.errors import report as report_error
from experiments.core.output_folders import new_folder
from experiments.core.runs import RunFolder
from experiments.studies import run_table as rt
from experiments.studies.layer_responses import plot_layer_responses

RESIDUAL_KEY = "model.residual"


@dataclass
class Comparison:
    """What one comparison produced (paths under ``out``) and its numbers."""

    out: Path
    keys: list[str]
    runs: list[rt.Run]
    groups: list[tuple]
    run_rows: list[dict[str, Any]]
    group_rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    degradation: dict[str, Any] | None = None
    figure_png: Path | None = None
    figure_svg: Path | None = None
    layer_responses: Path | None = None  # He et al. Fig. 7 across runs, when the runs recorded it
    html: Path | None = None


# ---------------------------------------------------------------------------------------------- figure


def mean_curve(runs: list[rt.Run], column: str, x: str = "epoch") -> tuple[list[float], list[float], list[float]]:
    """Mean and sample std of ``column`` over ``runs`` at every x any of them reached (std 0 where one did).

    Seeds of one configuration are drawn as one line with a shaded band (the paper's figures draw one run;
    a band shows whether two lines differ by more than the seeds do).
    """
    values: dict[float, list[float]] = {}
    for run in runs:
        for at, y in zip(*run.series(column, x), strict=True):
            values.setdefault(at, []).append(y)
    xs = sorted(values)
    means = [statistics.fmean(values[at]) for at in xs]
    stds = [statistics.stdev(values[at]) if len(values[at]) > 1 else 0.0 for at in xs]
    return xs, means, stds



def plot_curves(runs: list[rt.Run], keys: list[str], groups: list[tuple], out: Path, x: str = "epoch",
                title: str = "") -> tuple[Path, Path] | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    drawable = [r for r in runs if r.epochs]
    if not drawable:
        return None
    split = RESIDUAL_KEY in keys
    colour_keys = tuple(k for k in keys if k != RESIDUAL_KEY) if split else tuple(keys)
    colour_groups = list(dict.fromkeys(tuple(v for k, v in zip(keys, g, strict=False) if k in colour_keys)
                                       for g in groups))
    palette = plt.get_cmap("tab10").colors
    colour = {g: palette[i % len(palette)] for i, g in enumerate(colour_groups)}
    panels: list[tuple[str, list[rt.Run]]]
    if split:
        index = keys.index(RESIDUAL_KEY)
        plain = [r for r in drawable if r.group[index] is False or str(r.group[index]).lower() == "false"]
        residual = [r for r in drawable if r not in plain]
        panels = [("plain", plain), ("residual (ResNet)", residual)]
    else:
        panels = [(title or "error curves", drawable)]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.6), sharey=True, squeeze=False)
    for ax, (panel_title, members) in zip(axes[0], panels, strict=False):
        by_group: dict[tuple, list[rt.Run]] = {}
        for run in members:
            by_group.setdefault(tuple(v for k, v in zip(keys, run.group, strict=False) if k in colour_keys),
                                []).append(run)
        for key, group_runs in by_group.items():
            c = colour[key]
            label = rt.group_label(list(colour_keys), key)
            if len(group_runs) > 1:
                label += f" (mean ± std, {len(group_runs)} runs)"
            labelled = False
            for column, style, width in (("val/err", "-", 2.2), ("train/err", "--", 1.0)):
                xs, mean, std = mean_curve(group_runs, column, x)
                if not xs:
                    continue
                ax.plot(xs, mean, linestyle=style, linewidth=width, color=c, label=None if labelled else label,
                        marker="o" if len(xs) == 1 else None)
                labelled = True
                if len(group_runs) > 1:
                    ax.fill_between(xs, [m - d for m, d in zip(mean, std, strict=True)],
                                    [m + d for m, d in zip(mean, std, strict=True)], color=c, alpha=0.18, linewidth=0)
        ax.set_title(panel_title)
        ax.set_xlabel("epoch" if x == "epoch" else "iteration")
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        handles += [Line2D([], [], color="gray", linestyle="--", linewidth=1.0, label="train error (dashed)"),
                    Line2D([], [], color="gray", linestyle="-", linewidth=2.2, label="val error (bold)")]
        ax.legend(handles=handles, fontsize=8)
    axes[0][0].set_ylabel("error (%)")
    if title and split:
        fig.suptitle(title)
    fig.tight_layout()
    png, svg = out / "curves.png", out / "curves.svg"
    fig.savefig(png, dpi=120)
    fig.savefig(svg)
    plt.close(fig)
    return png, svg


# ---------------------------------------------------------------------------------------------- output


def _print(comparison: Comparison, headers_body_runs, headers_body_groups) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, Console().width))
    for title, (headers, body) in (("Runs", headers_body_runs), ("Configurations", headers_body_groups)):
        table = Table(title=title, show_lines=False)
        for h in headers:
            table.add_column(h, overflow="fold")
        for row in body:
            table.add_row(*row)
        console.print(table)
    for note in comparison.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if comparison.degradation:
        console.print(comparison.degradation["verdict"], highlight=False)
    if comparison.figure_png:
        console.print(f"figure: {comparison.figure_png} (+ .svg)", highlight=False)
    if comparison.layer_responses:
        console.print(f"layer responses (He et al. Fig. 7): {comparison.layer_responses}", highlight=False)
    console.print(f"tables: {comparison.out / 'runs.csv'}, {comparison.out / 'groups.csv'} (+ .md)", highlight=False)
    if comparison.html:
        console.print(f"report: {comparison.html}", highlight=False)


def write_html(comparison: Comparison, path: Path, title: str, folders: list[Path]) -> Path:
    from experiments.studies.html_report import HtmlReport

    report = HtmlReport(title)
    report.paragraph("Source: " + ", ".join(str(f) for f in folders) + f" — {len(comparison.runs)} run(s), "
                     f"grouped by {', '.join(comparison.keys) or 'nothing (every run alike)'}.")
    if comparison.degradation:
        report.paragraph(comparison.degradation["verdict"], css="verdict")
    for note in comparison.notes:
        report.paragraph(note, css="note")
    if comparison.figure_png:
        report.heading("Error curves")
        report.figure(comparison.figure_png, "Training error (thin, dashed) and validation error (bold) per epoch.")
    if comparison.layer_responses:
        report.heading("Layer responses (He et al. 2016, Fig. 7)")
        report.figure(comparison.layer_responses, "Std of each 3x3 layer's response after BN, before the nonlinearity "
                      "and the addition: by layer index (top) and sorted (bottom); plain dashed, ResNet solid.")
    report.heading("Configurations: best (mean ± std) over seeds")
    report.table(*rt.display_group_table(comparison.group_rows, comparison.keys))
    report.heading("Runs")
    report.table(*rt.display_run_table(comparison.run_rows, comparison.keys))
    for folder in folders:
        sweep_config = folder / "multirun.yaml"
        if sweep_config.is_file():
            report.heading(f"Sweep config ({folder.name}/multirun.yaml)")
            report.pre(sweep_config.read_text())
    report.heading("Commands and composed configs")
    for run in comparison.runs:
        folder = RunFolder(run.path)
        config_text = _text(folder.config_file, "(no config.yaml)")
        blocks = [("command", run.command), ("overrides", "\n".join(run.overrides) or "(none)"),
                  ("config.yaml", config_text)]
        if folder.failure_file.is_file():
            blocks.append(("failure.json", _text(folder.failure_file, "(unreadable)")))
        report.details(f"{run.name} — {run.status}", blocks)
    return report.write(path)


def _text(path: Path, missing: str) -> str:
    try:
        return path.read_text(errors="replace") if path.is_file() else missing
    except OSError as error:
        return f"(unreadable: {error})"


def default_out(folders: list[Path]) -> Path:
    """``<folder>/compare`` for one folder (``compare-2``, ... when that exists: a report is never
    overwritten), else a new ``outputs/compare/<time>`` folder."""
    if len(folders) == 1:
        return new_folder(folders[0], "compare")
    return new_folder(Path("outputs") / "compare", time.strftime("%Y-%m-%d_%H-%M-%S"))


def compare(folders: list[Path], by: list[str] | None = None, html: bool = False, out: Path | None = None,
            x: str = "epoch", title: str | None = None, print_tables: bool = True,
            html_path: Path | None = None) -> Comparison:
    """Read, group, plot, tabulate and (optionally) write the HTML report; returns what was made."""
    folders = [Path(f) for f in folders]
    skipped: list[str] = []
    runs = rt.read_runs(folders, skipped)
    for note in skipped:
        print(f"note: {note}", file=sys.stderr)
    if not runs:
        raise FileNotFoundError(f"no run folders (with config.yaml) in {', '.join(str(f) for f in folders)}")
    keys = list(by) if by else rt.default_keys(runs)
    unknown = [key for key in keys if all(rt.lookup(run, key) is None for run in runs)]
    if unknown:
        raise UserError("--by", ",".join(keys), f"names {', '.join(unknown)}, which no run's config, config group or "
                        "override sets (missing or null in every run), so it cannot tell the runs apart.",
                        "Use keys of the runs' config.yaml (e.g. model.depth, optimizer.lr) or group names (model, data).")
    groups = rt.assign_groups(runs, keys)
    runs.sort(key=lambda r: (groups.index(r.group), str(r.seed), r.name))
    out = Path(out) if out else default_out(folders)
    out.mkdir(parents=True, exist_ok=True)
    title = title or f"Comparison of {', '.join(f.name for f in folders)}"
    comparison = Comparison(out=out, keys=keys, runs=runs, groups=groups, run_rows=rt.run_rows(runs, keys),
                            group_rows=rt.group_rows(runs, keys, groups), notes=skipped + rt.epoch_notes(runs))
    figure = plot_curves(runs, keys, groups, out, x=x, title=title)
    if figure:
        comparison.figure_png, comparison.figure_svg = figure
    else:
        comparison.notes.append("No run has epoch-level metrics yet: no figure.")
    responses = plot_layer_responses(runs, keys, out)
    if responses:
        comparison.layer_responses = responses[0]
    comparison.degradation = rt.degradation_check(runs)
    runs_table, groups_table = rt.display_run_table(comparison.run_rows, keys), \
        rt.display_group_table(comparison.group_rows, keys)
    rt.write_csv(out / "runs.csv", comparison.run_rows)
    rt.write_csv(out / "groups.csv", comparison.group_rows)
    (out / "runs.md").write_text(rt.markdown_table(*runs_table))
    (out / "groups.md").write_text(rt.markdown_table(*groups_table))
    (out / "notes.txt").write_text("".join(f"{n}\n" for n in comparison.notes))
    if comparison.degradation:
        (out / "degradation.json").write_text(json.dumps(comparison.degradation, indent=2) + "\n")
    if html:
        comparison.html = write_html(comparison, html_path or out / "report.html", title, folders)
    if print_tables:
        _print(comparison, runs_table, groups_table)
    return comparison


def parse_keys(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [k.strip() for k in text.split(",") if k.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="a multirun/sweep folder, or run folders")
    parser.add_argument("--by", help="comma-separated grouping keys, e.g. model.depth,model.residual")
    parser.add_argument("--html", action="store_true", help="also write one self-contained report.html")
    parser.add_argument("--out", type=Path, help="output folder (default: <folder>/compare)")
    parser.add_argument("--x", choices=("epoch", "step"), default="epoch", help="x axis of the curves")
    parser.add_argument("--title", help="figure and report title")
    args = parser.parse_args(argv)
    try:
        if args.out is not None:
            check_new_output(args.out, "--out", folder=True)
        elif len(args.folders) == 1 and RunFolder.is_run_folder(args.folders[0]):
            RunFolder(args.folders[0], key="folder").refuse_if_in_use("experiments.compare")
        compare(args.folders, by=parse_keys(args.by), html=args.html, out=args.out, x=args.x, title=args.title)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except UserError as error:
        report_error(error)
        return EXIT_USER_ERROR
    return 0


def check_new_output(path: Path, key: str, folder: bool) -> None:
    """An output named on the command line is new (a folder may also be empty): a command never
    overwrites a file, whatever it is (a run's config.yaml, a checkpoint), and it can be made."""
    from experiments.core.output_folders import check_can_create

    if path.exists() and not (folder and path.is_dir() and not any(path.iterdir())):
        kind = "folder that holds files" if path.is_dir() else "file"
        raise UserError(key, str(path), f"is an existing {kind}; nothing already written is overwritten.",
                        f"Give {key} a new {'folder' if folder else 'file'} name, or leave {key} out (a new one "
                        "is chosen).")
    check_can_create(path if folder else path.parent, key)
