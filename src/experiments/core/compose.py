"""``conf/train.yaml`` composed in this process, the way ``python -m experiments.train`` composes it.

For commands that check or time a training configuration without starting the training command:
the benchmark (which trains through the pipeline in-process) and ``coarse_to_fine`` (which checks its
train overrides before it writes its record and launches the stages).
"""

from __future__ import annotations

from collections.abc import Sequence

from experiments.core.locations import CONF_DIR


def compose_train(overrides: Sequence[str]):
    """``conf/train.yaml`` composed with ``overrides``, Hydra's runtime info set (as a real run has it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if GlobalHydra.instance().is_initialized():
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg
