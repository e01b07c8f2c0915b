"""``python -m experiments.report``: one self-contained HTML report of a run, multirun or sweep folder.

The command's code lives in :mod:`experiments.studies.report`; this module only gives the command its name.
"""

from experiments.studies.report import main

if __name__ == "__main__":
    raise SystemExit(main())
