"""Every experiment config trains on a non-empty split with a schedule that makes sense at its length.

A study that is only ever run for an hour on someone else's machine must not discover there that its
validation hold-out ate the training subset, or that its warm-up outlasts its first lr decay.
"""

from __future__ import annotations

import itertools
import math

import pytest
from omegaconf import OmegaConf
from tests.conftest import CONF

# Images in each dataset's training file (before the validation hold-out).
TRAINING_FILE = {"fashion_mnist": 60000, "mnist": 60000, "cifar10": 50000, "cifar100": 50000, "svhn": 73257,
                 "digits": 1348}
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_has_training_images_and_a_schedule_that_fits(compose, tmp_path, name):
    from experiments.training.optim import _check_warmup_fits, _to_steps

    overrides = [f"experiment={name}", f"paths.run_dir={tmp_path}"]
    if name.startswith("transfer_") and name != "transfer_pretrain":
        overrides.append(f"finetune.from={tmp_path}")
    cfg = compose(overrides)
    data = cfg.data
    choice = OmegaConf.select(cfg, "hydra.runtime.choices.data")
    available = int(data.num_train) if choice == "synthetic" else TRAINING_FILE[choice]
    drawn = min(available, int(data.subset)) if data.get("subset") else available
    val = data.get("val_size") or 0
    val = round(val * drawn) if isinstance(val, float) else int(val)
    train = drawn - val
    assert train > 0, f"{name}: val_size {val} leaves no training images of {drawn}"
    per_epoch = math.ceil(train / int(data.batch_size))
    max_steps = int(cfg.trainer.get("max_steps") or -1)
    total = max_steps if max_steps > 0 else per_epoch * int(cfg.trainer.max_epochs)
    scheduler = OmegaConf.to_container(cfg.scheduler, resolve=True)
    if not scheduler.get("_target_") or scheduler["_target_"].endswith("ReduceLROnPlateau"):
        return
    for key in ("milestones", "step_size"):
        if key in scheduler:
            scheduler[key] = _to_steps(scheduler[key], scheduler.get("unit", "epoch"), per_epoch, total, key)
    _check_warmup_fits(int(scheduler.get("warmup_steps") or 0), scheduler, total)


def _grid(cfg) -> list[list[str]]:
    """The overrides of every job of a study's sweep (comma lists of ``hydra.sweeper.params``)."""
    params = cfg.hydra.sweeper.get("params") if "hydra" in cfg else None
    if not params:
        return [[]]
    keys = list(params)
    values = [str(params[k]).split(",") for k in keys]
    return [[f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*values)]


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if not n.startswith("transfer_") or n == "transfer_pretrain"])
def test_every_job_of_a_study_builds_at_its_input_size(compose, tmp_path, name):
    """Models are built on the meta device (no memory) and run a meta forward pass at the study's size."""
    import torch

    from experiments.training.build import build_model, input_shape_of

    base = [f"experiment={name}", f"paths.run_dir={tmp_path}"]
    for job in _grid(compose(base)):
        cfg = compose(base + job)
        with torch.device("meta"):
            build_model(cfg.model, input_shape_of(cfg))
