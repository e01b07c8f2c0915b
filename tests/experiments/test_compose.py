"""Every option of every config group composes, resolves, and builds what it describes."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from tests.conftest import CONF

GROUPS = ["model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks", "debug", "finetune",
          "experiment"]
# `_`-prefixed files are bases other options inherit (conf/model/_resnet_cifar.yaml), not options.
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))
           if not path.stem.startswith("_")]


def test_every_group_has_options():
    found = {group for group, _ in OPTIONS}
    assert found >= set(GROUPS) - {"experiment"}
    assert len(OPTIONS) >= 40


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_resolves(compose, group, option, tmp_path):
    overrides = [f"{group}={option}", f"paths.run_dir={tmp_path}"]
    if group == "data" and option == "imagefolder":
        overrides.append(f"data.root={tmp_path}")
    if (group == "finetune" and option != "none") or "override /finetune:" in (CONF / group / f"{option}.yaml").read_text():
        overrides.append(f"finetune.from={tmp_path}")  # a transfer names its source: `from: ???` by design
    cfg = compose(overrides)
    with open_dict(cfg):
        del cfg["hydra"]  # Hydra's own section needs a running job (hydra.job.num) to resolve
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert container[group if group not in ("debug", "experiment") else "trainer"] is not None
    if group == "finetune":
        assert set(container["finetune"]) == set(OmegaConf.load(CONF / "finetune" / "none.yaml"))
    assert container["data"]["in_channels"] >= 1
    if group == "model":
        assert cfg.model.in_channels == cfg.data.in_channels


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml")))
def test_optimizer_builds(compose, option, tmp_path):
    from experiments.training.optim import build_optimizer

    cfg = compose([f"optimizer={option}", f"paths.run_dir={tmp_path}"])
    optimizer = build_optimizer(cfg.optimizer, torch.nn.Linear(3, 2))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optimizer.lr)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "callbacks").glob("*.yaml")))
def test_callbacks_instantiate(compose, option, tmp_path):
    cfg = compose([f"callbacks={option}", f"paths.run_dir={tmp_path}"])
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    assert callbacks and all(hasattr(c, "on_train_epoch_end") for c in callbacks)


def test_experiment_lenet_fashion_is_the_paper_network(compose, tmp_path):
    from experiments.training.build import build_model, count_parameters, input_shape_of

    cfg = compose(["experiment=lenet_fashion", f"paths.run_dir={tmp_path}"])
    assert input_shape_of(cfg) == (1, 32, 32)
    assert cfg.data.resize_mode == "pad"
    model = build_model(cfg.model, input_shape_of(cfg))
    assert count_parameters(model) == 61_706
