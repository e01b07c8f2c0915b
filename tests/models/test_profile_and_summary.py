"""profile_model's figures, every conf/model YAML at its paper setting, and the summary command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.core.errors import UserError
from experiments.summary import summarise
from experiments.training.build import MODEL_METADATA_KEYS, build_model
from models.errors import ModelConfigError
from models.lenet import LeNet5
from models.profile import compare_with_paper, profile_model
from tests.conftest import MODEL_NAMES as MODELS
from tests.conftest import model_config

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
# ResNet-1202 takes ~10 s per build even on the meta device: its count is checked in test_param_counts.
MODEL_NAMES = [pytest.param(name, marks=pytest.mark.slow) if name == "resnet1202" else name for name in MODELS]


def test_profile_of_lenet5_counts_by_hand() -> None:
    profile = profile_model(LeNet5(), (1, 32, 32))
    conv = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25
    fc = 400 * 120 + 120 * 84 + 84 * 10
    assert profile["params"] == profile["inference_params"] == profile["trainable_params"] == 61_706
    assert profile["macs"] == conv + fc == 416_520
    rows = {row["name"]: row for row in profile["rows"]}
    assert rows["features.0"] == {"name": "features.0", "type": "Conv2d", "kernel": "5x5/1", "output": [28, 28, 6],
                                  "params": 156, "macs": 117_600}
    assert rows["features.5"]["output"] == [5, 5, 16]
    assert "features.1" not in rows  # activations are not rows
    assert profile["output_shape"] == [10]


def test_profile_leaves_the_model_as_it_was() -> None:
    model = LeNet5().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    profile_model(model, (1, 32, 32))
    assert model.training and not model._forward_hooks
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_compare_with_paper() -> None:
    rows = compare_with_paper({"inference_params": 110, "macs": 90}, {"params": 100, "macs": 100, "title": "x"})
    assert rows == [{"quantity": "params", "ours": 110, "paper": 100.0, "diff_pct": pytest.approx(10.0)},
                    {"quantity": "macs", "ours": 90, "paper": 100.0, "diff_pct": pytest.approx(-10.0)}]
    assert compare_with_paper({"inference_params": 1, "macs": 1}, None) == []


def compose_summary(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("summary", overrides=overrides)


def paper_overrides(name: str) -> list[str]:
    paper = model_config(name).get("paper") or {}
    channels = 1 if name.startswith("lenet") else 3
    return [f"model={name}", "data=cifar10", f"data.image_size={paper.get('input_size', 224)}",
            f"data.num_classes={paper.get('num_classes', 1000)}", f"data.in_channels={channels}"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_config_builds_at_its_paper_setting(name: str) -> None:
    """Built on the meta device; the paper's parameter count (when given) is matched within 5%."""
    profile = summarise(compose_summary(paper_overrides(name)))
    assert profile["output_shape"] == [profile["paper"].get("num_classes", 1000)]
    for comparison in profile["comparison"]:
        limit = 6.0 if comparison["quantity"] == "macs" else 5.0
        assert abs(comparison["diff_pct"]) < limit, comparison


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_takes_cifar_or_says_which_image_size_it_needs(name: str) -> None:
    cfg = compose_summary([f"model={name}", "data=cifar10"])
    try:
        with torch.device("meta"):
            model = build_model(cfg.model, (3, 32, 32))
    except (ModelConfigError, UserError) as error:
        assert "data.image_size" in str(error)
        return
    assert model.eval()(torch.zeros(2, 3, 32, 32, device="meta")).shape == (2, 10)


def _run_summary(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "experiments.summary", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_summary_command_prints_the_table_and_writes_nothing(tmp_path: Path) -> None:
    result = _run_summary(["model=resnet20", "data=cifar10"], tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in ("layer3", "8x8x64", "269,722", "270,000", "-0.10%", "3 x BasicBlock"):
        assert expected in out
    assert list(tmp_path.iterdir()) == []


def test_summary_command_reports_a_bad_depth_as_one_paragraph(tmp_path: Path) -> None:
    result = _run_summary(["model=resnet20", "data=cifar10", "model.depth=21"], tmp_path)
    assert result.returncode == 2
    assert "model.depth=21" in result.stderr and "6n+2" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", [n if isinstance(n, str) else n.values[0] for n in MODEL_NAMES])
def test_model_configs_follow_the_contract(name: str) -> None:
    import importlib
    import inspect

    cfg = model_config(name)
    module, _, cls = cfg._target_.rpartition(".")
    assert module.startswith("models.")
    signature = inspect.signature(getattr(importlib.import_module(module), cls))
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert raw["in_channels"] == "${data.in_channels}" and raw["num_classes"] == "${data.num_classes}"
    assert ("input_size" in raw) == ("input_size" in signature.parameters)
    if "input_size" in raw:
        assert raw["input_size"] == "${data.image_size}"
    assert set(raw) - {"_target_", *MODEL_METADATA_KEYS} <= set(signature.parameters)
    assert {"title", "input_size", "num_classes"} <= set(raw["paper"])


@pytest.mark.parametrize(("args", "words"), [
    (["model=nosuch"], ["model=nosuch", "no such model"]),
    (["model.depthh=3"], ["model.depthh=3", "no key 'depthh' under model"]),
    (["memory=true", "memory_optimizer=bogus"], ["memory_optimizer='bogus'", "sgd, sgd_momentum, adam"]),
    (["memory=true", "memory_batch=-1"], ["memory_batch=-1", "positive number of images"]),
])
def test_summary_refuses_bad_input_in_one_paragraph(tmp_path, args, words):
    from tests.conftest import assert_refused, run_cli

    result = run_cli("experiments.summary", *args, cwd=tmp_path)
    assert_refused(result, words)
    assert result.stderr.strip().count("\n") <= 3 and list(tmp_path.iterdir()) == []
