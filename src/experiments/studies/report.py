"""``python -m experiments.report <folder> [--by KEYS] [--out FILE]``: one self-contained HTML report.

``<folder>`` is a run folder, a multirun folder or a sweep folder. The report is the one of
``python -m experiments.compare <folder> --html`` (figures inlined as base64 PNG, tables, composed
configs and command lines; no external reference), written to ``<folder>/report.html``; the figure
and table files it is made from go to ``<folder>/compare/``. A second report is ``report-2.html`` and
``compare-2/`` (nothing already written is overwritten); ``--out`` must name a new file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.core.errors import EXIT_USER_ERROR, UserError
from experiments.core.errors import report as report_error
from experiments.core.runs import RunFolder
from experiments.studies.compare import check_new_output, compare, parse_keys


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
        if single:
            RunFolder(folder, key="folder").refuse_if_in_use("experiments.report")
        if args.out is not None:
            check_new_output(args.out, "--out", folder=False)
        html_path = args.out or _new_file(folder, "report", ".html")
        comparison = compare([folder], by=parse_keys(args.by) or ([] if single else None), html=True,
                             out=None, html_path=html_path,
                             title=f"{'Run' if single else 'Runs of'} {folder.name}", print_tables=False)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except UserError as error:
        report_error(error)
        return EXIT_USER_ERROR
    print(f"report: {comparison.html}")
    return 0


def _new_file(folder: Path, stem: str, suffix: str) -> Path:
    """``<folder>/<stem><suffix>``, or ``<stem>-2<suffix>``, ... : an earlier report is never overwritten."""
    for number in range(1, 10_000):
        path = folder / f"{stem}{'' if number == 1 else f'-{number}'}{suffix}"
        if not path.exists():
            return path
    raise UserError("folder", str(folder), f"holds 10,000 {stem}s already.", "Clean up the folder.")
