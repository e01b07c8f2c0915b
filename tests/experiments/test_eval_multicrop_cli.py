"""``experiments.eval eval.crops=... eval.runs=[...]`` end to end on two tiny real training runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tests.conftest import TINY, assert_refused, run_cli, tree_hashes


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two LeNet-5 runs of one epoch on the same synthetic data, different seeds (one multirun)."""
    workdir = tmp_path_factory.mktemp("project")
    run_cli("experiments.train", "-m", *TINY, "trainer.max_epochs=1", "seed=1,2", cwd=workdir, check=True)
    runs = sorted(p.parent for p in workdir.glob("outputs/multirun/*/*/*/summary.json"))
    assert len(runs) == 2
    return runs[0], runs[1]


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())["metrics"]


def _records(run: Path, pattern: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / "eval").glob(pattern))]


def _row(record: dict, crops: int, models: int = 1, run: Path | None = None) -> dict:
    rows = [r for r in record["rows"] if r["crops"] == crops and r["models"] == models
            and (run is None or r.get("run_dir") == str(run))]
    assert len(rows) == 1, record["rows"]
    return rows[0]


def test_one_crop_reproduces_the_runs_test_error_and_ten_crops_are_reported(two_runs):
    from experiments.evaluation.evaluate import main

    run, _ = two_runs
    record = main([f"run={run}", "eval.crops=[1,10]"])  # in-process: the command line's own code path
    assert _records(run, "2*.json") == [record]  # <run>/eval/<time>.json
    assert record["kind"] == "multicrop" and record["crops"] == [1, 10] and record["num_test"] == 128
    single = _row(record, 1)
    # The test error the run reported at the end of training, to float32 rounding of torchmetrics.
    assert single["top1_err"] == pytest.approx(_summary(run)["test/err"], abs=1e-4)
    assert single["top5_err"] == pytest.approx(_summary(run)["test/err5"], abs=1e-4)
    ten = _row(record, 10)
    assert 0 <= ten["top5_err"] <= ten["top1_err"] <= 100
    assert record["members"][0]["errors"] == {str(c): {k: _row(record, c)[k] for k in ("top1_err", "top5_err")}
                                              for c in (1, 10)}


def test_an_ensemble_averages_the_probabilities_of_two_different_runs(two_runs):
    from experiments.evaluation.ensemble import crop_probabilities, errors_of
    from experiments.evaluation.evaluate import main
    from experiments.evaluation.trained import load_trained

    first, second = two_runs
    record = main([f"eval.runs=[{first},{second}]", "eval.crops=[1,10]"])
    assert record["kind"] == "ensemble" and len(record["members"]) == 2
    # The mean computed here, independently: each run's own probabilities, averaged by hand.
    (labels, p1), (_, p2) = (crop_probabilities(load_trained(r), [1, 10]) for r in (first, second))
    for crops in (1, 10):
        mean = (p1[crops] + p2[crops]) / 2
        assert record["ensemble"][str(crops)] == errors_of(mean, labels, record["top_k"])
    # ... which is neither member alone (so a "first member only" or "last member only" bug shows).
    singles = [errors_of(p[1], labels, record["top_k"]) for p in (p1, p2)]
    assert singles[0] != singles[1] and record["ensemble"]["1"] not in singles
    Path(record["path"]).unlink()  # leave the folder to the other tests as it was


def test_a_run_listed_twice_counts_once(two_runs, capsys):
    from experiments.evaluation.evaluate import main

    run, _ = two_runs
    record = main([f"run={run}", f"eval.runs=[{run}]", "data.test_subset=4"])
    assert record["kind"] == "multicrop" and len(record["members"]) == 1
    assert "counted once" in capsys.readouterr().err
    Path(record["path"]).unlink()


def test_ensemble_of_two_runs_on_the_command_line(two_runs):
    first, second = two_runs
    before = tree_hashes(second)
    result = run_cli("experiments.eval", f"eval.runs=[{first},{second}]", "eval.crops=[1,10]", cwd=first, check=True)
    (record,) = _records(first, "ensemble-*.json")  # <first run>/eval/ensemble-<time>.json
    assert tree_hashes(second) == before, "only the first run's eval/ folder is written"
    assert [m["run_dir"] for m in record["members"]] == [str(first), str(second)]
    for run in (first, second):  # each member's single-crop error is its own test error
        single = _row(record, 1, 1, run)
        assert single["top1_err"] == pytest.approx(_summary(run)["test/err"], abs=1e-4)
        assert single["top5_err"] == pytest.approx(_summary(run)["test/err5"], abs=1e-4)
        member = next(m for m in record["members"] if m["run_dir"] == str(run))
        assert member["errors"]["1"] == {k: single[k] for k in ("top1_err", "top5_err")}
    for crops in (1, 10):
        ensemble = _row(record, crops, models=2)
        assert record["ensemble"][str(crops)] == {k: ensemble[k] for k in ("top1_err", "top5_err")}
        assert 0 <= ensemble["top5_err"] <= ensemble["top1_err"] <= 100
    # The table: both runs and the ensemble side by side, for each crop scheme.
    assert "top-1 err" in result.stdout and "top-5 err" in result.stdout
    rows = [line for line in result.stdout.splitlines()
            if line.startswith(("0_lenet5-synthetic", "1_lenet5-synthetic", "ensemble of 2"))]
    assert [line.split()[-3] for line in rows] == ["1", "1", "1", "10", "10", "10"]  # the crops column
    assert rows[2].startswith("ensemble of 2") and rows[5].startswith("ensemble of 2")
    for row, line in zip(record["rows"], rows):
        assert line.split()[-2:] == [f"{row['top1_err']:.2f}%", f"{row['top5_err']:.2f}%"]


# --- bad inputs: one paragraph, exit 2, nothing changed -------------------------------------------------
def _copy_with(run: Path, where: Path, **changes) -> Path:
    """A copy of ``run`` (outside outputs/) whose config.yaml has other data settings."""
    copy = where / f"copy-{'-'.join(changes)}"
    if not copy.exists():
        shutil.copytree(run, copy)
        cfg = OmegaConf.load(copy / "config.yaml")
        for key, value in changes.items():
            OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
        OmegaConf.save(cfg, copy / "config.yaml")
    return copy


BAD = [
    (["run={A}", "eval.crops=7"], ["eval.crops='7'", "1, 10 or 144"]),
    (["run={A}", "eval.crops=abc"], ["eval.crops='abc'", "not a crop scheme"]),
    (["run={A}", "eval.crops=[]"], ["eval.crops='[]'", "is empty"]),
    (["eval.runs=[]"], ["eval.runs='[]'", "is empty"]),
    (["eval.runs=[{A},outputs/no/such/run]"], ["eval.runs='outputs/no/such/run'", "does not exist"]),
    (["run={A}", "eval.resize_ratio=0.5"], ["eval.resize_ratio='0.5'", ">= 1"]),
    (["run={A}", "eval.resize_ratio=1000"], ["eval.resize_ratio='1000'", "is past 4"]),
    (["run={A}", "eval.crop=10"], ["eval.crop='10'", "eval.crops"]),
    (["eval.runs=[{A},{classes}]"], ["eval.runs=", "data.num_classes=5", "same dataset"]),
    (["eval.runs=[{A},{size}]"], ["eval.runs=", "data.image_size=28"]),
    (["run={A}", "eval.runs=[{dataset}]"], ["eval.runs=", "data._target_=data.digits.DigitsDataModule"]),
]


@pytest.mark.parametrize(("args", "words"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_eval_inputs_are_one_paragraph_and_change_nothing(two_runs, tmp_path_factory, args, words):
    first, _ = two_runs
    outputs = first.parents[3]
    copies = tmp_path_factory.getbasetemp() / "copies"
    copies.mkdir(exist_ok=True)
    places = {"A": str(first), "classes": str(_copy_with(first, copies, data__num_classes=5)),
              "size": str(_copy_with(first, copies, data__image_size=28)),
              "dataset": str(_copy_with(first, copies, data___target_="data.digits.DigitsDataModule"))}
    args = [a.format(**places) for a in args]
    before = tree_hashes(outputs)
    result = run_cli("experiments.eval", *args, cwd=outputs.parent, timeout=120)
    assert_refused(result, words)
    assert tree_hashes(outputs) == before


def test_members_with_other_test_images_are_refused_before_anything_is_written(two_runs, tmp_path, capsys):
    """Same dataset, classes, size and count, but another data seed: caught by comparing the labels."""
    from experiments.evaluation.evaluate import main

    first, _ = two_runs
    other = _copy_with(first, tmp_path, data__seed=7)
    before = tree_hashes(first.parents[3]), tree_hashes(other)
    with pytest.raises(SystemExit) as stop:
        main([f"eval.runs=[{first},{other}]", "eval.crops=1"])
    assert stop.value.code == 2
    message = "".join(capsys.readouterr().err.split())  # long paths may be wrapped anywhere
    assert f"eval.runs='{other}':hasothertestlabels" in message and f"thanthefirstrun({first})" in message
    assert (tree_hashes(first.parents[3]), tree_hashes(other)) == before
