"""``python -m experiments.analysis.compare_landscapes <run> <run> ... [--out FOLDER]``

Overlays the 1-D loss landscapes that ``experiments.analyze ... analysis=[loss_landscape]`` wrote for
each run — Li et al. 2018's plain-vs-ResNet picture: the plain net's valley is sharper. Writes
``landscapes.png`` and ``landscapes.json`` (sharpness per run) into ``--out`` (default: the first
run's ``analysis/``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.core.errors import UserError, exits_cleanly_on_user_error
from experiments.core.runs import RunFolder


def read_landscape(run: Path) -> dict:
    from experiments.analysis.analyze import latest_record

    path = latest_record(run / "analysis", "loss_landscape")
    if path is None:
        raise UserError("run", str(run), "has no analysis/loss_landscape.json.",
                        f"Run: python -m experiments.analyze run={run} \"analysis=[loss_landscape]\"")
    record = json.loads(path.read_text())
    name = RunFolder(run).summary().get("model_name")
    return {"run": str(run), "label": name or run.name, **record["figures"]}


def compare(runs: list[Path], out: Path) -> dict:
    from callbacks.plotting import new_figure
    from experiments.analysis.analyze import new_stem
    from experiments.core import runs as run_files

    curves = [read_landscape(r) for r in runs]
    figure = new_figure(6, 4)
    axis = figure.subplots()
    for curve in curves:
        axis.plot(curve["alphas"], curve["loss_1d"], marker=".", label=f"{curve['label']} "
                  f"(sharpness {curve['sharpness_half_span']:.3g})")
    axis.set_yscale("log")
    axis.set_xlabel("alpha (filter-normalised random direction)")
    axis.set_ylabel(f"loss ({curves[0]['split']} images)")
    axis.set_title("1-D loss landscapes (Li et al. 2018)", fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    stem = new_stem(out, "landscapes")  # an earlier comparison is kept: landscapes-2.png, ...
    figure.savefig(out / f"{stem}.png", dpi=120)
    table = {"runs": [{k: c[k] for k in ("run", "label", "loss_at_minimum", "sharpness_half_span")} for c in curves]}
    run_files.write_json_atomic(out / f"{stem}.json", table)
    return table


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    table = compare(args.runs, args.out or args.runs[0] / "analysis")
    for row in table["runs"]:
        print(f"{row['label']:>24}  loss {row['loss_at_minimum']:.4f}  sharpness {row['sharpness_half_span']:.4f}")
    return table


if __name__ == "__main__":
    main()
