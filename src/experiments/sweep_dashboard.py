"""``python -m experiments.sweep_dashboard <sweep folder> [--port N]``: a sweep's study, live, in a browser.

The command's code lives in :mod:`experiments.sweeps.live_dashboard`; this module only gives the command its name.
"""

from experiments.sweeps.live_dashboard import main

if __name__ == "__main__":
    main()
