"""``python -m experiments.coarse_to_fine``: the lectures' coarse-to-fine random search, stage by stage.

The command's code lives in :mod:`experiments.sweeps.coarse_to_fine`; this module only gives the command its name.
"""

from experiments.sweeps.coarse_to_fine import main

if __name__ == "__main__":
    main()
