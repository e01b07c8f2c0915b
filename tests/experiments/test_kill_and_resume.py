"""Killing a real training process mid-epoch (SIGTERM or SIGKILL) loses nothing: the resumed run ends
with exactly the weights and metrics of a run that was never interrupted."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from tests.conftest import TINY, last_weights, run_cli, run_folders

# 28 steps per epoch; the runs signal themselves at a known step (SignalAtStep), mid-epoch.
COMMAND = [*TINY, "data.num_train=1024", "data.batch_size=32", "trainer.max_epochs=3", "model.dropout=0.3",
           "data.augment.crop_padding=2", "data.augment.hflip=true", "scheduler=cosine"]




@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("whole")
    run_cli("experiments.train", *COMMAND, cwd=workdir, check=True)
    return run_folders(workdir / "outputs")[0]


def _kill_at(step: int, sig: str) -> list[str]:
    """Overrides that make the run signal itself after optimizer step ``step`` (with CNN_TEST_DIE set)."""
    return ["+callbacks.sig._target_=crash_callbacks.SignalAtStep", f"+callbacks.sig.step={step}",
            f"+callbacks.sig.signal={sig}"]


def _start_and_kill(workdir: Path, sig: str) -> tuple[int, Path, int, str]:
    """Run COMMAND and kill it with a real signal at step 40: 12 steps into the second epoch of 28."""
    result = run_cli("experiments.train", *COMMAND, *_kill_at(40, sig), cwd=workdir, env={"CNN_TEST_DIE": "1"})
    (run,) = run_folders(workdir / "outputs")
    step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    return result.returncode, run, step, result.stderr


def _assert_same_end(run: Path, reference: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    expected = json.loads((reference / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == expected["steps"]
    for key in ("val/err_best", "test/acc", "test/loss", "train/loss"):
        assert summary["metrics"][key] == pytest.approx(expected["metrics"][key], rel=1e-5, abs=1e-6), key
    ours, theirs = last_weights(run), last_weights(reference)
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in theirs)


def test_sigterm_mid_epoch_saves_state_and_resumes_exactly(uninterrupted, tmp_path):
    code, run, step, stderr = _start_and_kill(tmp_path, "SIGTERM")
    assert code == 143, stderr[-2000:]
    assert "Continue with: python -m experiments.train resume=" in stderr
    assert "Traceback" not in stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert step == 40, "the state at the signal's step was saved"
    # host_allocator may be set anew on resume: it changes where memory comes from, not what is trained
    run_cli("experiments.train", f"resume={run}", "quiet=true", "host_allocator=system", cwd=tmp_path, check=True)
    _assert_same_end(run, uninterrupted)


@pytest.mark.slow  # the default suite's test_resume kills a run with os._exit, which is the same as SIGKILL
def test_sigkill_mid_epoch_resumes_from_the_last_complete_epoch_exactly(uninterrupted, tmp_path):
    code, run, step, _ = _start_and_kill(tmp_path, "SIGKILL")
    assert code == -signal.SIGKILL
    assert json.loads((uninterrupted / "summary.json").read_text())["steps"] == 84  # 28 per epoch (1024 - 128 held out = 896 images)
    assert step == 28, "after SIGKILL the last complete epoch's checkpoint remains"
    run_cli("experiments.train", *COMMAND, *_kill_at(40, "SIGKILL"), "resume=true", cwd=tmp_path, check=True)
    _assert_same_end(run, uninterrupted)


def test_sigterm_in_the_last_epoch_keeps_the_epochs_running_sums(uninterrupted, tmp_path):
    # Step 75 of 84 lies inside the last epoch: its train/loss must still average every batch.
    stopped = run_cli("experiments.train", *COMMAND, *_kill_at(75, "SIGTERM"), cwd=tmp_path, env={"CNN_TEST_DIE": "1"})
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    (run,) = run_folders(tmp_path / "outputs")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 75
    run_cli("experiments.train", f"resume={run}", cwd=tmp_path, check=True)
    _assert_same_end(run, uninterrupted)
