"""``python -m experiments.analyze`` end to end on tiny trained runs: files, figures, dashboards, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import TINY, assert_refused, refused_in_process, run_cli, tree_hashes

ALL_BUT_CAM = ["saliency", "occlusion", "gradcam", "gradcampp", "max_activating", "tsne", "class_model", "fgsm",
               "pgd", "feature_inversion", "loss_landscape", "guided_backprop", "deconvnet", "guided_gradcam",
               "deconvnet_patches", "lesion", "unit_images", "class_heatmap", "fooling_images", "targeted_attack"]
SMALL = ["analysis.saliency.num_images=4", "analysis.saliency.smoothgrad_samples=3", "analysis.occlusion.num_images=3",
         "analysis.gradcam.num_images=3", "analysis.gradcampp.num_images=3", "analysis.cam.num_images=3",
         "analysis.max_activating.num_images=96", "analysis.max_activating.num_channels=3",
         "analysis.max_activating.top_k=4", "analysis.tsne.num_images=96", "analysis.tsne.draw_images=true",
         "analysis.class_model.steps=5", "analysis.class_model.classes=[0,1]", "analysis.fgsm.num_images=64",
         "analysis.fgsm.epsilons=[0,0.05,0.3]", "analysis.pgd.num_images=32", "analysis.pgd.pgd_steps=2",
         "analysis.pgd.epsilons=[0,0.3]", "analysis.feature_inversion.steps=5", "analysis.feature_inversion.num_images=1",
         "analysis.loss_landscape.num_images=64", "analysis.loss_landscape.points_1d=5",
         "analysis.loss_landscape.points_2d=3", "analysis.guided_backprop.num_images=2",
         "analysis.deconvnet.num_images=2", "analysis.guided_gradcam.num_images=2",
         "analysis.deconvnet_patches.num_images=64", "analysis.deconvnet_patches.num_channels=2",
         "analysis.deconvnet_patches.top_k=4", "analysis.lesion.num_images=64", "analysis.lesion.max_deleted=2",
         "analysis.lesion.draws=2", "analysis.unit_images.steps=3", "analysis.unit_images.num_channels=2",
         "analysis.unit_images.num_images=16", "analysis.class_heatmap.num_images=2",
         "analysis.fooling_images.steps=5", "analysis.fooling_images.classes=[0,1]",
         "analysis.targeted_attack.num_images=64", "analysis.targeted_attack.steps=3",
         "analysis.targeted_attack.tolerance=0.05", "analysis.targeted_attack.num_examples=2"]


def _train(workdir: Path, *extra: str) -> Path:
    run_cli("experiments.train", *TINY, "trainer.max_epochs=2", *extra, cwd=workdir, check=True)
    return next(p.parent for p in (workdir / "outputs").glob("train/*/*/config.yaml"))


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory) -> Path:
    """A CIFAR-form ResNet-8 (BN, residual sums, global average pooling) with a TensorBoard logger."""
    return _train(tmp_path_factory.mktemp("resnet"), "model=resnet20", "model.depth=8", "logger=tensorboard")


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("lenet"))


def test_every_analysis_writes_its_pictures_and_figures(resnet_run):
    events_before = set((resnet_run / "tensorboard").glob("events.*"))
    result = run_cli("experiments.analyze", f"run={resnet_run}", f"analysis=[cam,{','.join(ALL_BUT_CAM)}]", *SMALL,
                     cwd=resnet_run, check=True, timeout=600)
    from experiments.analysis.analyze import latest_record

    folder = resnet_run / "analysis"
    for name in ["cam", *ALL_BUT_CAM]:
        record = json.loads(latest_record(folder, name).read_text())
        assert record["analysis"] == name and record["files"], name
        for file in record["files"]:
            assert (resnet_run / file).is_file() and (resnet_run / file).stat().st_size > 1000, file
    figures = {name: json.loads(latest_record(folder, name).read_text())["figures"] for name in ["cam", *ALL_BUT_CAM]}
    assert figures["cam"]["layer"] == figures["gradcam"]["layer"] == "layer3"
    assert len(figures["saliency"]["images"]) == 4 and figures["saliency"]["method"] == "SmoothGrad"
    fgsm = figures["fgsm"]
    assert fgsm["epsilons"] == [0.0, 0.05, 0.3] and fgsm["accuracy"][0] >= fgsm["accuracy"][-1]
    assert figures["pgd"]["method"] == "PGD-2"
    assert figures["tsne"]["images"] == 96 and figures["tsne"]["code_size"] == 64  # ResNet's last stage width
    assert (folder / "tsne" / "tsne_images.png").is_file() and (folder / "tsne" / "embedding.npz").is_file()
    assert len(figures["max_activating"]["channels"]) == 3
    assert all(len(c["top"]) == 4 for c in figures["max_activating"]["channels"])
    assert len(figures["loss_landscape"]["loss_1d"]) == 5 and len(figures["loss_landscape"]["loss_2d"]) == 3
    assert [c["class"] for c in figures["class_model"]["classes"]] == ["0", "1"]
    units = figures["unit_images"]["layers"]
    assert [u["layer"] for u in units] == ["layer1", "layer2", "layer3"] and all(len(u["units"]) == 2 for u in units)
    assert len(figures["fooling_images"]["classes"]) == 2  # classes=[0,1]: one image each
    assert len(figures["class_heatmap"]["images"]) == 2 and figures["class_heatmap"]["conversion"] == "global pooling"
    targeted = figures["targeted_attack"]  # every image is attacked or skipped with its reason
    assert targeted["attacked"] + targeted["skipped_misclassified"] + targeted["skipped_target_is_label"] == 64
    assert len(targeted["per_image"]) == targeted["attacked"]
    # the pictures also went to the run's own TensorBoard, in new event files next to the training ones
    assert set((resnet_run / "tensorboard").glob("events.*")) - events_before
    assert "analysis folder:" in result.stdout


def test_analysis_reads_the_best_checkpoint_and_leaves_the_run_alone(resnet_run):
    before = {k: v for k, v in tree_hashes(resnet_run).items() if not k.startswith(("analysis", "tensorboard"))}
    run_cli("experiments.analyze", f"run={resnet_run}", "analysis=[saliency]", "analysis.saliency.num_images=2",
            cwd=resnet_run, check=True)
    after = {k: v for k, v in tree_hashes(resnet_run).items() if not k.startswith(("analysis", "tensorboard"))}
    assert before == after
    from experiments.analysis.analyze import latest_record

    record = json.loads(latest_record(resnet_run / "analysis", "saliency").read_text())
    assert "best-epoch" in record["checkpoint"]


@pytest.mark.parametrize(("args", "words"), [
    (["analysis=[nonexistent]"], ["analysis", "nonexistent", "saliency"]),
    (["analysis=[saliency]", "analysis.saliency.nokey=1"], ["analysis.saliency.nokey"]),
    (["analysis=[cam]"], ["cam", "global average pooling", "gradcam"]),
    (["analysis=[gradcam]", "analysis.gradcam.layer=no.such.layer"], ["no.such.layer", "features"]),
    (["analysis=[saliency]", "analysis.saliency.split=holdout"], ["analysis.saliency.split", "holdout"]),
    (["analysis=[fgsm]", "analysis.fgsm.epsilons=[2]"], ["analysis.fgsm.epsilons"]),
    (["analysis=[class_model]", "analysis.class_model.classes=[99]"], ["analysis.class_model.classes", "99"]),
    (["analysis=[saliency]", "model=vgg16"], ["model", "whole config group"]),
    # the first analysis ran and wrote its files before the second refused its setting: removed again
    (["analysis=[saliency,occlusion]", "analysis.saliency.num_images=2", "analysis.occlusion.window=1000"],
     ["analysis.occlusion.window"]),
    (["analysis=[saliency]", "trainer.max_epochs=abc"], ["trainer.max_epochs", "abc"]),
    (["analysis=[saliency]", "nosuch.key=3"], ["nosuch.key", "not a key of the run's config.yaml"]),
])
def test_bad_analysis_inputs_are_one_paragraph_and_write_nothing(lenet_run, args, words, capsys):
    from experiments.analysis.analyze import main

    before = tree_hashes(lenet_run)
    refused_in_process(main, [f"run={lenet_run}", *args], capsys, words)
    assert tree_hashes(lenet_run) == before


def test_a_bad_analysis_through_the_real_command_line(lenet_run):
    before = tree_hashes(lenet_run)
    result = run_cli("experiments.analyze", f"run={lenet_run}", "analysis=[cam]", cwd=lenet_run)
    assert_refused(result, ["global average pooling"])
    assert tree_hashes(lenet_run) == before


def test_analyze_without_a_run_says_how(tmp_path):
    result = run_cli("experiments.analyze", "analysis=[saliency]", cwd=tmp_path)
    assert_refused(result, ["run"])
    listing = run_cli("experiments.analyze", "--list", cwd=tmp_path, check=True)
    assert {"saliency", "occlusion", "cam", "gradcam", "gradcampp", "tsne", "fgsm", "loss_landscape"} <= set(
        listing.stdout.split())


def test_a_rerun_keeps_the_earlier_results_beside_the_new_ones(lenet_run, capsys):
    from experiments.analysis.analyze import latest_record, main

    main([f"run={lenet_run}", "analysis=[saliency]", "analysis.saliency.num_images=2"])
    first = latest_record(lenet_run / "analysis", "saliency")
    kept = first.read_bytes()
    main([f"run={lenet_run}", "analysis=[saliency]", "analysis.saliency.num_images=3"])
    second = latest_record(lenet_run / "analysis", "saliency")
    assert second != first and first.read_bytes() == kept
    record = json.loads(second.read_text())
    assert record["settings"]["num_images"] == 3
    assert all(f.startswith(f"analysis/{second.stem}/") and (lenet_run / f).is_file() for f in record["files"])
