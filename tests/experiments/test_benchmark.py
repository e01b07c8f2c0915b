"""The benchmark runs end to end in a tiny configuration; its memory accounting is exact; --help is light.

No timing is asserted (the machine is shared): only that every ratio is a positive finite number.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import subprocess
import sys

import pytest
import torch
from tests.conftest import REPO, run_cli
from torch import nn

from experiments.bench.memory import account, activation_elements


def test_help_imports_no_torch():
    code = ("import sys; from experiments.bench.suite import parse\n"
            "try:\n    parse(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'torchvision', 'pytorch_lightning') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, text=True, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "usage: python -m experiments.benchmark" in result.stdout
    assert "HEAVY []" in result.stdout


def test_single_conv_layer_bill_is_exact():
    net = nn.Sequential(nn.Conv2d(3, 8, kernel_size=3, padding=1), nn.ReLU())
    counted = activation_elements(net, (3, 16, 16))
    assert counted["total"] == 8 * 16 * 16  # the ReLU folds into the conv, as in the lecture
    assert counted["input"] == 3 * 16 * 16
    bill = account(net, (3, 16, 16), batch_size=4, optimizer="sgd_momentum")
    params = 8 * 3 * 3 * 3 + 8
    assert bill["parameters"] == params
    assert bill["bytes"] == {
        "activations_forward": 4 * (3 * 16 * 16 + 8 * 16 * 16) * 4,
        "activation_gradients": 4 * 8 * 16 * 16 * 4,
        "parameters": params * 4,
        "gradients": params * 4,
        "optimizer_state": params * 4,
    }
    assert bill["total_bytes"] == sum(bill["bytes"].values())
    assert account(net, (3, 16, 16), 4, optimizer="adam")["optimizer_state_values"] == 2 * params


def test_lecture_vgg16_activations_on_meta_device():
    from models.vgg import VGG

    with torch.device("meta"):
        model = VGG(in_channels=3, num_classes=1000, input_size=224, config="D")
    counted = activation_elements(model, (3, 224, 224))
    # The lecture's per-layer list (convs, pools, FCs) sums to ~15.2M with the 150K input.
    assert 14.9e6 < counted["total"] < 15.2e6


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = run_cli("experiments.benchmark", "quick=true", f"output_dir={out}", cwd=REPO, timeout=240, check=True)
    files = list(out.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text()), result


def test_quick_benchmark_writes_json(quick_run):
    payload, result = quick_run
    assert "ours / plain" in result.stdout
    for key in ("suite", "machine", "ratios", "results", "command", "settings"):
        assert key in payload
    for key in ("cpu", "cpu_count", "torch", "torch_threads"):
        assert key in payload["machine"]
    results = payload["results"]
    assert {"overhead", "startup", "memory", "options", "steps", "section_seconds"} <= set(results)
    assert {"overhead/lenet5", "data/lenet5", "memory/lenet5", "options/channels_last",
            "options/deterministic", "options/bf16_autocast"} <= set(payload["ratios"])
    for name, value in payload["ratios"].items():
        assert math.isfinite(value) and value > 0, (name, value)
    assert results["overhead"][0]["sync_probe"]["steps"] > 0
    # Alternating blocks: 2 of ours per run (4 steps in blocks of 2), each between two of the plain loop's.
    lenet = results["overhead"][0]
    assert lenet["block_steps"] == 2 and len(lenet["block_seconds"]) == lenet["rounds"]
    for blocks in lenet["block_seconds"]:
        assert len(blocks["ours"]) == 2 and len(blocks["plain"]) == 3
    by_hand = [(blocks["plain"][i] + blocks["plain"][i + 1]) / 2 / blocks["ours"][i]
               for blocks in lenet["block_seconds"] for i in range(2)]
    assert lenet["block_ratios"] == pytest.approx(by_hand)
    assert lenet["ratio_ours_over_plain"] == pytest.approx(statistics.median(by_hand))
    bare = lenet["lightning"]  # the bare Trainer, paired with the plain loop the same way
    assert len(bare["block_ratios"]) == 2 * lenet["rounds"]
    assert lenet["ratio_ours_over_lightning"] == pytest.approx(lenet["ratio_ours_over_plain"] / bare["ratio_over_plain"])
    assert "bare Lightning / plain" in result.stdout
    allocator = results["allocator"]  # one fresh process per setting
    assert [s["taken"] for s in allocator["samples"]["reuse"]] == [platform.libc_ver()[0] == "glibc"]
    assert [s["taken"] for s in allocator["samples"]["system"]] == [False]
    assert "allocator/reuse_over_system" in payload["ratios"]
    assert results["startup"]["help_seconds"] > 0


def test_quick_benchmark_reports_the_per_step_overhead(quick_run):
    payload, result = quick_run
    steps = payload["results"]["steps"]
    contenders = ["plain", "lightning", "callbacks=none", "callbacks=default", "callbacks=diagnostics"]
    assert list(steps["us_per_step"]) == contenders
    assert all(len(v) == steps["rounds"] for v in steps["samples_us_per_step"].values())
    assert set(steps["over_lightning_us"]) == set(contenders[2:])
    for name in contenders[1:]:
        assert f"steps/over_plain_us/{name}" in payload["step_figures"]
    breakdown = steps["breakdown"]
    assert list(breakdown["categories"]) == contenders
    assert breakdown["categories"]["plain"]["Lightning hooks (module, strategy, datamodule)"] == 0
    assert breakdown["categories"]["lightning"]["our callbacks"] == 0  # the bare Trainer has none
    assert set(breakdown["over_lightning_us"]) == set(contenders[2:])
    counted = steps["counts"]
    assert set(counted["python_calls_per_step"]) == set(contenders) == set(counted["torch_ops_per_step"])
    # Counts, not times: the framework makes more Python calls per step than the plain loop, never fewer.
    assert all(counted["python_calls_per_step"][name] > counted["python_calls_per_step"]["plain"]
               for name in contenders[1:])
    assert steps["sync_probe"]["scheduled_steps"] == [49]
    assert steps["sync_probe"]["reads_per_step_outside_scheduled"] == 0
    assert "where a step's time goes" in result.stdout and "bare Lightning" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
@pytest.mark.parametrize("quick", [[], ["quick=true"]], ids=["full", "quick (scripts/gpu_check.sh's)"])
def test_gpu_suite_without_gpu_says_so_in_one_line(quick):
    """The configuration composes (quick=true on the gpu suite once failed on a key the suite lacked,
    which only a GPU machine would have shown) and the machine's lack of a GPU is one line."""
    result = run_cli("experiments.benchmark", "suite=gpu", *quick, cwd=REPO, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "suite=gpu needs a CUDA GPU" in result.stderr


def test_every_suite_composes_with_and_without_quick():
    from experiments.bench.suite import load_config

    for suite in ("cpu", "gpu"):
        for quick in ("false", "true"):
            cfg, settings = load_config([f"suite={suite}", f"quick={quick}"])
            assert settings.overhead and settings.steps and cfg.sections


@pytest.mark.parametrize("override, words", [
    ("cpu.steps.clock=sundial", ["cpu.steps.clock", "sundial", "process"]),
    ("cpu.steps.long_steps=100", ["cpu.steps.long_steps=100", "above short_steps"]),
    ("cpu.steps.callbacks=[nonsense]", ["cpu.steps.callbacks", "nonsense", "conf/callbacks"]),
    ("suite=tpu", ["suite='tpu'", "suite=cpu"]),
    ("cpu.host_allocator=tcmalloc", ["cpu.host_allocator", "tcmalloc", "reuse"]),
    ("cpu.overhead.0.block=7", ["cpu.overhead[0].block", "7", "divide steps=400"]),
    ("cpu.overhead.0.block=25", ["cpu.overhead[0].block", "25", "logging period (50 steps)", "multiple of 50"]),
    ("sections=[nosuch]", ["sections=['nosuch']", "(not nosuch)", "overhead, data"]),
    ("sections=[]", ["sections=[]", "one or more"]),
])
def test_a_bad_setting_is_refused_before_anything_runs(tmp_path, override, words):
    from tests.conftest import assert_refused

    result = run_cli("experiments.benchmark", override, f"output_dir={tmp_path / 'out'}", cwd=REPO, timeout=120)
    assert_refused(result, words)
    assert not (tmp_path / "out").exists()
