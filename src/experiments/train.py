"""``python -m experiments.train [overrides]``: train one configured CNN (or a sweep of them with -m).

Only Hydra is imported at module level, so ``--help`` and ``--cfg job`` answer instantly; the training
pipeline (torch, Lightning) is imported when a job actually runs.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from experiments.errors import exits_cleanly_on_user_error


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
@exits_cleanly_on_user_error
def main(cfg: DictConfig) -> float:
    from experiments.pipeline import train

    return train(cfg)


if __name__ == "__main__":
    main()
