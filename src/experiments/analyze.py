"""``python -m experiments.analyze``: look inside a trained network (saliency, CAM, t-SNE, attacks, ...).

The command's code lives in :mod:`experiments.analysis.analyze`; this module only gives the command its name.
"""

from experiments.analysis.analyze import main

if __name__ == "__main__":
    main()
