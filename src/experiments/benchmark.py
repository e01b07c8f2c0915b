"""``python -m experiments.benchmark``: is the framework free? Overhead, data path, start-up and memory figures.

The command's code lives in :mod:`experiments.bench.suite`; this module only gives the command its name.
"""

from experiments.bench.suite import main

if __name__ == "__main__":
    raise SystemExit(main())
