"""``model.activation`` and ``model.dropout_placement`` through the real command line: bad values refused
with one paragraph (exit 2, nothing written), a good value trained end to end with the diagnostics that
suit it, and the ReLU-only analyses refusing a network built with another activation."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from tests.conftest import TINY, assert_refused, run_cli, tree_hashes

from experiments.analysis.guided import require_relu_modules
from experiments.core.errors import UserError
from models.blueprint import Blueprint
from models.resnet import ResNet

BAD = [
    (["model=blueprint", "model.activation=swish"],
     ["model.activation='swish'", "relu, leaky_relu, elu, tanh, sigmoid"]),
    (["model=resnet20", "model.activation=gelu"], ["model.activation='gelu'", "relu, leaky_relu, elu, tanh, sigmoid"]),
    (["model=densenet40", "model.activation=relu"], ["model.activation=relu", "no key 'activation' under model"]),
    (["model=alexnet", "model.dropout_placement=before"],
     ["model.dropout_placement='before'", "paper, torchvision"]),
]


@pytest.mark.parametrize(("args", "words"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_value_is_refused_before_anything_is_written(tmp_path: Path, args, words):
    (tmp_path / "outputs").mkdir()
    before = tree_hashes(tmp_path)
    result = run_cli("experiments.train", *TINY, "trainer.max_epochs=1", *args, cwd=tmp_path, timeout=120)
    assert_refused(result, words)
    assert tree_hashes(tmp_path) == before


@pytest.fixture(scope="module")
def tanh_run(tmp_path_factory) -> Path:
    """The blueprint net with tanh units, one epoch, with the activation statistics."""
    workdir = tmp_path_factory.mktemp("tanh")
    run_cli("experiments.train", *TINY, "model=blueprint", "model.activation=tanh", "trainer.max_epochs=1",
            "callbacks=[default,activation_stats]", cwd=workdir, check=True)
    return next(p.parent for p in (workdir / "outputs").glob("train/*/*/config.yaml"))


def test_a_tanh_network_trains_and_reports_saturation_not_dead_units(tanh_run: Path):
    with (tanh_run / "metrics.csv").open(newline="") as handle:
        columns = next(csv.reader(handle))
    layers = ("features.0.0", "features.1.0", "classifier.1")  # the conv and hidden FC layers, each with a tanh
    assert all(f"activation_saturation/{layer}" in columns for layer in layers)
    assert not any(f"activation_dead/{layer}" in columns for layer in layers)
    assert "activation: tanh" in (tanh_run / "config.yaml").read_text()


def test_guided_backprop_refuses_the_tanh_run_by_its_key(tanh_run: Path):
    before = tree_hashes(tanh_run)
    result = run_cli("experiments.analyze", f"run={tanh_run}", "analysis=[guided_backprop]",
                     "analysis.guided_backprop.num_images=2", cwd=tanh_run.parents[3], timeout=120)
    assert_refused(result, ["guided_backprop", "model.activation=tanh", "analysis=saliency"])
    assert tree_hashes(tanh_run) == before


@pytest.mark.parametrize("activation", ["leaky_relu", "elu", "sigmoid"])
def test_relu_only_analyses_name_the_activation_the_network_was_built_with(activation):
    x = torch.randn(1, 3, 32, 32)
    for model in (Blueprint(activation=activation), ResNet(num_classes=3, form="cifar", depth=8, shortcut="A",
                                                              activation=activation)):
        with pytest.raises(UserError) as refused:
            require_relu_modules(model, x, "deconvnet")
        assert f"model.activation={activation}" in str(refused.value)
    assert require_relu_modules(Blueprint(), x, "deconvnet") == 3  # the default: two conv stages and one FC layer


@pytest.mark.parametrize("name", ["resnet18", "resnext50_32x4d", "wrn16_8", "resnet20"])
def test_every_resnet_family_takes_the_activation_key_without_plus(name):
    """`activation` lives in the shared ResNet base config: every family composes `model.activation=elu`
    as a plain override, and the network it builds uses ELU and no ReLU outside squeeze-and-excitation."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={name}", "model.activation=elu"])
    node = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items()
            if k not in ("paper", "channels_last")}
    with torch.device("meta"):
        model = instantiate(node, in_channels=3, num_classes=10, input_size=64)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "ELU" in kinds and "ReLU" not in kinds
