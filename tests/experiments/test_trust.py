"""Results you can trust: a finished run never changes, a run in use is never written by a second command,
every command makes a new folder, and a value that cannot mean what the user wants is refused (issue 16).

The run folders are copies of ``tests/fixtures/run_before_move`` (a LeNet-5 that stopped after epoch 1 of 2).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from tests.conftest import TESTS, TINY, assert_refused, run_cli, tree_hashes

from experiments.core.output_folders import new_folder
from experiments.core.runs import RunFolder

FIXTURE = TESTS / "fixtures" / "run_before_move"


def _copy(tmp_path: Path, status: str | None = None) -> Path:
    run = tmp_path / "outputs" / "train" / "2026-11-28" / "23-42-12-334941_lenet5-synthetic"
    shutil.copytree(FIXTURE, run)
    if status is not None:
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "status": status}))
    return run


def _snapshot(folder: Path) -> tuple[dict[str, str], list[str]]:
    """Every file's hash and every folder's path: a refused command must change neither."""
    return tree_hashes(folder), sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_dir())


def test_a_finished_run_is_never_resumed(tmp_path):
    run = _copy(tmp_path, status="finished")
    before = _snapshot(tmp_path)
    for target in (run, run / "checkpoints" / "last.ckpt"):
        result = run_cli("experiments.train", f"resume={target}", cwd=tmp_path)
        assert_refused(result, ["resume=", "is a finished run", "never changed", "finetune.from"])
    assert _snapshot(tmp_path) == before


def test_a_run_in_use_refuses_a_second_command(tmp_path):
    run = _copy(tmp_path)
    before = _snapshot(tmp_path)
    with RunFolder(run).locked("experiments.train"):  # as a training process holds it
        after_lock = _snapshot(tmp_path)
        resumed = run_cli("experiments.train", f"resume={run}", cwd=tmp_path)
        assert_refused(resumed, ["resume=", "is in use by experiments.train pid", "Wait until"])
        evaluated = run_cli("experiments.eval", f"run={run}", "ckpt=last", cwd=tmp_path)
        assert_refused(evaluated, ["run=", "is in use by experiments.train"])
        assert _snapshot(tmp_path) == after_lock
    assert set(after_lock[0]) - set(before[0]) == {str(Path(run.relative_to(tmp_path)) / ".lock")}


def test_the_lock_dies_with_its_holder(tmp_path):
    run = _copy(tmp_path)
    with RunFolder(run).locked():
        pass
    RunFolder(run).refuse_if_in_use("experiments.eval")  # released: no error
    with RunFolder(run).locked(), pytest.raises(Exception, match="is in use"):
        RunFolder(run).refuse_if_in_use("experiments.eval")


def test_resume_refuses_overrides_it_cannot_apply_and_applies_more_epochs(tmp_path):
    run = _copy(tmp_path)
    before = _snapshot(tmp_path)
    for extra, words in ((["model=vgg11"], ["model=", "cannot change a resumed run"]),
                         (["optimizer.lr=0.5"], ["optimizer.lr=", "cannot change a resumed run"]),
                         (["trainer.max_epochs=1"], ["trainer.max_epochs=1", "cannot shorten"])):
        assert_refused(run_cli("experiments.train", f"resume={run}", *extra, cwd=tmp_path), words)
    assert _snapshot(tmp_path) == before
    result = run_cli("experiments.train", f"resume={run}", "trainer.max_epochs=3", cwd=tmp_path, check=True)
    assert "trainer.max_epochs=3" in result.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 3


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_numbers_are_refused(tmp_path, value):
    result = run_cli("experiments.train", *TINY, f"optimizer.lr={value}", cwd=tmp_path)
    assert_refused(result, ["optimizer.lr=", "finite"])
    assert not (tmp_path / "outputs").exists(), "a refused command leaves no folder, not even outputs/"


def test_a_refused_command_leaves_an_existing_outputs_folder_as_it_was(tmp_path):
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    os.utime(outputs, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    result = run_cli("experiments.train", *TINY, "optimizer.lr=-1", cwd=tmp_path)
    assert_refused(result, ["optimizer.lr=-1"])
    assert list(outputs.iterdir()) == [] and outputs.stat().st_mtime_ns == 1_600_000_000_000_000_000


def test_every_command_makes_a_new_folder(tmp_path):
    first, second = new_folder(tmp_path, "2026-11-28_23-59-59"), new_folder(tmp_path, "2026-11-28_23-59-59")
    assert first != second and first.is_dir() and second.is_dir()


def test_two_comparisons_in_the_same_second_keep_both_reports(tmp_path, monkeypatch):
    from experiments.studies.compare import compare

    a, b = _copy(tmp_path / "a"), _copy(tmp_path / "b")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("time.strftime", lambda *_: "2026-11-28_23-59-59")  # the same second, for certain
    one = compare([a, b], html=True, print_tables=False)
    two = compare([a, b], html=True, print_tables=False)
    assert one.out != two.out
    assert one.html.is_file() and two.html.is_file()


# --- a damaged run folder is one paragraph, never a traceback -------------------------------------------
DAMAGED_CONFIG_COMMANDS = [
    ("experiments.eval", ["run={run}", "ckpt=last"]),
    ("experiments.analyze", ["run={run}", "ckpt=last", "analysis=[saliency]"]),
    ("experiments.train", ["resume={run}"]),
    ("experiments.train", [*TINY, "trainer.max_epochs=1", "finetune.from={run}", "finetune.ckpt=last"]),
]


@pytest.mark.parametrize(("command", "args"), DAMAGED_CONFIG_COMMANDS,
                         ids=["eval", "analyze", "resume", "finetune.from"])
def test_a_config_that_is_not_yaml_is_one_paragraph(tmp_path, command, args):
    run = _copy(tmp_path)
    (run / "config.yaml").write_text("model: [unclosed\n  data: {\n")
    before = _snapshot(tmp_path)
    result = run_cli(command, *[a.replace("{run}", str(run)) for a in args], cwd=tmp_path)
    assert_refused(result, ["has a damaged config.yaml", "Restore the file"])
    assert _snapshot(tmp_path) == before


def test_compare_and_report_skip_a_damaged_run_and_report_the_rest(tmp_path):
    sweep = tmp_path / "sweep"
    for name in ("0_good", "1_damaged", os.fsdecode(b"2_bad\xff")):
        shutil.copytree(FIXTURE, sweep / name)
    (sweep / "1_damaged" / "summary.json").write_text('{"status": "fini')
    compared = run_cli("experiments.compare", str(sweep), "--out", str(tmp_path / "cmp"), cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr[-2000:]
    assert "Traceback" not in compared.stderr
    message = " ".join(compared.stderr.split())
    assert "skipped run=" in message and "damaged summary.json" in message and "not valid UTF-8" in message
    rows = (tmp_path / "cmp" / "runs.csv").read_text().splitlines()
    assert len(rows) == 2 and "0_good" in rows[1]  # the header and the one good run
    reported = run_cli("experiments.report", str(sweep), cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr[-2000:]
    assert "0_good" in (sweep / "report.html").read_text()


def test_sweep_report_reads_a_command_line_grid_and_says_what_a_file_is(tmp_path):
    run_cli("experiments.train", "-m", *TINY, "trainer.max_epochs=1", "optimizer.lr=-1,0.05", cwd=tmp_path,
            check=True)
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    reported = run_cli("experiments.sweep_report", str(sweep), "--no-plots", cwd=tmp_path, check=True)
    assert "optimizer.lr=-1: must be > 0" in " ".join(reported.stdout.split())  # the failed trial's reason
    assert "best: trial 1" in reported.stdout
    assert_refused(run_cli("experiments.sweep_report", str(FIXTURE / "summary.json"), cwd=tmp_path),
                   ["is a file, not a sweep folder"])


def test_a_command_line_grid_whose_every_job_failed_exits_1_with_the_reasons(tmp_path):
    result = run_cli("experiments.train", "-m", *TINY, "trainer.max_epochs=1", "optimizer.lr=-1,-2", cwd=tmp_path)
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert "every job of this multirun failed (2 of 2: 2 user_error)" in message
    assert "optimizer.lr=-1: must be > 0" in message and "optimizer.lr=-2: must be > 0" in message
    assert "Traceback" not in result.stderr


def test_comparing_one_folder_twice_keeps_both_reports(tmp_path, monkeypatch):
    from experiments.studies.compare import compare

    run = _copy(tmp_path)
    one, two = (compare([run], print_tables=False) for _ in range(2))
    assert (one.out.name, two.out.name) == ("compare", "compare-2")
    assert (one.out / "runs.csv").is_file() and (two.out / "runs.csv").is_file()


def test_ctrl_c_before_training_keeps_no_folder(tmp_path):
    # Ctrl-C while the data loads: the datamodule's constructor raises KeyboardInterrupt, as Python does.
    result = run_cli("experiments.train", *TINY, "data._target_=crash_callbacks.interrupted_datamodule",
                     cwd=tmp_path)
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert "Interrupted before training started; no run folder was kept." in result.stderr
    assert not list((tmp_path / "outputs").rglob("*.log")) and not list((tmp_path / "outputs").glob("train/*"))


@pytest.mark.parametrize(("args", "match"), [
    (["trainer=gpu"], r"trainer.accelerator='gpu': is not available: this machine has no visible GPU"),
    (["trainer.accelerator=tpu"], r"trainer.accelerator='tpu': is not available"),
    (["trainer.devices=0"], r"trainer.devices=0: asks for no device at all"),
])
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has the GPU the test says is missing")
def test_hardware_that_is_not_there_is_one_paragraph(compose, args, match):
    from experiments.core.errors import UserError
    from experiments.training.validation import validate

    with pytest.raises(UserError, match=match):
        validate(compose([*TINY, *args]))


def test_messages_name_what_the_user_gave(tmp_path):
    evaluated = run_cli("experiments.eval", f"run={FIXTURE / 'config.yaml'}", cwd=tmp_path)
    assert_refused(evaluated, ["is a file of run", "but not a checkpoint", f"run={FIXTURE}"])
    summary = run_cli("experiments.summary", "model=resnet20", "data.image_size=0", cwd=tmp_path)
    assert_refused(summary, ["data.image_size=0", "sets model.input_size", "Set data.image_size"])


def test_sweep_report_says_why_a_trial_is_unreadable(tmp_path):
    from experiments.sweeps.report import read_sweep

    sweep = tmp_path / "sweep"
    shutil.copytree(FIXTURE, sweep / "0_lenet5-synthetic")
    (sweep / "0_lenet5-synthetic" / "summary.json").write_text("{not json")
    _, (trial,) = read_sweep(sweep)
    assert trial.status == "unreadable" and "damaged summary.json" in trial.reason
