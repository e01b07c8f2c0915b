"""Transfer learning end to end: a real pre-trained run, each strategy trained by a real Trainer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tests.conftest import TINY, assert_refused, run_cli, run_folders, tree_hashes

from experiments.core.errors import UserError
from experiments.training import finetune
from experiments.training.build import build_datamodule, build_module, build_network
from experiments.training.validation import validate


def _args(*overrides: str) -> list[str]:
    """Overrides with the last value of each key kept (Hydra refuses a group chosen twice)."""
    return list({o.split("=", 1)[0]: o for o in overrides}.values())


# TINY with twice the images, so that half of the classes still leaves a few training batches.
DATA = _args(*TINY, "data.num_train=768")
TO_UPPER_HALF = ["data.classes=[5,6,7,8,9]", "data.num_classes=5"]
LENET_STAGES = ["features.0", "features.3", "classifier.1", "classifier.3", "classifier.5"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A folder whose outputs/ holds a LeNet-5 trained 1 epoch on all 10 synthetic classes."""
    folder = tmp_path_factory.mktemp("transfer")
    run_cli("experiments.train", *DATA, "trainer.max_epochs=1", cwd=folder, check=True)
    return folder


@pytest.fixture(scope="module")
def source_run(project) -> Path:
    return run_folders(project / "outputs")[0]


def _fit(cfg, epochs: int = 1):
    """What experiments.train does, in process: one call for the network and its start, then fit for real."""
    pl.seed_everything(0, verbose=False)
    validate(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.setup(None)
    network = build_network(cfg, load_source=True)
    module = build_module(cfg, network)
    module.plan = network.plan
    start = {k: v.clone() for k, v in module.model.state_dict().items()}
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0,
                         accelerator="cpu", devices=1)
    trainer.fit(module, datamodule=datamodule)
    return module, start, trainer


def _source_weights(run: Path) -> dict[str, torch.Tensor]:
    best = sorted((run / "checkpoints").glob("best*.ckpt"))[-1]
    state = torch.load(best, weights_only=True)["state_dict"]
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}


def _changed(start: dict, module) -> set[str]:
    return {k for k, v in module.model.state_dict().items() if not torch.equal(start[k], v)}


def test_head_keeps_every_backbone_weight_and_bn_buffer_bit_identical(compose, tmp_path):
    """torchvision's ResNet-18 state_dict file as the source (its BN running stats included)."""
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    for module in reference.modules():  # non-trivial running statistics, so a change would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    file = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), file)
    cfg = compose(_args(*TINY, "data.in_channels=3", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]",
                        "data.val_size=64", "model=resnet18", *TO_UPPER_HALF, "finetune=head", f"finetune.from={file}"))
    module, start, _ = _fit(cfg, epochs=2)  # 2 epochs: train() again after a validation pass
    source = reference.state_dict()
    after = module.model.state_dict()
    backbone = [k for k in after if not k.startswith("fc.")]
    assert any("running_mean" in k for k in backbone) and any("num_batches_tracked" in k for k in backbone)
    for key in backbone:
        assert torch.equal(after[key], source[key]), key
    assert after["fc.weight"].shape == (5, 512)
    assert not torch.equal(after["fc.weight"], start["fc.weight"])
    assert not any(p.requires_grad for n, p in module.model.named_parameters() if not n.startswith("fc."))
    module.train()
    assert not module.model.bn1.training and not module.model.layer4[1].bn2.training and module.model.fc.training


def test_last_k_trains_exactly_the_last_k_stages(compose, source_run):
    # The source named by one of its checkpoints, not the folder.
    cfg = compose([*DATA, *TO_UPPER_HALF, "finetune=last_k", "finetune.k=2",
                   f"finetune.from={source_run / 'checkpoints' / 'last.ckpt'}"])
    module, start, _ = _fit(cfg)
    assert module.plan.trained == ["classifier.1", "classifier.3", "classifier.5"]
    changed = {k.rsplit(".", 1)[0] for k in _changed(start, module)}
    assert changed == {"classifier.1", "classifier.3", "classifier.5"}
    source = _source_weights(source_run)
    assert all(torch.equal(module.model.state_dict()[k], source[k]) for k in source if k.startswith("features."))


def test_full_trains_everything_with_a_lower_backbone_lr(compose, source_run):
    cfg = compose([*DATA, *TO_UPPER_HALF, f"finetune.from={source_run}", "finetune.backbone_lr_scale=0.2",
                   "optimizer.lr=0.05", "scheduler=none"])
    module, start, trainer = _fit(cfg)
    assert {k.rsplit(".", 1)[0] for k in _changed(start, module)} == set(LENET_STAGES)
    head, backbone = trainer.optimizers[0].param_groups
    assert head["lr"] == pytest.approx(0.05) and head["lr_scale"] == 1.0
    assert backbone["lr"] == pytest.approx(0.01) and backbone["lr_scale"] == 0.2
    assert {id(p) for p in head["params"]} == {id(p) for p in module.model.classifier[5].parameters()}
    assert len(backbone["params"]) == 8
    assert module.model.classifier[5].out_features == 5  # 10 classes in the source, 5 here


def test_from_layer_cuts_pools_and_trains_a_new_classifier(compose, source_run):
    cfg = compose([*DATA, *TO_UPPER_HALF, "finetune=from_layer", "finetune.layer=features.3",
                   f"finetune.from={source_run}"])
    module, start, _ = _fit(cfg)
    model = module.model
    assert isinstance(model, finetune.FromLayer)
    assert (model.fc.in_features, model.fc.out_features) == (16, 5)  # conv2's 16 channels, pooled
    assert set(model.state_dict()) == {"body.features.0.weight", "body.features.0.bias", "body.features.3.weight",
                                       "body.features.3.bias", "fc.weight", "fc.bias"}
    assert _changed(start, module) == {"fc.weight", "fc.bias"}
    source = _source_weights(source_run)
    assert torch.equal(model.state_dict()["body.features.3.weight"], source["features.3.weight"])


def test_a_finetuned_run_trains_and_evaluates_from_the_cli(project, source_run):
    before = set(run_folders(project / "outputs"))
    run_cli("experiments.train", *_args(*DATA, *TO_UPPER_HALF, "trainer.max_epochs=1", "finetune=from_layer",
                                        "finetune.layer=classifier.1", f"finetune.from={source_run}"),
            cwd=project, check=True)
    (run,) = set(run_folders(project / "outputs")) - before
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["model_name"] == "lenet5"  # the source's
    assert summary["finetune"]["strategy"] == "from_layer" and summary["finetune"]["trained_stages"] == ["fc"]
    assert summary["params"] == 6 * 25 + 6 + 16 * 150 + 16 + 400 * 120 + 120 + 120 * 5 + 5
    # experiments.eval rebuilds the cut network from the run's own config.yaml and loads its checkpoint.
    from experiments.evaluation.evaluate import evaluate

    metrics = evaluate(str(run), quiet=True)
    assert metrics["test/acc"] == pytest.approx(summary["metrics"]["test/acc"], abs=1e-6)


@pytest.mark.parametrize(("args", "words"), [
    (["finetune.from=no/such/run"], ["finetune.from='no/such/run'", "does not exist"]),
    (["finetune.from={bad}", "finetune=head"], ["finetune.from=", "has no checkpoint"]),
    (["finetune.from={source}", "model=resnet20"], ["model='resnet20'", "conflicts with finetune.from", "lenet5 run",
                                                    "Drop model="]),
], ids=["missing path", "run without checkpoint", "model= names another architecture than the source run"])
def test_bad_finetune_inputs_exit_2_and_write_nothing(project, source_run, tmp_path, args, words):
    bad = tmp_path / "no_checkpoint_run"
    shutil.copytree(source_run, bad)
    shutil.rmtree(bad / "checkpoints")
    args = [a.replace("{source}", str(source_run)).replace("{bad}", str(bad)) for a in args]
    before = tree_hashes(project / "outputs")
    result = run_cli("experiments.train", *_args(*DATA, "trainer.max_epochs=1", *args), cwd=project, timeout=120)
    assert_refused(result, words)
    assert tree_hashes(project / "outputs") == before


def test_a_channel_mismatch_stops_training_before_anything_is_written(compose, project, source_run, tmp_path):
    from experiments.training.pipeline import train

    cfg = compose(_args(*DATA, f"finetune.from={source_run}", "data.in_channels=3", "data.mean=[0.5,0.5,0.5]",
                        "data.std=[0.25,0.25,0.25]", f"paths.run_dir={tmp_path / 'run'}"))
    before = tree_hashes(project / "outputs")
    with pytest.raises(UserError) as error:
        train(cfg)
    for word in ("finetune.from=", "features.0.weight", "(6, 1, 5, 5)", "(6, 3, 5, 5)", "1-channel"):
        assert word in str(error.value)
    assert not (tmp_path / "run").exists() and tree_hashes(project / "outputs") == before


# A 3-channel TINY at 32x32 with few images: enough for one epoch of a ResNet-50 head on a CPU.
RGB = _args(*TINY, "data.in_channels=3", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", "data.num_train=128",
            "data.val_size=64", "data.num_test=64", "trainer.max_epochs=1")


def test_a_torchvision_resnet50_file_is_refused_by_the_paper_v1_config_and_taken_by_its_twin(tmp_path):
    """torchvision's resnet50 (v1.5: stride on the 3x3) has exactly the keys and shapes of the paper's v1
    ``resnet50``, so loading it there would fine-tune wrong features without a word: refused before anything
    is written, with the twin config named; ``model=resnet50_v15`` fine-tunes from it."""
    import torchvision

    file = tmp_path / "resnet50_torchvision.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), file)
    folder = tmp_path / "project"
    folder.mkdir()
    args = [*RGB, "finetune=head", f"finetune.from={file}"]
    refused = run_cli("experiments.train", *_args(*args, "model=resnet50"), cwd=folder, timeout=180)
    assert_refused(refused, ["finetune.from=", "resnet50_torchvision.pth", "plain state_dict file", "layer2.0.conv1",
                             "stride_in_1x1: true", "torchvision's resnet50", "model=resnet50_v15"])
    assert [p for p in folder.rglob("*") if p.is_file()] == [] and run_folders(folder / "outputs") == []

    run_cli("experiments.train", *_args(*args, "model=resnet50_v15"), cwd=folder, timeout=240, check=True)
    (run,) = run_folders(folder / "outputs")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["model_name"] == "resnet50_v15"
    assert summary["finetune"]["strategy"] == "head" and summary["finetune"]["checkpoint"] == str(file.resolve())
    assert summary["finetune"]["copied_tensors"] == len(torchvision.models.resnet50().state_dict()) - 2  # not fc


@pytest.mark.parametrize(("lightning", "strategy", "refused"), [
    (True, ["finetune=head"], False),
    (False, ["finetune=from_layer", "finetune.layer=layer1"], False),
    (False, ["finetune=from_layer", "finetune.layer=layer2"], True),
], ids=["a checkpoint of ours outside a run folder", "cut before the first strided bottleneck",
        "cut after it"])
def test_only_plain_files_into_strided_v1_bottlenecks_are_refused(compose, tmp_path, lightning, strategy, refused):
    import torchvision

    state = torchvision.models.resnet50(weights=None).state_dict()
    file = tmp_path / "weights.ckpt"
    torch.save({"pytorch-lightning_version": pl.__version__, "state_dict": {f"model.{k}": v for k, v in state.items()}}
               if lightning else state, file)
    cfg = compose([*RGB, "model=resnet50", *strategy, f"finetune.from={file}"])
    validate(cfg)
    if refused:
        with pytest.raises(UserError, match=r"layer2\.0\.conv1.*model\.stride_in_1x1=false"):
            build_network(cfg, load_source=True)
    else:
        assert build_network(cfg, load_source=True).transferred["copied_tensors"] > 0


@pytest.mark.parametrize(("args", "match"), [
    (["finetune.strategy=sideways"], "finetune.strategy='sideways'"),
    (["finetune.strategy=last_k", "finetune.k=0"], "finetune.k=0"),
    (["finetune.strategy=last_k", "finetune.k=5"], "finetune.k=5: must be between 1 and the 4 stages"),
    (["finetune.backbone_lr_scale=0"], "finetune.backbone_lr_scale=0"),
    (["finetune.strategy=from_layer"], "finetune.layer=None"),
    (["finetune.strategy=from_layer", "finetune.layer=conv9"],
     r"finetune.layer='conv9'.*features.0, features.3, classifier.1, classifier.3\."),
])
def test_bad_finetune_settings_are_user_errors(compose, source_run, args, match):
    cfg = compose([*DATA, f"finetune.from={source_run}", *args])
    with pytest.raises(UserError, match=match):
        validate(cfg)
        build_network(cfg, load_source=True)


def test_a_strategy_option_needs_a_source(compose):
    with pytest.raises(UserError, match=r"finetune.from='\?\?\?': is required with finetune.strategy=head"):
        validate(compose([*DATA, "finetune=head"]))


def test_classes_keep_and_relabel_in_the_listed_order(compose):
    small = _args(*TINY, "data.val_size=16")
    everything = build_datamodule(compose(_args(*small, "data.num_classes=8")))  # the same 8 synthetic classes
    picked = build_datamodule(compose([*small, "data.classes=[7,2]", "data.num_classes=2"]))
    everything.setup(None)
    picked.setup(None)
    assert picked.classes == ["7", "2"]
    for split in ("train_set", "val_set", "test_set"):
        labels = getattr(picked, split).labels
        assert set(labels.tolist()) == {0, 1}
    images, labels = everything.load_split(train=False)
    kept = (labels == 7) | (labels == 2)
    assert torch.equal(picked.test_set.images, images[kept])
    assert torch.equal(picked.test_set.labels, (labels[kept] == 2).long())
    with pytest.raises(ValueError, match=r"data.num_classes=5: but data.classes keeps 2 classes"):
        build_datamodule(compose([*small, "data.classes=[7,2]", "data.num_classes=5"]))
