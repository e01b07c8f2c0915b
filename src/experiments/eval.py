"""``python -m experiments.eval``: test a trained run (multi-crop, ensembles) with its own saved config.

The command's code lives in :mod:`experiments.evaluation.evaluate`; this module only gives the command its name.
"""

from experiments.evaluation.evaluate import main

if __name__ == "__main__":
    main()
