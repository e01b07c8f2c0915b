"""Every config key has a declared type and range, and a value that does not fit is refused (issue 16 #5-#7)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Annotated

import pytest
from annotated_types import Ge, Lt
from tests.conftest import CONF, TESTS, TINY, assert_refused, refused_in_process, run_cli, tree_hashes

from experiments.core.errors import UserError
from experiments.training import schema

GROUPS = ("model", "data", "optimizer", "scheduler", "trainer", "logger", "callbacks", "early_stopping", "debug", "finetune",
          "experiment", "hparams_search")
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))
           if not path.stem.startswith("_")]
NEEDS = {("finetune", name): [f"finetune.from={TESTS}"] for _, name in OPTIONS}
NEEDS[("data", "imagefolder")] = ["data.root=/nowhere"]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_key_of_every_option_is_declared_and_its_default_fits(compose, group, option):
    cfg = compose([f"{group}={option}", *NEEDS.get((group, option), [])])
    assert schema.undeclared_keys(cfg) == []
    schema.check(cfg)


def test_every_analysis_setting_is_declared(compose):
    names = sorted(p.stem for p in (CONF / "analysis").glob("*.yaml"))
    cfg = compose([f"analysis=[{','.join(names)}]"], config_name="analyze")
    assert schema.undeclared_keys(cfg) == []
    schema.check(cfg)


def test_a_key_without_a_type_is_found(compose):
    assert schema.undeclared_keys(compose(["+module.new_knob=1"])) == ["module.new_knob"]
    with pytest.raises(UserError, match=r"model.new_knob=1: is not an argument of this target"):
        schema.check(compose(["+model.new_knob=1"]))


@pytest.mark.parametrize(("value", "hint", "fits"), [
    (True, bool, True), ("off", bool, False), ("no", bool, False), (1, bool, False),
    (3, int, True), (True, int, False), (3.0, int, False),
    (3, float, True), ("3", float, False),
    ([1, 2], list[int], True), ([1, "a"], list[int], False), ((1, 2), Sequence[int], True), (1, list[int], False),
    (None, int | None, True), ("epoch", str | None, True),
    (0.5, Annotated[float, Ge(0), Lt(1)], True), (1.0, Annotated[float, Ge(0), Lt(1)], False),
    (-1, Annotated[int, Ge(0)], False),
])
def test_fits_known_answers(value, hint, fits):
    assert schema.fits(value, hint) is fits


@pytest.mark.parametrize(("args", "words"), [
    (["data.augment.hflip=off"], ["data.augment.hflip='off'", "is not bool", "data.augment.hflip=false"]),
    (["scheduler=step", "scheduler.step_size=0"], ["scheduler.step_size=0", "must be positive"]),
    (["scheduler=multistep", "scheduler.unit=epoch", "scheduler.milestones=[1,40]", "trainer.max_epochs=2"],
     ["scheduler.milestones=40", "beyond the end of the run"]),
], ids=["hflip=off", "step_size=0", "milestone past the end"])
def test_a_value_that_cannot_mean_what_the_user_wants_is_refused_by_the_command(tmp_path, args, words):
    result = run_cli("experiments.train", *TINY, *args, cwd=tmp_path)
    assert_refused(result, words)
    assert not (tmp_path / "outputs").exists(), "not even an empty outputs/ folder"


@pytest.mark.parametrize(("args", "match"), [
    (["data.augment.hflip=maybe"], r"data.augment.hflip='maybe': is not bool"),
    (["data.augment.hflip=no"], r"data.augment.hflip='no': is not bool"),
    (["optimizer.lr=nan"], r"optimizer.lr=nan: must be a finite number"),
    (["optimizer.momentum=-inf"], r"optimizer.momentum=-inf: must be a finite number"),
    (["model.dropout=abc"], r"model.dropout='abc': is not float"),
    (["scheduler.warmup_steps=-5"], r"scheduler.warmup_steps=-5: must be >= 0"),
    (["module.label_smoothing=1.0"], r"module.label_smoothing=1.0: must be < 1"),
    (["data.batch_size=2.5"], r"data.batch_size=2.5: is not int"),
    (["+model.widht=3"], r"model.widht=3: is not an argument of this target"),
])
def test_a_value_that_does_not_fit_its_declared_type_is_refused(compose, args, match):
    from experiments.training.validation import validate

    with pytest.raises(UserError, match=match):
        validate(compose([*TINY, *args]))


@pytest.mark.parametrize(("args", "words"), [
    (["analysis=[saliency]", "analysis.saliency.smoothgrad_samples=-1"],
     ["analysis.saliency.smoothgrad_samples=-1", "must be >= 0"]),
    (["analysis=[fgsm]", "analysis.fgsm.epsilons=[abc]"], ["analysis.fgsm.epsilons=['abc']", "list of float"]),
    (["analysis=[tsne]", "analysis.tsne.num_images=0"], ["analysis.tsne.num_images=0", "must be >= 1"]),
])
def test_bad_analysis_settings_are_refused_before_the_run_is_read(tmp_path, capsys, args, words):
    from experiments.analysis.analyze import main

    run = tmp_path / "run"
    shutil.copytree(TESTS / "fixtures" / "run_before_move", run)
    before = tree_hashes(run)
    refused_in_process(main, [f"run={run}", "ckpt=last", *args], capsys, words)
    assert tree_hashes(run) == before
