"""``python -m experiments.report <folder> [--by KEYS] [--out FILE]``: one self-contained HTML report.

``<folder>`` is a run folder, a multirun folder or a sweep folder. The report is the one of
``python -m experiments.compare <folder> --html`` (figures inlined as base64 PNG, tables, composed
configs and command lines; no external reference), written to ``<folder>/report.html``; the figure
and table files it is made from go to ``<folder>/compare/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.core.runs import RunFolder
from experiments.studies.compare import compare, parse_keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.report",
                                     description="One self-contained HTML report of a run, a multirun or a sweep.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--by", help="comma-separated grouping keys (default: the keys the runs vary)")
    parser.add_argument("--out", type=Path, help="the HTML file to write (default: <folder>/report.html)")
    args = parser.parse_args(argv)
    folder = args.folder
    if not folder.is_dir():
        print(f"error: {folder} is not a folder", file=sys.stderr)
        return 2
    single = RunFolder.is_run_folder(folder)
    try:
        comparison = compare([folder], by=parse_keys(args.by) or ([] if single else None), html=True,
                             out=folder / "compare", html_path=args.out or folder / "report.html",
                             title=f"{'Run' if single else 'Runs of'} {folder.name}", print_tables=False)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report: {comparison.html}")
    return 0
