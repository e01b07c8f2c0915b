"""Dense evaluation and class heat maps, against answers computed another way: the plain network at the
training size, the mean of the network over every window cut out by hand (``unfold``) at the
conversion's stride, a ResNet's own forward and its CAM, a planted pattern's position; then
``experiments.eval eval.dense=...`` and ``experiments.analyze analysis=[class_heatmap]`` end to end on
real trained runs, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tests.analysis_stub import FakeRun
from tests.conftest import TINY, assert_refused, refused_in_process, run_cli, tree_hashes
from torch import nn

from experiments.analysis.class_heatmap import peak
from experiments.analysis.class_heatmap import run as class_heatmap
from experiments.analysis.common import AnalysisContext
from experiments.core.errors import UserError
from experiments.evaluation.dense import CONVERTED, GLOBAL_POOLING, dense_scorer
from models.interface import ClassifierMixin, FeaturesClassifierMixin
from models.lenet import LeNet5
from models.resnet import ResNet
from models.vgg import VGG


def _windows_mean(model: nn.Module, image: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """The mean of ``model``'s logits over every ``window`` x ``window`` crop at ``stride``, cut by hand."""
    crops = image.unfold(2, window, stride).unfold(3, window, stride)  # (N, C, rows, cols, window, window)
    n, c, rows, cols = crops.shape[:4]
    crops = crops.permute(0, 2, 3, 1, 4, 5).reshape(n * rows * cols, c, window, window)
    with torch.no_grad():
        return model(crops).view(n, rows * cols, -1).mean(dim=1)


def test_dense_logits_are_lenets_mean_over_every_window_at_its_stride():
    """LeNet-5's convolutions are unpadded, so each score-map cell is exactly the network on one crop."""
    torch.manual_seed(0)
    model = LeNet5(activation="relu", pool="max").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scorer = dense_scorer(model, 32, 1, "eval.dense")
    assert scorer.kind == CONVERTED and scorer.stride == 4  # two 2x2 pools
    small, big = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 52, 52)
    with torch.no_grad():
        torch.testing.assert_close(scorer.logits(small), model(small), rtol=1e-4, atol=1e-5)
        assert scorer.score_maps(big).shape == (2, 10, 6, 6)  # (52 - 32) / 4 + 1 windows a side
        torch.testing.assert_close(scorer.logits(big), _windows_mean(model, big, 32, 4), rtol=1e-4, atol=1e-5)
        # VGG's flip averaging: the mean of the two soft-max posteriors
        expected = (_windows_mean(model, big, 32, 4).double().softmax(1)
                    + _windows_mean(model, big.flip(-1), 32, 4).double().softmax(1)) / 2
        torch.testing.assert_close(scorer.probabilities(big), expected, rtol=1e-4, atol=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model itself untouched


def test_dense_vgg_is_the_network_at_its_size_and_sees_past_each_windows_border():
    """VGG pads its convolutions: at the training size dense evaluation is the plain network; on a larger
    image a window's border sees its neighbours, not zero padding (Simonyan & Zisserman 2015, sec. 3.2),
    so the cells differ from crops except where the neighbourhood IS what padding would give."""
    torch.manual_seed(0)
    model = VGG(3, 10, 32, config="A", fc_size=64).eval()
    scorer = dense_scorer(model, 32, 3, "eval.dense")
    assert scorer.kind == CONVERTED and scorer.stride == 32  # five 2x2 pools
    small, big = torch.randn(2, 3, 32, 32), torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(scorer.logits(small), model(small), rtol=1e-4, atol=1e-5)
        maps = scorer.score_maps(big)
        assert maps.shape == (1, 10, 3, 3)
        torch.testing.assert_close(scorer.logits(big), maps.mean(dim=(2, 3)))
        crop = model(big[..., :32, :32])
        assert not torch.allclose(maps[:, :, 0, 0], crop, atol=1e-3)  # the neighbours count


def test_a_global_pooling_network_is_already_dense_and_its_map_is_its_cam():
    torch.manual_seed(0)
    model = ResNet(3, 10, 32, form="cifar", depth=8).eval()
    scorer = dense_scorer(model, 32, 3, "eval.dense")
    assert scorer.kind == GLOBAL_POOLING and scorer.stride is None and scorer.model is model
    big = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(scorer.logits(big), model(big))  # the network itself, unchanged
        maps = scorer.score_maps(big)
        features = model.forward_features(big)
        weight, bias = model.get_classifier().weight, model.get_classifier().bias
        cam = torch.einsum("kc,nchw->nkhw", weight, features) + bias.view(1, -1, 1, 1)
    torch.testing.assert_close(maps, cam, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(maps.mean(dim=(2, 3)), scorer.logits(big), rtol=1e-4, atol=1e-5)


class PooledFCNet(ClassifierMixin):
    """conv -> adaptive average pool to 2x2 -> FC: runs on any size, but its head is not position-wise."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(2), nn.Linear(16, 3)

    def forward_features(self, x):
        return self.conv(x)

    def forward_head(self, features, pre_logits=False):
        pooled = self.pool(features).flatten(1)
        return pooled if pre_logits else self.fc(pooled)


def test_a_network_neither_convertible_nor_globally_pooled_is_refused_naming_the_key():
    with pytest.raises(UserError) as refused:
        dense_scorer(PooledFCNet().eval(), 16, 1, "eval.dense")
    message = str(refused.value)
    assert message.startswith("eval.dense='PooledFCNet'") and "eval.crops" in message


class PatchNet(FeaturesClassifierMixin):
    """16x16 windows; features: 4x4 average pooling (stride 4); class 1 = the sum of the four central cells
    (the window's central 8x8 pixels), class 0 = a constant 2.5: class 1 wins where a bright 8x8 patch
    fills a window's centre."""

    def __init__(self) -> None:
        super().__init__()
        self.features, self.avgpool = nn.Sequential(nn.AvgPool2d(4, 4)), nn.Identity()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        self.feature_shape = (1, 4, 4)
        with torch.no_grad():
            self.classifier[1].weight.zero_()
            self.classifier[1].weight[1, [5, 6, 9, 10]] = 1.0
            self.classifier[1].bias.copy_(torch.tensor([2.5, 0.0]))


def test_the_heat_maps_peak_lies_on_a_planted_pattern():
    model = PatchNet().eval()
    scorer = dense_scorer(model, 16, 1, "analysis.class_heatmap")
    assert scorer.kind == CONVERTED and scorer.stride == 4
    image = torch.full((1, 1, 64, 64), 0.5)
    image[..., 24:32, 40:48] = 1.0  # centre (27.5, 43.5)
    with torch.no_grad():
        maps = scorer.score_maps(image)
    assert maps.shape == (1, 2, 13, 13)
    assert peak(maps[0, 1], scorer, (64, 64)) == (27.5, 43.5)
    assert float(maps[0, 1].max()) == pytest.approx(4.0)  # the patch exactly fills the peak window's centre


def test_the_class_heatmap_analysis_finds_a_placed_patch(tmp_path):
    """``placement=place`` puts the 16x16 image somewhere on a 64x64 mean-grey canvas; the class-1 map
    peaks on the patch's centre to within half the stride (the windows are 4 pixels apart)."""
    display = torch.full((3, 1, 16, 16), 0.5)
    display[..., 4:12, 4:12] = 1.0
    fake = FakeRun(PatchNet().eval(), (display - 0.5) / 0.25, labels=torch.ones(3, dtype=torch.long))
    fake.cfg = OmegaConf.create({"data": {"mean": [0.5], "std": [0.25], "image_size": 16, "in_channels": 1}})
    ctx = AnalysisContext(trained=fake, name="class_heatmap", out_dir=tmp_path / "analysis")
    figures = class_heatmap(ctx, num_images=3, scale=4.0, placement="place", seed=3)
    assert figures["image_size"] == 64 and figures["score_map"] == [13, 13] and figures["stride"] == 4
    corners = [tuple(r["corner"]) for r in figures["images"]]
    assert len(set(corners)) > 1  # placed at different spots
    for record, (top, left) in zip(figures["images"], corners):
        assert record["label"] == "b"  # the map of class 1, the patch detector
        row, column = record["label_peak"]
        assert abs(row - (top + 7.5)) <= 2 and abs(column - (left + 7.5)) <= 2
    assert (tmp_path / "analysis" / "class_heatmap" / "class_heatmaps.png").stat().st_size > 1000


# --- end to end on real runs --------------------------------------------------------------------------
def _train(workdir: Path, *extra: str) -> Path:
    run_cli("experiments.train", *TINY, "trainer.max_epochs=1", *extra, cwd=workdir, check=True)
    return next(p.parent for p in (workdir / "outputs").glob("train/*/*/config.yaml"))


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("lenet"))


@pytest.fixture(scope="module")
def blueprint_run(tmp_path_factory) -> Path:
    """A conv net with an FC head that does not declare its feature map: it cannot be converted."""
    return _train(tmp_path_factory.mktemp("blueprint"), "model=blueprint")


def _row(record: dict, crops) -> dict:
    (row,) = [r for r in record["rows"] if r["crops"] == crops]
    return row


def test_dense_at_the_training_size_without_the_mirror_is_the_single_view(lenet_run):
    from experiments.evaluation.evaluate import main

    record = main([f"run={lenet_run}", "eval.dense_size=32", "eval.dense_flip=false"])
    summary = json.loads((lenet_run / "summary.json").read_text())["metrics"]
    assert _row(record, 1)["top1_err"] == pytest.approx(summary["test/err"], abs=1e-4)
    assert {k: _row(record, "dense")[k] for k in ("top1_err", "top5_err")} == {
        k: _row(record, 1)[k] for k in ("top1_err", "top5_err")}
    (member,) = record["dense"]["members"]
    assert member["conversion"] == CONVERTED and member["side"] == 32 and member["score_map"] == [1, 1]
    Path(record["path"]).unlink()


def test_dense_evaluation_on_a_larger_image_is_the_mean_over_windows_and_the_mirror(lenet_run):
    from torchvision.transforms.v2 import functional as TF

    from experiments.evaluation.ensemble import errors_of
    from experiments.evaluation.trained import load_trained

    result = run_cli("experiments.eval", f"run={lenet_run}", "eval.dense=true", "eval.dense_scale=1.5",
                     "eval.crops=[1,10]", cwd=lenet_run, check=True)
    (path,) = sorted((lenet_run / "eval").glob("2*.json"))
    record = json.loads(path.read_text())
    assert [r["crops"] for r in record["rows"]] == [1, 10, "dense"]
    assert record["dense"]["scale"] == 1.5 and record["dense"]["flip"] is True
    assert record["dense"]["members"][0]["score_map"] == [5, 5]  # (48 - 32) / 4 + 1 windows a side
    assert "dense" in result.stdout and "48 px" in result.stdout
    # By hand: the test images enlarged to 48 px (synthetic data is stored at 32: resize mode), every
    # 32-pixel window at LeNet's stride 4 through the plain network, its logits averaged, soft-max, and
    # the mirror image's posteriors averaged in.
    trained = load_trained(lenet_run)
    _, display, labels = trained.test_images()
    big = TF.resize(display, [48], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    big = (big - 0.5) / 0.25
    model = trained.model.eval()
    probs = (_windows_mean(model, big, 32, 4).double().softmax(1)
             + _windows_mean(model, big.flip(-1), 32, 4).double().softmax(1)) / 2
    expected = errors_of(probs, labels, record["top_k"])
    row = _row(record, "dense")
    assert row["top1_err"] == pytest.approx(expected["top1_err"], abs=1e-9)
    assert row["top5_err"] == pytest.approx(expected["top5_err"], abs=1e-9)
    path.unlink()


BAD = [
    (["eval.dense=yes"], ["eval.dense='yes'", "boolean"]),
    (["eval.dense_scale=0.5"], ["eval.dense_scale='0.5'", ">= 1"]),
    (["eval.dense_size=abc"], ["eval.dense_size='abc'", "pixels"]),
    (["eval.dense_size=16"], ["eval.dense_size=16", "32 pixels"]),
    (["eval.dense_scale=2", "eval.dense_size=64"], ["eval.dense_size=64", "eval.dense_scale=2"]),
    (["eval.dense=false", "eval.dense_scale=2"], ["eval.dense_scale", "eval.dense=false"]),
    (["eval.dense_flip=maybe"], ["eval.dense_flip='maybe'"]),
]


@pytest.mark.parametrize(("args", "words"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_dense_inputs_are_one_paragraph_and_write_nothing(lenet_run, args, words, capsys):
    from experiments.evaluation.evaluate import main

    before = tree_hashes(lenet_run)
    refused_in_process(main, [f"run={lenet_run}", *args], capsys, words)
    assert tree_hashes(lenet_run) == before


def test_a_network_that_cannot_be_made_dense_is_refused_and_nothing_is_written(blueprint_run, capsys):
    from experiments.analysis.analyze import main as analyze

    before = tree_hashes(blueprint_run)
    result = run_cli("experiments.eval", f"run={blueprint_run}", "eval.dense=true", cwd=blueprint_run)
    assert_refused(result, ["eval.dense='Blueprint'", "global average pooling", "eval.crops"])
    with pytest.raises(SystemExit) as stop:  # the analysis, in-process
        analyze([f"run={blueprint_run}", "analysis=[class_heatmap]"])
    assert stop.value.code == 2 and "analysis.class_heatmap='Blueprint'" in " ".join(capsys.readouterr().err.split())
    assert tree_hashes(blueprint_run) == before


def test_the_class_heatmap_analysis_on_a_trained_run(lenet_run):
    from experiments.analysis.analyze import main as analyze

    analyze([f"run={lenet_run}", "analysis=[class_heatmap]", "analysis.class_heatmap.num_images=2",
             "analysis.class_heatmap.scale=1.5"])
    record = json.loads((lenet_run / "analysis" / "class_heatmap.json").read_text())
    figures = record["figures"]
    assert figures["conversion"] == CONVERTED and figures["stride"] == 4 and figures["window"] == 32
    assert figures["image_size"] == 48 and figures["score_map"] == [5, 5] and len(figures["images"]) == 2
    for image in figures["images"]:  # peaks are window centres: 15.5 + 4k
        assert all((value - 15.5) % 4 == 0 and 15.5 <= value <= 31.5 for value in image["label_peak"])
    assert (lenet_run / record["files"][0]).stat().st_size > 1000


def test_image_folder_images_are_dense_evaluated_at_their_own_aspect(tmp_path):
    """Image folders: each decoded image, whatever its size, gets shorter side Q; a constant-colour image
    gives every window the same scores, so the dense posterior is the network's on a constant 16x16 view."""
    from types import SimpleNamespace

    from PIL import Image

    from data.imagefolder import ImageFolderDataModule
    from experiments.evaluation.dense import DenseSettings, DenseView

    colours = {"cat": (200, 30, 90), "dog": (10, 250, 120)}
    for split in ("train", "val"):
        for label, colour in colours.items():
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (13 + 9 * i, 10), colour).save(tmp_path / split / label / f"{i}.png")
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, num_workers=0, val_size=0, eval_batch_size=3)
    dm.setup()
    torch.manual_seed(0)
    model = LeNet5(in_channels=3, num_classes=2, input_size=16, activation="relu").eval()
    cfg = OmegaConf.create({"data": {"image_size": 16, "in_channels": 3},
                            "trainer": {"accelerator": "cpu", "precision": "32-true"}})
    trained = SimpleNamespace(model=model, cfg=cfg, datamodule=dm, run_dir=tmp_path)
    view = DenseView(DenseSettings(size=24))
    labels, probs = view.probabilities(trained, "folder run")
    assert view.members[0]["conversion"] == CONVERTED and view.members[0]["side"] == 24
    mean, std = torch.tensor(list(dm.mean)).view(1, 3, 1, 1), torch.tensor(list(dm.std)).view(1, 3, 1, 1)
    for label, p in zip(labels.tolist(), probs):
        colour = torch.tensor(colours[dm.classes[label]], dtype=torch.float32).view(1, 3, 1, 1) / 255
        with torch.no_grad():
            expected = model(((colour - mean) / std).expand(1, 3, 16, 16)).double().softmax(1)[0]
        torch.testing.assert_close(p, expected, atol=1e-5, rtol=0)
