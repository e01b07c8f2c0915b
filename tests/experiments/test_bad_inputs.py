"""Every bad input exits non-zero with one clear paragraph, no traceback, and changes nothing on disk."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from tests.conftest import TINY, assert_refused, run_cli, tree_hashes

# (arguments, words the message must contain)
TRAIN_CASES = [
    # Lightning's Trainer refuses these only when it is built, or fails on them inside the run
    (["trainer.strategy=bogus"], ["trainer.strategy='bogus'", "invalid strategy name"]),
    (["trainer.limit_train_batches=1.5"], ["trainer.limit_train_batches=1.5", "[0.0, 1.0] or an int"]),
    (["trainer.num_nodes=0"], ["trainer.num_nodes=0", "positive integer"]),
    (["trainer.accumulate_grad_batches=0"], ["trainer.accumulate_grad_batches=0", "integer >= 1"]),
    (["trainer.check_val_every_n_epoch=0"], ["trainer.check_val_every_n_epoch=0", "integer >= 1"]),
    (["trainer.limit_train_batches=0"], ["trainer.limit_train_batches=0", "leaves nothing to train on"]),
    (["model.num_classes=5"], ["model.num_classes=5", "differs from data.num_classes=10"]),
    (["model.in_channels=3"], ["model.in_channels=3", "differs from data.in_channels=1"]),
    (["optimizer.lr=${nosuch.key}"], ["optimizer.lr='${nosuch.key}'", "cannot be resolved", "nosuch.key"]),
    (["experiment=depth_vs_width", "study.variant=nosuch", "data=synthetic"],
     ["study.variant='nosuch'", "deep_3x3, mid_3x3"]),
    (["trainer.precision=bf16-true"], ["trainer.precision='bf16-true'", "half precision", "bf16-mixed"]),
    (["trainer.precision=16-mixed"], ["trainer.precision='16-mixed'", "float16 autocast", "bf16-mixed on the CPU"]),
    (["seed=99999999999"], ["seed=99999999999", "largest seed numpy takes (4294967295)"]),
    (["run_name=../../escape"], ["run_name='../../escape'", "cannot hold '/'"]),
    (["paths.output_root="], ["paths.output_root=''", "is empty"]),
    (["model=nonexistent"], ["model=nonexistent", "no such model", "--help"]),
    (["model=resnt56"], ["model=resnt56", "Did you mean resnet56"]),
    (["optimizer.lrr=0.1"], ["optimizer.lrr=0.1", "no key 'lrr' under optimizer", "Did you mean optimizer.lr?"]),
    (["data.augment.hflp=true"], ["data.augment.hflp=true", "no key 'hflp'", "data.augment.hflip"]),
    (["data.batch_size=abc"], ["data.batch_size", "abc"]),
    (["data.batch_size=0"], ["data.batch_size=0"]),
    (["host_allocator=jemalloc"], ["host_allocator", "jemalloc", "reuse, system"]),
    (["+optimizer.foreach=true"], ["optimizer.fused", "foreach", "optimizer.fused=false"]),
    (["optimizer.lr=0"], ["optimizer.lr=0", "positive"]),
    (["optimizer.lr=-0.1"], ["optimizer.lr=-0.1"]),
    (["optimizer.momentum=1.5"], ["optimizer.momentum"]),
    (["trainer.max_epochs=0"], ["trainer.max_epochs=0"]),
    (["trainer.precision=17"], ["trainer.precision"]),
    (["model.dropout=1.5"], ["model.dropout=1.5"]),
    (["data.image_size=12"], ["data.image_size=12", "sets model.input_size", "data.image_size=32"]),
    (["data.val_size=100000"], ["data.val_size"]),
    (["data.augment.crop_padding=-4"], ["data.augment.crop_padding"]),
    (["scheduler=multistep", "scheduler.milestones=[1.5]"], ["scheduler.milestones", "fraction"]),
    (["data=cifar10", "data.root=missing_folder", "data.download=false"], ["data.root", "cifar10", "not found"]),
    (["data=svhn", "data.root=missing_folder", "data.download=false"], ["data.root", "svhn", "not found"]),
    (["resume=true"], ["resume", "found no unfinished run"]),
    (["resume=no/such/run"], ["resume", "does not exist"]),
    (["model=resnet20", "model.depth=21"], ["model.depth=21", "6n+2"]),
    (["model=alexnet"], ["data.image_size"]),
    (["optimizer=nonexistent"], ["optimizer/nonexistent"]),
    (["data=nonexistent"], ["data/nonexistent"]),
    (["data.num_classes=0"], ["num_classes=0"]),
    (["model=resnext50_32x4d", "data.image_size=64", "model.groups=3", "model.width_per_group=null"],
     ["model.groups=3", "divide"]),
    (["data=fashion_mnist", "data.root={bad}/truncated", "data.download=false"], ["truncated or corrupt"]),
    (["data=imagefolder", "data.root={bad}/one_class"], ["data.root", "class folder"]),
    (["data=imagefolder", "data.root={bad}/unreadable"], ["not a readable image"]),
    (["resume={bad}/truncated_run"], ["checkpoint", "truncated"]),
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A project folder whose outputs/ already holds a finished run that nothing may touch."""
    folder = tmp_path_factory.mktemp("project")
    run_cli("experiments.train", *TINY, "trainer.max_epochs=1", cwd=folder, check=True)
    return folder


@pytest.fixture(scope="module")
def bad(workdir: Path) -> Path:
    """Broken inputs outside outputs/: truncated dataset files, bad image folders, a truncated checkpoint."""
    import gzip

    from PIL import Image

    folder = workdir / "bad"
    truncated = folder / "truncated" / "fashion_mnist"
    truncated.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        header = bytes([0, 0, 8, 3]) + (1000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        (truncated / f"{name}.gz").write_bytes(gzip.compress(header + b"\x00" * 100))
    for case, classes in (("one_class", ["cat"]), ("unreadable", ["cat", "dog"])):
        for split in ("train", "val"):
            for label in classes:
                target = folder / case / split / label
                target.mkdir(parents=True)
                for i in range(3):
                    Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(target / f"{i}.png")
    (folder / "unreadable" / "train" / "dog" / "broken.png").write_bytes(b"not a png at all")
    run = _finished_run(workdir)
    copy = folder / "truncated_run"
    shutil.copytree(run, copy)
    last = copy / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1500])
    summary = json.loads((copy / "summary.json").read_text())  # an unfinished run (a finished one is refused)
    (copy / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    return folder


def _finished_run(workdir: Path) -> Path:
    return next(workdir.glob("outputs/train/*/*/summary.json")).parent


def _assert_clean_failure(result, words: list[str]) -> None:
    assert_refused(result, words)  # exit status 2, the documented code for a user's mistake


@pytest.mark.parametrize(("args", "words"), TRAIN_CASES, ids=[" ".join(a) for a, _ in TRAIN_CASES])
def test_train_rejects_bad_input_cleanly(workdir, bad, args, words):
    args = [a.replace("{bad}", str(bad)) for a in args]
    before = tree_hashes(workdir / "outputs")
    base = ["quiet=true"] if any(a.startswith(("data=", "resume=/")) for a in args) else TINY
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


@pytest.mark.parametrize("content", ["truncated", "text", "not a state_dict"])
def test_eval_of_a_broken_checkpoint(workdir, content):
    run = _finished_run(workdir)
    broken = run / "checkpoints" / "broken.ckpt"
    if content == "truncated":
        broken.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes()[:2000])
    elif content == "text":
        broken.write_text("hello")  # torch's legacy unpickler: KeyError, not one of its usual errors
    else:
        torch.save({"state_dict": {"model.fc.weight": 1}}, broken)
    try:
        result = run_cli("experiments.eval", f"run={broken}", cwd=workdir)
    finally:
        broken.unlink()
    _assert_clean_failure(result, ["checkpoint", "no state_dict of tensors" if content == "not a state_dict"
                                   else "truncated or not a PyTorch checkpoint"])


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


@pytest.mark.parametrize(("args", "words"), [
    (["paths.output_root=/proc/cnn-experiments"], ["paths.output_root=", "/proc/cnn-experiments", "proc file system"]),
    (["paths.output_root={file}"], ["paths.output_root=", "which is a file, not a folder"]),
    (["hydra.run.dir={file}/sub"], ["hydra.run.dir=", "which is a file, not a folder"]),
    (["hydra.run.dir=runs/" + "x" * 300], ["hydra.run.dir=", "300 bytes", "allow 255"]),
    (["run_name=" + "y" * 300], ["run_name=", "must fit 255"]),
], ids=["under /proc", "output_root is a file", "run dir under a file", "300-byte folder name", "300-byte run_name"])
def test_an_output_folder_that_cannot_be_made_is_reported_before_anything_is_written(tmp_path, args, words):
    (tmp_path / "a_file").write_text("not a folder")
    before = tree_hashes(tmp_path)
    args = [a.replace("{file}", str(tmp_path / "a_file")) for a in args]
    result = run_cli("experiments.train", *TINY, *args, cwd=tmp_path)
    _assert_clean_failure(result, words)
    assert tree_hashes(tmp_path) == before  # not even an empty outputs/ folder


@pytest.mark.parametrize("args", [["hydra.run.dir={run}"], ["-m", "hydra.sweep.dir={run}", "seed=1,2"]],
                         ids=["run dir", "basic multirun's sweep dir"])
def test_a_folder_that_holds_a_run_is_never_written_into_again(workdir, args):
    """A finished run named as the folder of a new run (or of a plain multirun, whose jobs Hydra numbers
    from 0 again) would have its config, checkpoints and metrics overwritten: refused before Hydra runs."""
    run = _finished_run(workdir)
    before = tree_hashes(workdir / "outputs")
    result = run_cli("experiments.train", *TINY, "trainer.max_epochs=1", *[a.replace("{run}", str(run)) for a in args],
                     cwd=workdir)
    _assert_clean_failure(result, ["holds results already", "config.yaml", "resume=<run folder>"])
    assert tree_hashes(workdir / "outputs") == before


@pytest.mark.parametrize(("args", "words"), [
    (["hydra.sweeper.storage=bogus://x"], ["hydra.sweeper.storage='bogus://x'", "not a database URL"]),
    (["~hydra.sweeper.params.optimizer"], ["hydra.sweeper.params={}", "searches nothing"]),
], ids=["storage URL", "empty search space"])
def test_a_sweep_that_cannot_search_is_refused_before_writing(tmp_path, args, words):
    result = run_cli("experiments.train", "-m", *TINY, "hparams_search=random_log", "hydra.sweeper.n_trials=2", *args,
                     cwd=tmp_path)
    _assert_clean_failure(result, words)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [], "no sweep folder, lock or study database"


def test_sweep_with_a_non_positive_log_bound_is_refused_before_writing(tmp_path):
    result = run_cli("experiments.train", "-m", *TINY, "hparams_search=random_log", "hydra.sweeper.n_trials=1",
                     "hydra.sweeper.params.optimizer.lr='tag(log, interval(0, 1e-2))'", cwd=tmp_path)
    _assert_clean_failure(result, ["hydra.sweeper.params.optimizer.lr", "log", "0 < a < b"])
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [], "no sweep folder or study database"


@pytest.mark.parametrize(("args", "words"), [
    (["hparams_search=tpe", "hydra/sweeper/pruner=hyperbnd"],
     ["hydra/sweeper/pruner=hyperbnd", "Did you mean hyperband?", "hyperband, median, none, sha"]),
    (["hparams_search=random_log", "hydra/sweeper/sampler=rando"],
     ["hydra/sweeper/sampler=rando", "Did you mean random?", "grid, random, tpe"]),
    (["hydra/launcher=jobib"], ["hydra/launcher=jobib", "Did you mean joblib?"]),
])
def test_a_mistyped_plugin_option_is_one_paragraph(tmp_path, args, words):
    """Sampler, pruner and launcher options live in code (the plugins' ConfigStore), not in conf/."""
    result = run_cli("experiments.train", "-m", *TINY, *args, cwd=tmp_path)
    assert_refused(result, words)
    assert list(tmp_path.iterdir()) == []


def test_the_unknown_key_check_knows_keys_left_at_missing_and_added_keys():
    from experiments.core.fast_help import unknown_key

    assert unknown_key(["data=imagefolder", "data.root=/x"]) is None  # root: ??? is a key all the same
    assert unknown_key(["finetune=head", "finetune.from=/x"]) is None
    assert unknown_key(["+model.brand_new=1"]) is None  # + adds a key on purpose
    assert unknown_key(["model=resnet20", "model.depth=20", "hydra.run.dir=/x"]) is None
    message = unknown_key(["model=resnet20", "model.depht=20"])
    assert message is not None and "model.depth" in message and "no key 'depht' under model" in message


def test_a_diverged_run_is_not_resumed(tmp_path):
    """Resuming replays the same steps from the last good checkpoint: it would diverge again."""
    run_cli("experiments.train", *TINY, "callbacks=diagnostics", "optimizer.lr=1e12", "trainer.max_epochs=3",
            cwd=tmp_path)
    (run,) = [p.parent for p in tmp_path.glob("outputs/train/*/*/summary.json")]
    assert json.loads((run / "summary.json").read_text())["status"] == "diverged"
    before = tree_hashes(tmp_path / "outputs")
    result = run_cli("experiments.train", f"resume={run}", cwd=tmp_path)
    _assert_clean_failure(result, ["resume=", "diverged", "would diverge again", "finetune.from=<run folder>"])
    result = run_cli("experiments.train", *TINY, "callbacks=diagnostics", "optimizer.lr=1e12", "trainer.max_epochs=3",
                     "resume=true", cwd=tmp_path)
    _assert_clean_failure(result, ["resume=True", "found no unfinished run"])
    assert tree_hashes(tmp_path / "outputs") == before


@pytest.mark.parametrize(("override", "words"), [
    ("nosuch.key=3", ["nosuch.key='3'", "not a key of the run's config.yaml", "+nosuch.key=3"]),
    ("trainer.max_epochs=abc", ["trainer.max_epochs='abc'", "is not used here"]),
    ("model.dropout=abc", ["model.dropout='abc'", "is not float"]),
    pytest.param("trainer.accelerator=gpu", ["trainer.accelerator='gpu'", "no visible GPU"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    ("trainer.strategy=ddp", ["trainer.strategy='ddp'", "is not used here", "one device"]),
    ("trainer.precision=bf16-true", ["trainer.precision='bf16-true'", "half precision"]),
])
def test_eval_checks_the_keys_it_changes_in_the_runs_config(workdir, override, words):
    before = tree_hashes(workdir / "outputs")
    result = run_cli("experiments.eval", f"run={_finished_run(workdir)}", override, cwd=workdir)
    _assert_clean_failure(result, words)
    assert tree_hashes(workdir / "outputs") == before


def test_a_run_trained_on_gpus_is_evaluated_on_the_cpu_with_trainer_accelerator_cpu(workdir, tmp_path):
    """Only what eval's one-device Trainer uses is checked: the run's devices and strategy are not eval's."""
    from omegaconf import OmegaConf

    run = tmp_path / "gpu_run"
    shutil.copytree(_finished_run(workdir), run)
    config = OmegaConf.load(run / "config.yaml")
    config.trainer.accelerator, config.trainer.devices, config.trainer.strategy = "gpu", -1, "ddp"
    (run / "config.yaml").write_text(OmegaConf.to_yaml(config))
    result = run_cli("experiments.eval", f"run={run}", "trainer.accelerator=cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test" in result.stdout.lower()
