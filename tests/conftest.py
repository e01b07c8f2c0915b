"""Shared test helpers: the repo's config folder, Hydra composition, and running the real CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Under pytest-xdist (the default: -n auto in pyproject.toml) every worker, and every command it starts,
# computes on one thread: N workers on N cores, not N x N threads fighting over them.
PARALLEL = "PYTEST_XDIST_WORKER" in os.environ
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} if PARALLEL else {}


def pytest_configure(config) -> None:
    if PARALLEL:
        import torch

        torch.set_num_threads(1)


REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
TESTS = REPO / "tests"
# The model configs a user can choose; `_`-prefixed files in conf/model are bases they inherit, not options.
MODEL_NAMES = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if not p.stem.startswith("_"))


def model_config(name: str):
    """``conf/model/<name>.yaml`` composed with its bases (a plain node: ``${data.*}`` left unresolved)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="summary", overrides=[f"model={name}"])
    return OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=False))


@pytest.fixture
def compose():
    """Compose ``conf/train.yaml`` with overrides, with Hydra's runtime info available to resolvers."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    def _compose(overrides: list[str] = (), config_name: str = "train"):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg

    return _compose


def run_cli(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 300,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` the way a user does, from ``cwd``."""
    full_env = {**os.environ, "PYTHONPATH": str(TESTS / "helpers"), "WANDB_MODE": "offline",
                "HYDRA_FULL_ERROR": "0", **ONE_THREAD, **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR") if full_env.get("HYDRA_FULL_ERROR") == "0" else None
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, text=True,
                            capture_output=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-5000:]}")
    return result


def assert_refused(result: subprocess.CompletedProcess, words: list[str] = (), code: int | None = 2) -> None:
    """The command stopped with a one-paragraph error naming ``words`` (line breaks ignored), no traceback;
    ``code=None`` accepts any failing exit status."""
    failed = result.returncode != 0 if code is None else result.returncode == code
    assert failed, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    message = " ".join(result.stderr.split())
    for word in words:
        assert word in message, (word, message[-2000:])


def refused_in_process(main, argv: list[str], capsys, words: list[str] = ()) -> str:
    """Run a command's entry point in-process (no start-up): it must exit 2 with one paragraph naming
    ``words`` (line breaks ignored). Returns that message."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    message = " ".join(capsys.readouterr().err.split())
    for word in words:
        assert word in message, (word, message)
    return message


def tree_hashes(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its sha256, and every folder (as ``<folder>``): to prove a command
    changed nothing there, not even an empty folder left behind."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<folder>"
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_dir()}


def run_folders(outputs: Path) -> list[Path]:
    """The single-run folders under an outputs/ folder, oldest first."""
    return sorted(p.parent for p in outputs.glob("train/*/*/config.yaml"))


def last_weights(run: Path) -> dict:
    """The model weights in a run's checkpoints/last.ckpt."""
    import torch

    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


# Tiny and fast: LeNet-5 on learnable synthetic 1x32x32 images.
TINY = [
    "data=synthetic", "data.in_channels=1", "data.mean=[0.5]", "data.std=[0.25]", "data.num_train=384",
    "data.num_test=128", "data.val_size=128", "data.batch_size=64", "data.signal=0.3",
    "model=lenet5", "quiet=true", "callbacks=default",
]
