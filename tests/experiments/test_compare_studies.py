"""The study configs (conf/experiment/<study>.yaml): each composes, its -m grid parses, and a tiny real
multirun of the degradation study ends with its comparison (figure, tables, verdict, report)."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from tests.conftest import run_cli

from experiments.training.build import build_model, input_shape_of

STUDIES = {  # study: (grid size, grouping keys)
    "degradation": (12, ["model.depth", "model.residual"]),
    "degradation_paper": (4, ["model.depth", "model.residual"]),
    "shortcuts": (3, ["model.shortcut"]),
    "depth_vs_width": (4, ["study.variant"]),
    "vgg_depth": (4, ["model.config"]),
    "inception_cost": (2, ["model.inception"]),
    "cardinality": (5, ["model"]),
    "googlenet_aux": (2, ["model.aux_logits"]),
    "optimizers": (4, ["study.variant"]),
    "adversarial_training": (2, ["module.adversarial"]),
    "regularization": (8, ["model.dropout", "data.augment.crop_padding", "optimizer.weight_decay"]),
}


def _grid(cfg) -> list[list[str]]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in parsed]


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_every_study_composes_with_its_grid(study, compose):
    import itertools

    size, by = STUDIES[study]
    cfg = compose([f"experiment={study}"])
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    callback = cfg.hydra.callbacks.compare_study
    assert callback._target_ == "experiments.studies.study_callback.CompareStudy" and list(callback.by) == by
    # conf/train.yaml's own hydra.sweep.dir wins over the experiment's (its _self_ comes after `experiment`),
    # so the callback applies the study's folder at on_multirun_start (checked by the real multirun below).
    assert f"studies/{study}/" in str(callback.sweep_dir)
    grid = list(itertools.product(*_grid(cfg)))
    assert len(grid) == size
    for point in grid:   # every point of the -m grid composes and resolves
        job = compose([f"experiment={study}", *point])
        resolved = {k: OmegaConf.to_container(job[k], resolve=True)
                    for k in ("model", "data", "optimizer", "scheduler", "trainer")}
        assert resolved["model"]["_target_"] and resolved["optimizer"]["_target_"]


def test_degradation_recipe(compose):
    cfg = compose(["experiment=degradation"])
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay, cfg.data.batch_size) == \
        (0.1, 0.9, 1e-4, 128)
    assert list(cfg.scheduler.milestones) == [0.5, 0.75] and cfg.scheduler.unit == "fraction"
    assert (cfg.scheduler.warmup_steps, cfg.scheduler.warmup_factor, cfg.scheduler.warmup_mode) == \
        (400, 0.1, "linear")
    assert (cfg.data.augment.crop_padding, cfg.data.augment.hflip, cfg.data.image_size) == (1, True, 8)
    assert str(cfg.hydra.sweeper.params.seed) == "0,1,2"   # three seeds: mean ± std decides
    assert (cfg.data.subset, cfg.data.val_size, cfg.trainer.max_epochs) == (11000, 1000, 40)
    assert cfg.model.init == "kaiming" and cfg.model.zero_init_residual is True
    paper = compose(["experiment=degradation_paper"])
    assert paper.trainer.max_steps == 64000 and list(paper.scheduler.milestones) == [32000, 48000]
    # The paper's protocol: the reported nets train on all 50k images and the final network is tested
    # (no best-validation checkpoint); the warm-up is for the 110-layer nets only (their own command).
    assert paper.scheduler.unit == "step" and paper.data.val_size == 0 and paper.callbacks.checkpoint is None
    assert paper.scheduler.warmup_steps == 0 and paper.data.augment.crop_padding == 4
    for model in ("plain20", "resnet20", "plain56", "resnet56"):
        job = compose(["experiment=degradation", f"model={model}"])
        assert (job.model.depth, job.model.residual) == (int(model[-2:]), model.startswith("resnet"))
        net = build_model(job.model, input_shape_of(job))
        gammas = torch.cat([block.bn2.weight.detach() for stage in net.stages for block in stage])
        # residual branches start at zero; the plain twins have no shortcut and keep gamma = 1
        assert float(gammas.abs().max()) == (0.0 if job.model.residual else 1.0)


def test_optimizer_variants_resolve(compose):
    targets = {v: compose(["experiment=optimizers", f"study.variant={v}"]).optimizer._target_
               for v in ("sgd", "sgd_momentum", "rmsprop", "adam")}
    assert targets == {"sgd": "torch.optim.SGD", "sgd_momentum": "torch.optim.SGD",
                       "rmsprop": "torch.optim.RMSprop", "adam": "torch.optim.Adam"}
    adam = compose(["experiment=optimizers", "study.variant=adam"]).optimizer
    assert adam.lr == 1e-3 and list(adam.betas) == [0.9, 0.999]


# Tiny: plain/residual CIFAR nets of depth 8 and 14 on 192 synthetic 16x16 images, 2 epochs.
TINY_DEGRADATION = [
    "-m", "experiment=degradation", "hydra.sweeper.params.model='plain20,resnet20'", "model.depth=8,14",
    "hydra.sweeper.params.seed=0",
    "data=synthetic", "data.in_channels=1", "data.mean=[0.5]", "data.std=[0.25]", "data.native_size=16",
    "data.num_train=192", "data.num_test=64", "data.val_size=64", "data.batch_size=32", "data.subset=null",
    "trainer.max_epochs=2", "scheduler.warmup_steps=2", "quiet=true",
]


def test_tiny_degradation_study_ends_with_its_comparison(tmp_path):
    result = run_cli("experiments.train", *TINY_DEGRADATION, cwd=tmp_path, check=True, timeout=300)
    (sweep,) = list((tmp_path / "outputs" / "studies" / "degradation").iterdir())
    assert len([p for p in sweep.iterdir() if p.name[0].isdigit()]) == 4
    out = sweep / "compare"
    for name in ("curves.png", "curves.svg", "runs.csv", "runs.md", "groups.csv", "groups.md", "report.html",
                 "degradation.json"):
        assert (out / name).is_file(), name
    groups = (out / "groups.md").read_text()
    assert groups.count("\n") == 2 + 4 and "| 8 | false |" in groups and "| 14 | true |" in groups
    verdict = json.loads((out / "degradation.json").read_text())
    assert verdict["plain"]["depths"] == [8, 14] and verdict["residual"]["depths"] == [8, 14]
    assert isinstance(verdict["reproduced"], bool) and verdict["equal_epochs"]
    assert verdict["verdict"].split(":")[0] in result.stdout + result.stderr
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    # He et al. Fig. 7 across the runs: one curve per net, one point per 3x3 conv (a CIFAR net of depth
    # 6n+2 has 6n+1 of them: the stem and two per block; the last layer is the FC).
    assert (out / "layer_responses.png").is_file() and "Fig. 7" in html
    responses = json.loads((out / "layer_responses.json").read_text())["groups"]
    assert len(responses) == 4
    assert sorted(g["layers"] for g in responses.values()) == [7, 7, 13, 13]
    assert all(s >= 0 for g in responses.values() for s in g["std"])
