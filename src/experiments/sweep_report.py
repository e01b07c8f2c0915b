"""``python -m experiments.sweep_report``: every trial of a sweep, best first.

The command's code lives in :mod:`experiments.sweeps.report`; this module only gives the command its name.
"""

from experiments.sweeps.report import main

if __name__ == "__main__":
    main()
