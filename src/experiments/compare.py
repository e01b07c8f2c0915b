"""``python -m experiments.compare``: runs side by side: tables, curves, an HTML report.

The command's code lives in :mod:`experiments.studies.compare`; this module only gives the command its name.
"""

from experiments.studies.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
