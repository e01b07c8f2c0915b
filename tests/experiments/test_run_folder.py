"""The run folder is the contract between training and every later tool (``experiments.core.runs.RunFolder``).

``tests/fixtures/run_before_move`` is a real run folder written by the code before it moved into packages
(issue 15): its ``config.yaml`` names ``experiments.loggers.*`` and its ``last.ckpt`` holds the absolute
paths of the folder it was written in (``/tmp/oldrun/...``). It is a LeNet-5 on synthetic data that died
at the start of its second epoch (``callbacks.die``), so it can be evaluated, analysed, compared,
fine-tuned from and resumed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.conftest import TESTS, TINY, run_cli, run_folders, tree_hashes

from experiments.core.errors import UserError
from experiments.core.runs import RunFolder

FIXTURE = TESTS / "fixtures" / "run_before_move"


@pytest.fixture
def old_run(tmp_path) -> Path:
    """A copy of the run folder from before the move, in a new place (a folder is movable)."""
    run = tmp_path / "outputs" / "train" / "2026-11-28" / "23-42-12-334941_lenet5-synthetic"
    shutil.copytree(FIXTURE, run)
    return run


def test_the_old_config_names_code_that_moved_and_paths_of_another_folder():
    text = (FIXTURE / "config.yaml").read_text()
    assert "experiments.loggers.RunCSVLogger" in text and "/tmp/oldrun/" in text
    config = RunFolder(FIXTURE).config()
    assert config.logger.csv._target_ == "experiments.training.loggers.RunCSVLogger"
    assert config.logger.wandb._target_ == "experiments.training.loggers.make_wandb_logger"
    assert config.paths.run_dir == str(FIXTURE.absolute())
    assert config.callbacks.checkpoint.dirpath == str(FIXTURE.absolute() / "checkpoints")
    assert "/tmp/oldrun" not in json.dumps(dict(config.callbacks), default=str)


def test_eval_analyze_and_compare_read_a_run_folder_from_before_the_move(old_run):
    cwd = old_run.parents[3]
    evaluated = run_cli("experiments.eval", f"run={old_run}", "ckpt=last", cwd=cwd, check=True)
    assert "test" in evaluated.stdout
    (record,) = (old_run / "eval").glob("*.json")
    assert 0.0 <= json.loads(record.read_text())["metrics"]["test/acc"] <= 100.0
    run_cli("experiments.analyze", f"run={old_run}", "ckpt=last", "analysis=[saliency]",
            "analysis.saliency.num_images=2", cwd=cwd, check=True)
    assert (old_run / "analysis" / "saliency.json").is_file()
    compared = run_cli("experiments.compare", str(old_run), "--out", str(cwd / "compare"), cwd=cwd, check=True)
    assert old_run.name in compared.stdout
    assert (cwd / "compare" / "runs.csv").is_file()


def test_finetune_from_and_resume_of_a_run_folder_from_before_the_move(old_run):
    cwd = old_run.parents[3]
    run_cli("experiments.train", *TINY, "trainer.max_epochs=1", f"finetune.from={old_run}", "finetune.ckpt=last",
            "finetune=head", cwd=cwd, check=True)
    (tuned,) = [r for r in run_folders(cwd / "outputs") if r != old_run]
    assert json.loads((tuned / "summary.json").read_text())["finetune"]["copied_tensors"] > 0

    run_cli("experiments.train", f"resume={old_run}", cwd=cwd, check=True)
    summary = json.loads((old_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 2
    # The resumed run wrote into its own (copied) folder and tested its own best checkpoint.
    assert sorted(p.name for p in (old_run / "checkpoints").glob("best*.ckpt"))
    assert summary["run_dir"] == str(old_run)


# --- RunFolder on damaged and partial folders -----------------------------------------------------------
def test_a_missing_optional_file_reads_as_empty(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    folder = RunFolder(tmp_path)
    assert folder.summary() == {} and folder.failure() is None and folder.epochs() == []
    assert folder.overrides() == [] and folder.choices() == {} and folder.status() == "unknown"


@pytest.mark.parametrize(("name", "text", "read"), [
    ("config.yaml", "model: [unclosed\n", "config"),
    ("config.yaml", "- a list\n", "config"),
    ("summary.json", '{"status": "finis', "summary"),
    ("summary.json", "[1, 2]", "summary"),
    ("failure.json", "\x00\x01", "failure"),
])
def test_a_damaged_file_is_one_user_error_naming_it(tmp_path, name, text, read):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=rf"run='{tmp_path}'.*{name}.*(Restore|pick another)"):
        getattr(RunFolder(tmp_path), read)()


def test_epochs_merge_the_train_and_val_rows_of_each_epoch(tmp_path):
    (tmp_path / "metrics.csv").write_text(
        "epoch,step,train/err,val/err,test/err,lr-SGD\n"
        "0,9,50.0,,,\n0,9,,40.0,,\n1,19,30.0,,,\n1,19,,25.0,,\n,,,,20.0,\n1,19,,,,0.1\n")
    assert RunFolder(tmp_path).epochs() == [
        {"epoch": 0, "step": 9.0, "train/err": 50.0, "val/err": 40.0},
        {"epoch": 1, "step": 19.0, "train/err": 30.0, "val/err": 25.0},
    ]


def test_a_checkpoint_file_or_config_file_names_its_run_folder(tmp_path):
    folder, explicit = RunFolder.of(FIXTURE / "checkpoints" / "last.ckpt")
    assert folder.path == FIXTURE and explicit == FIXTURE / "checkpoints" / "last.ckpt"
    assert RunFolder.of(FIXTURE)[1] is None
    with pytest.raises(UserError, match="is not a run folder"):
        RunFolder.of(tmp_path)


def test_reading_a_run_folder_writes_nothing():
    before = tree_hashes(FIXTURE)
    folder = RunFolder(FIXTURE)
    folder.config(), folder.summary(), folder.epochs(), folder.overrides(), folder.choices(), folder.checkpoint("best")
    assert tree_hashes(FIXTURE) == before
