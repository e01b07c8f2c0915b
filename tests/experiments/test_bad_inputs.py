"""Every bad input exits non-zero with one clear paragraph, no traceback, and changes nothing on disk."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from tests.conftest import TINY, run_cli, tree_hashes

# (arguments, words the message must contain)
TRAIN_CASES = [
    (["model=nonexistent"], ["model/nonexistent", "Available options"]),
    (["optimizer.lrr=0.1"], ["optimizer.lrr"]),
    (["data.batch_size=abc"], ["data.batch_size", "abc"]),
    (["data.batch_size=0"], ["data.batch_size=0"]),
    (["optimizer.lr=0"], ["optimizer.lr=0", "positive"]),
    (["optimizer.lr=-0.1"], ["optimizer.lr=-0.1"]),
    (["optimizer.momentum=1.5"], ["optimizer.momentum"]),
    (["trainer.max_epochs=0"], ["trainer.max_epochs=0"]),
    (["trainer.precision=17"], ["trainer.precision"]),
    (["model.dropout=1.5"], ["model.dropout=1.5"]),
    (["data.image_size=12"], ["input_size=12", "data.image_size=32"]),
    (["data.val_size=100000"], ["data.val_size"]),
    (["data.augment.crop_padding=-4"], ["data.augment.crop_padding"]),
    (["scheduler=multistep", "scheduler.milestones=[1.5]"], ["scheduler.milestones", "fraction"]),
    (["data=cifar10", "data.root=missing_folder", "data.download=false"], ["data.root", "cifar10", "not found"]),
    (["data=svhn", "data.root=missing_folder", "data.download=false"], ["data.root", "svhn", "not found"]),
    (["resume=true"], ["resume", "found no unfinished run"]),
    (["resume=no/such/run"], ["resume", "does not exist"]),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A project folder whose outputs/ already holds a finished run that nothing may touch."""
    folder = tmp_path_factory.mktemp("project")
    run_cli("experiments.train", *TINY, "trainer.max_epochs=1", cwd=folder, check=True)
    return folder


def _finished_run(workdir: Path) -> Path:
    return next(workdir.glob("outputs/train/*/*/summary.json")).parent


def _assert_clean_failure(result, words: list[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for word in words:
        assert word in result.stderr, (word, result.stderr[-2000:])


@pytest.mark.parametrize(("args", "words"), TRAIN_CASES, ids=[" ".join(a) for a, _ in TRAIN_CASES])
def test_train_rejects_bad_input_cleanly(workdir, args, words):
    before = tree_hashes(workdir / "outputs")
    base = ["quiet=true"] if any(a.startswith("data=") for a in args) else TINY
    result = run_cli("experiments.train", *base, "trainer.max_epochs=1", *args, cwd=workdir, timeout=120)
    _assert_clean_failure(result, words)
    assert tree_hashes(workdir / "outputs") == before, "a failed command must leave outputs/ as it was"


def test_eval_of_a_missing_run(workdir):
    result = run_cli("experiments.eval", "run=outputs/not/there", cwd=workdir)
    _assert_clean_failure(result, ["run=", "does not exist"])


def test_eval_with_a_checkpoint_of_another_architecture(workdir, tmp_path):
    run = _finished_run(workdir)
    before = tree_hashes(workdir / "outputs")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"model.stem.weight": torch.zeros(16, 3, 3, 3)}}, foreign)
    copy = run / "checkpoints" / "foreign.ckpt"
    shutil.copy(foreign, copy)
    try:
        result = run_cli("experiments.eval", f"run={copy}", cwd=workdir)
    finally:
        copy.unlink()
    _assert_clean_failure(result, ["checkpoint", "another architecture"])
    assert tree_hashes(workdir / "outputs") == before


def test_eval_of_a_truncated_checkpoint(workdir):
    run = _finished_run(workdir)
    broken = run / "checkpoints" / "broken.ckpt"
    broken.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes()[:2000])
    try:
        result = run_cli("experiments.eval", f"run={broken}", cwd=workdir)
    finally:
        broken.unlink()
    _assert_clean_failure(result, ["checkpoint", "truncated"])


class _Payload:
    """Unpickling this would create a file: the classic malicious-checkpoint shape."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_eval_refuses_a_checkpoint_that_would_run_code(workdir, tmp_path):
    run = _finished_run(workdir)
    marker = tmp_path / "pwned"
    evil = run / "checkpoints" / "evil.ckpt"
    with evil.open("wb") as handle:
        pickle.dump({"state_dict": _Payload(marker)}, handle)
    try:
        result = run_cli("experiments.eval", f"run={evil}", cwd=workdir)
    finally:
        evil.unlink()
    _assert_clean_failure(result, ["checkpoint", "refused"])
    assert not marker.exists()


def test_hydra_full_error_shows_the_traceback(workdir):
    result = run_cli("experiments.train", *TINY, "optimizer.lr=0", cwd=workdir, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr
