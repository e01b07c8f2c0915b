"""``python -m experiments.train [overrides]``: train one configured CNN (or a sweep of them with -m).

Only Hydra is imported at module level, so ``--help`` and ``--cfg job`` answer instantly; the training
pipeline (torch, Lightning) is imported when a job actually runs.

A single run reports a configuration mistake as one paragraph (exit status 2) and lets any other error
raise. A job of a sweep (``-m``) must not stop the sweep: there every failure is written into the
trial's run folder and the job returns NaN, which Optuna records as a failed trial
(see :mod:`experiments.sweeps.trial`).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from experiments.core.errors import exits_cleanly_on_user_error


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from experiments.sweeps.trial import in_multirun, run_trial

    if in_multirun():
        return run_trial(cfg, _train)
    return _single_run(cfg)


@exits_cleanly_on_user_error
def _single_run(cfg: DictConfig) -> float:
    return _train(cfg)


def _train(cfg: DictConfig) -> float:
    try:
        from experiments.training.pipeline import train  # (torch and Lightning load here: seconds)
    except KeyboardInterrupt:  # Ctrl-C while the code loads: Hydra already made the run folder
        from pathlib import Path

        from experiments.core.output_folders import remove_unused_run_folder

        remove_unused_run_folder(Path(cfg.paths.run_dir), Path(cfg.paths.output_root))
        print("\nInterrupted before training started; no run folder was kept.", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    return train(cfg)


if __name__ == "__main__":
    from experiments.core.fast_help import print_help, unknown_key, unknown_option, wants_app_help

    if wants_app_help(sys.argv):
        print_help("train", "train", sys.argv)
        sys.exit(0)
    unknown = unknown_option(sys.argv[1:]) or unknown_key(sys.argv[1:])
    if unknown:
        import textwrap

        print(textwrap.fill(unknown, width=100), file=sys.stderr)
        sys.exit(2)
    if not any(a.startswith("--") for a in sys.argv[1:]):  # --cfg, --info ... write nothing
        from experiments.core.output_folders import check_output_folders

        check_output_folders(sys.argv[1:])
    main()
