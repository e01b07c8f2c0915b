"""experiments.compare / experiments.report on run folders written here, with known numbers."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments.studies import compare as compare_cli
from experiments.studies import report as report_cli
from experiments.studies.compare import compare


def write_run(folder: Path, *, depth: int, residual: bool, seed: int, train: list[float], val: list[float],
              test: float | None = 10.0, params: int = 1000, status: str = "finished", metrics: bool = True) -> Path:
    """A run folder as training leaves it: config.yaml, .hydra/overrides.yaml, metrics.csv, summary.json."""
    folder.mkdir(parents=True)
    config = {"seed": seed, "model": {"_target_": "models.resnet.ResNet", "depth": depth, "residual": residual},
              "optimizer": {"lr": 0.1}}
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    (folder / ".hydra").mkdir()
    overrides = [f"model.depth={depth}", f"model.residual={str(residual).lower()}", f"seed={seed}"]
    (folder / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    if metrics:
        with (folder / "metrics.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["epoch", "step", "train/loss_step", "train/err", "train/loss", "val/err", "val/loss",
                             "test/err"])
            step = 0
            for epoch, (t, v) in enumerate(zip(train, val, strict=True)):
                step += 10
                writer.writerow([epoch, step - 5, 1.0, "", "", "", "", ""])          # a step row
                writer.writerow([epoch, step - 1, "", "", "", v, 0.5, ""])            # the val row
                writer.writerow([epoch, step - 1, "", t, 0.4, "", "", ""])            # the train row
            if test is not None:
                writer.writerow([len(train), step, "", "", "", "", "", test])
    summary = {"status": status, "seed": seed, "params": params, "macs": params * 100, "wall_time_s": 12.5,
               "test_err": test, "best_val_err": min(val) if val else None, "metrics": {},
               "command": "python -m experiments.train " + " ".join(overrides)}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def by_key(rows: list[dict], **values) -> dict:
    (row,) = [r for r in rows if all(r[k] == v for k, v in values.items())]
    return row


@pytest.fixture
def degradation_sweep(tmp_path) -> Path:
    """Plain: 56 trains worse than 20. Residual: 56 better than 20. Two seeds of plain-20."""
    sweep = tmp_path / "sweep"
    write_run(sweep / "0_plain20", depth=20, residual=False, seed=1, train=[40, 20, 10], val=[42, 24, 14], test=13)
    write_run(sweep / "1_plain20", depth=20, residual=False, seed=2, train=[40, 22, 12], val=[43, 25, 16], test=15)
    write_run(sweep / "2_plain56", depth=56, residual=False, seed=1, train=[50, 30, 18], val=[52, 33, 21], test=20)
    write_run(sweep / "3_resnet20", depth=20, residual=True, seed=1, train=[35, 18, 9], val=[37, 21, 12], test=11)
    write_run(sweep / "4_resnet56", depth=56, residual=True, seed=1, train=[33, 15, 6], val=[35, 19, 10], test=9)
    (sweep / "multirun.yaml").write_text("hydra:\n  sweeper:\n    params:\n      model.depth: 20,56\n")
    return sweep


def test_groups_and_mean_std_in_the_tables(degradation_sweep, tmp_path):
    result = compare([degradation_sweep], by=["model.depth", "model.residual"], out=tmp_path / "out",
                     print_tables=False)
    assert result.keys == ["model.depth", "model.residual"]
    assert len(result.runs) == 5 and len(result.groups) == 4
    plain20 = by_key(result.group_rows, **{"model.depth": "20", "model.residual": "false"})
    assert plain20["n"] == 2 and plain20["seeds"] == "1 2"
    assert plain20["final_train_err_mean"] == pytest.approx(11.0)
    assert plain20["final_train_err_std"] == pytest.approx(2 ** 0.5)   # sample std of 10 and 12
    assert plain20["best_val_err_best"] == pytest.approx(14.0)
    assert plain20["best_val_err_mean"] == pytest.approx(15.0)
    assert plain20["test_err_mean"] == pytest.approx(14.0)
    resnet56 = by_key(result.group_rows, **{"model.depth": "56", "model.residual": "true"})
    assert resnet56["n"] == 1 and resnet56["final_train_err_std"] is None and resnet56["best_train_err_best"] == 6
    run = by_key(result.run_rows, run="2_plain56")
    assert (run["final_train_err"], run["best_val_err"], run["final_val_err"], run["test_err"]) == (18, 21, 21, 20)
    assert run["epochs"] == 3 and run["params"] == 1000 and run["macs"] == 100000 and run["gap"] == 3
    # the saved tables hold the same numbers
    groups_md = (tmp_path / "out" / "groups.md").read_text()
    assert "10.00 (11.00 ± 1.41)" in groups_md and "14.00 (15.00 ± 1.41)" in groups_md
    with (tmp_path / "out" / "groups.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert float(by_key(rows, **{"model.depth": "20", "model.residual": "false"})["final_train_err_mean"]) == 11.0
    assert "| 2_plain56 | 56 | false |" in (tmp_path / "out" / "runs.md").read_text()
    assert (tmp_path / "out" / "curves.png").stat().st_size > 1000
    assert "<svg" in (tmp_path / "out" / "curves.svg").read_text()


def test_default_grouping_is_what_the_runs_vary(degradation_sweep, tmp_path):
    result = compare([degradation_sweep], out=tmp_path / "out", print_tables=False)
    assert result.keys == ["model.depth", "model.residual"]   # seed varies too but is not a configuration


def test_degradation_verdict_true(degradation_sweep, tmp_path):
    result = compare([degradation_sweep], by=["model.depth", "model.residual"], out=tmp_path / "out",
                     print_tables=False)
    verdict = json.loads((tmp_path / "out" / "degradation.json").read_text())
    assert verdict["plain_degrades"] is True and verdict["residual_deeper_not_worse"] is True
    assert verdict["reproduced"] is True
    assert verdict["plain"]["shallow_final_train_err"] == pytest.approx(11.0)   # mean of the two seeds
    assert verdict["plain"]["deep_final_train_err"] == pytest.approx(18.0)
    assert result.degradation["verdict"].startswith("Degradation REPRODUCED")


def test_degradation_verdict_false(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", depth=20, residual=False, seed=1, train=[30, 20], val=[30, 20])
    write_run(sweep / "1", depth=56, residual=False, seed=1, train=[30, 15], val=[30, 20])   # deeper plain better
    write_run(sweep / "2", depth=20, residual=True, seed=1, train=[30, 10], val=[30, 20])
    write_run(sweep / "3", depth=56, residual=True, seed=1, train=[30, 12], val=[30, 20])    # deeper resnet worse
    compare([sweep], out=tmp_path / "out", print_tables=False)
    verdict = json.loads((tmp_path / "out" / "degradation.json").read_text())
    assert verdict["plain_degrades"] is False and verdict["residual_deeper_not_worse"] is False
    assert verdict["reproduced"] is False and "NOT reproduced" in verdict["verdict"]


def test_no_verdict_without_both_families(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "0", depth=20, residual=False, seed=1, train=[30, 20], val=[30, 20])
    write_run(sweep / "1", depth=56, residual=False, seed=1, train=[30, 25], val=[30, 20])
    result = compare([sweep], out=tmp_path / "out", print_tables=False)
    assert result.degradation is None and not (tmp_path / "out" / "degradation.json").exists()


def test_missing_and_unequal_epochs_are_plotted_with_a_note(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "0_full", depth=20, residual=False, seed=1, train=[30, 20, 10, 8], val=[30, 20, 15, 14])
    write_run(sweep / "1_short", depth=56, residual=False, seed=1, train=[30, 25], val=[31, 26], test=None,
              status="interrupted")
    write_run(sweep / "2_nometrics", depth=56, residual=True, seed=1, train=[], val=[], metrics=False,
              status="failed")
    result = compare([sweep], by=["model.depth", "model.residual"], out=tmp_path / "out", print_tables=False)
    notes = "\n".join(result.notes)
    assert "Unequal epochs" in notes and "1_short (2)" in notes and "longest run has 4" in notes
    assert "2_nometrics: no metrics.csv" in notes and "1_short: status interrupted" in notes
    assert (tmp_path / "out" / "notes.txt").read_text().count("\n") == len(result.notes)
    assert result.figure_png is not None and result.figure_png.is_file()
    short = by_key(result.run_rows, run="1_short")
    assert short["epochs"] == 2 and short["final_train_err"] == 25 and short["test_err"] is None
    assert by_key(result.run_rows, run="2_nometrics")["final_train_err"] is None


def _assert_self_contained(html: str) -> None:
    for bad in ("http://", "https://", 'src="//', "src='//", "<link", "<script", "url("):
        assert bad not in html, bad
    for src in re.findall(r'src="([^"]*)"', html):
        assert src.startswith("data:image/png;base64,")


def test_html_report_is_one_self_contained_file(degradation_sweep, tmp_path):
    # a URL inside a config value must not become a reference either
    config = degradation_sweep / "0_plain20" / "config.yaml"
    config.write_text(config.read_text() + "docs: https://example.org/x\n")
    out = tmp_path / "out"
    assert compare_cli.main([str(degradation_sweep), "--by", "model.depth,model.residual", "--html",
                             "--out", str(out)]) == 0
    html_files = list(out.glob("*.html"))
    assert html_files == [out / "report.html"]
    html = html_files[0].read_text()
    _assert_self_contained(html)
    assert html.count("data:image/png;base64,") == 1
    assert "<table>" in html and "10.00 (11.00 ± 1.41)" in html and "Degradation REPRODUCED" in html
    assert "python -m experiments.train model.depth=56 model.residual=false seed=1" in html   # command lines
    assert "residual: false" in html   # the composed configs
    assert "multirun.yaml" in html


def test_report_for_one_run_and_for_a_sweep(degradation_sweep, capsys):
    run = degradation_sweep / "2_plain56"
    assert report_cli.main([str(run)]) == 0
    html = (run / "report.html").read_text()
    _assert_self_contained(html)
    assert "data:image/png;base64," in html and "<table>" in html and "2_plain56" in html
    assert report_cli.main([str(degradation_sweep)]) == 0
    html = (degradation_sweep / "report.html").read_text()
    _assert_self_contained(html)
    assert html.count("<details>") == 5


def test_no_runs_is_a_clear_error(tmp_path, capsys):
    assert compare_cli.main([str(tmp_path)]) == 2
    assert "no run folders" in capsys.readouterr().err


def test_degradation_decides_on_the_spread_of_the_seeds(tmp_path):
    """Means alone say "degrades" (plain 56 is 1 point worse), but the seeds scatter by 3: not evidence."""
    sweep = tmp_path / "sweep"
    for seed, (p20, p56, r20, r56) in enumerate([(10, 8, 10, 9), (13, 14, 11, 10), (16, 20, 12, 11)]):
        write_run(sweep / f"p20_{seed}", depth=20, residual=False, seed=seed, train=[40, p20], val=[40, 20])
        write_run(sweep / f"p56_{seed}", depth=56, residual=False, seed=seed, train=[40, p56], val=[40, 20])
        write_run(sweep / f"r20_{seed}", depth=20, residual=True, seed=seed, train=[40, r20], val=[40, 20])
        write_run(sweep / f"r56_{seed}", depth=56, residual=True, seed=seed, train=[40, r56], val=[40, 20])
    compare([sweep], out=tmp_path / "out", print_tables=False)
    verdict = json.loads((tmp_path / "out" / "degradation.json").read_text())
    plain, res = verdict["plain"], verdict["residual"]
    # by hand: plain-20 10, 13, 16 -> mean 13, std 3; plain-56 8, 14, 20 -> mean 14, std 6
    assert plain["shallow_final_train_err"] == pytest.approx(13) and plain["deep_final_train_err"] == pytest.approx(14)
    assert plain["final_train_err_std"] == {"20": pytest.approx(3.0), "56": pytest.approx(6.0)}
    assert plain["difference"] == pytest.approx(1.0)
    assert plain["spread"] == pytest.approx(2 * (9 / 3 + 36 / 3) ** 0.5)        # 2 standard errors: 7.75
    assert plain["final_train_err_runs"]["56"] == [8, 14, 20] and plain["seeds"]["56"] == [0, 1, 2]
    assert verdict["plain_degrades"] is False and verdict["reproduced"] is False
    # residual: 56 is 1 point better with std 1 at both depths: 2 SE = 2*sqrt(2/3) = 1.63 > 1: not worse, not better
    assert res["deeper_not_worse"] is True and res["deeper_better"] is False
    assert res["spread"] == pytest.approx(2 * (2 / 3) ** 0.5)
    assert "no degradation beyond the spread" in verdict["verdict"] and "± 6.00 (n=3)" in verdict["verdict"]


def test_degradation_reports_runs_whose_training_error_climbs_back(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "p20", depth=20, residual=False, seed=0, train=[60, 30, 20, 15], val=[60, 30, 20, 15])
    # learned to 40%, back up to 56% (16 points) at epoch 3 (1-based), partial recovery: a collapse
    write_run(sweep / "p56", depth=56, residual=False, seed=0, train=[70, 40, 56, 50], val=[70, 40, 56, 50])
    # never took off, and a 14-point relapse (below the 15-point bar): no collapse
    write_run(sweep / "p56b", depth=56, residual=False, seed=1, train=[95, 80, 94, 87], val=[95, 80, 94, 87])
    write_run(sweep / "r20", depth=20, residual=True, seed=0, train=[50, 20, 12, 10], val=[50, 20, 12, 10])
    write_run(sweep / "r56", depth=56, residual=True, seed=0, train=[50, 20, 12, 9], val=[50, 20, 12, 9])
    result = compare([sweep], out=tmp_path / "out", print_tables=False)
    verdict = result.degradation
    assert verdict["plain"]["collapsed"] == {"20": [], "56": [{"run": "p56", "seed": 0, "epoch": 3}]}
    assert "plain-56: 1 of 2 (epoch 3)" in verdict["verdict"]


def test_seeds_are_drawn_as_mean_and_band(tmp_path):
    from experiments.studies import run_table as rt
    from experiments.studies.compare import mean_curve

    sweep = tmp_path / "sweep"
    write_run(sweep / "a", depth=20, residual=False, seed=0, train=[40, 20, 10], val=[42, 24, 14])
    write_run(sweep / "b", depth=20, residual=False, seed=1, train=[44, 22], val=[46, 26])   # stopped early
    runs = rt.read_runs([sweep / "a", sweep / "b"])
    xs, mean, std = mean_curve(runs, "train/err")
    assert xs == [1, 2, 3] and mean == pytest.approx([42, 21, 10])
    assert std == pytest.approx([8 ** 0.5, 2 ** 0.5, 0.0])
    # the figure: one line per column for the group, and one shaded band each
    import matplotlib

    matplotlib.use("Agg")
    from unittest import mock

    import matplotlib.axes

    with mock.patch.object(matplotlib.axes.Axes, "fill_between", autospec=True,
                           side_effect=matplotlib.axes.Axes.fill_between) as band:
        compare([sweep], by=["model.depth"], out=tmp_path / "out", print_tables=False)
    assert band.call_count == 2   # val/err and train/err of the one two-seed group
    lower = list(band.call_args_list[1].args[2])
    assert lower == pytest.approx([42 - 8 ** 0.5, 21 - 2 ** 0.5, 10.0])


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_report_is_written_beside_the_first_and_out_never_overwrites(degradation_sweep, capsys):
    run = degradation_sweep / "2_plain56"
    assert report_cli.main([str(run)]) == 0 and report_cli.main([str(run)]) == 0
    assert (run / "report.html").is_file() and (run / "report-2.html").is_file()
    assert (run / "compare").is_dir() and (run / "compare-2").is_dir()
    before = _files(degradation_sweep)
    for out in (run / "config.yaml", run / "summary.json", run):
        assert report_cli.main([str(run), "--out", str(out)]) == 2
        assert compare_cli.main([str(run), "--out", str(out)]) == 2
        assert "nothing already written is overwritten" in " ".join(capsys.readouterr().err.split())
    assert _files(degradation_sweep) == before


def test_compare_refuses_a_grouping_key_no_run_has(degradation_sweep, tmp_path, capsys):
    assert compare_cli.main([str(degradation_sweep), "--by", "model.dpeth", "--out", str(tmp_path / "c")]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "--by='model.dpeth'" in message and "no run's config" in message
    assert not (tmp_path / "c").exists()


def test_compare_and_report_do_not_write_into_a_run_in_use(degradation_sweep, capsys):
    from experiments.core.runs import RunFolder

    run = degradation_sweep / "2_plain56"
    before = _files(degradation_sweep)
    with RunFolder(run).locked():  # a training run holds it
        assert report_cli.main([str(run)]) == 2
        assert compare_cli.main([str(run)]) == 2
    assert "is in use by experiments.train" in " ".join(capsys.readouterr().err.split())
    after = _files(degradation_sweep)
    assert {k: v for k, v in after.items() if not k.endswith(".lock")} == before
