"""``python -m experiments.summary --map``: the map of the architectures (issue 18, item 6).

Known answers: the papers' tables and torchvision's published metrics for the errors, torchvision's
parameter counts and multiply-adds for the networks that match its builders, and a hand-built network
for the choice of the timed input size.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from tests.conftest import CONF, assert_refused, model_config, refused_in_process, run_cli, tree_hashes
from torch import nn

from experiments.bench import architecture_map_figure as figure_module
from experiments.bench.architecture_map import profile_all
from experiments.bench.inference_timing import sizes_to_try, time_forward, time_within_budget
from experiments.bench.zoo_models import select
from experiments.core.errors import UserError
from experiments.summary import map_main
from models.errors import ModelConfigError

# The brief's list of ImageNet-form configs that have a published figure (issue 18, item 6).
MUST_BE_ON_THE_MAP = [
    "alexnet", "alexnet_torchvision", "zfnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
    "vgg19_bn", "googlenet", "inception_v3", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x4d", "wide_resnet50_2", "wide_resnet101_2", "densenet121", "densenet161",
    "densenet169", "densenet201", "squeezenet1_0", "squeezenet1_1", "mobilenet_v1", "mobilenet_v2", "se_resnet50",
]
# CIFAR-form and MNIST-form networks have no ImageNet error: never on the map.
NEVER_ON_THE_MAP = ["lenet5", "resnet20", "resnet110", "densenet40", "wrn28_10", "preact_resnet164", "blueprint"]

# The papers' own tables: (config, top-1 error %, test crops).
FROM_THE_PAPERS = [
    ("alexnet", 40.7, 10),            # Krizhevsky et al. 2012, Table 2, 1 CNN (10 patches)
    ("zfnet", 38.4, 10),              # Zeiler & Fergus 2014, Table 2, 1 convnet as per Fig. 3
    ("plain18", 27.94, 10),           # He et al. 2015, Table 2 (10-crop testing)
    ("plain34", 28.54, 10),
    ("resnet50", 24.7, 1),            # He et al.'s released models, 1-crop (Hu et al. 2018, Table 2 'original')
    ("resnet101", 23.6, 1),
    ("resnet152", 23.0, 1),
    ("googlenet", 29.0, 1),           # Szegedy et al. 2016, Table 3
    ("inception_v3", 21.2, 1),        # Szegedy et al. 2016, Table 3, BN-auxiliary
    ("resnext50_32x4d", 22.2, 1),     # Xie et al. 2017, Table 3
    ("resnext50_2x40d", 23.0, 1),
    ("resnext50_4x24d", 22.6, 1),
    ("resnext50_8x14d", 22.3, 1),
    ("resnext101_32x4d", 21.2, 1),
    ("resnext101_64x4d", 20.4, 1),    # Xie et al. 2017, Table 4
    ("wide_resnet50_2", 21.9, 1),     # Zagoruyko & Komodakis 2016, Table 8
    ("densenet121", 25.02, 1),        # Huang et al. 2017, Table 3 (single-crop)
    ("densenet169", 23.80, 1),
    ("densenet201", 22.58, 1),
    ("densenet264", 22.15, 1),
    ("densenet161", 22.2, 1),         # the authors' repository (k=48)
    ("squeezenet1_0", 42.5, 1),       # Iandola et al. 2016, Table 2 (57.5% accuracy)
    ("mobilenet_v1", 29.4, 1),        # Howard et al. 2017, Table 8 (70.6% accuracy)
    ("mobilenet_v2", 28.0, 1),        # Sandler et al. 2018, Table 4 (72.0%)
    ("se_resnet50", 23.29, 1),        # Hu et al. 2018, Table 2
]
# Where only torchvision's reproduction gives a single-crop figure: (config, torchvision builder).
FROM_TORCHVISION = [
    ("alexnet_torchvision", "alexnet"), ("vgg11", "vgg11"), ("vgg11_bn", "vgg11_bn"), ("vgg13", "vgg13"),
    ("vgg13_bn", "vgg13_bn"), ("vgg16", "vgg16"), ("vgg16_bn", "vgg16_bn"), ("vgg19", "vgg19"), ("vgg19_bn", "vgg19_bn"),
    ("resnet18", "resnet18"), ("resnet34", "resnet34"), ("resnet50_v15", "resnet50"), ("resnet101_v15", "resnet101"),
    ("resnet152_v15", "resnet152"), ("resnext101_32x8d", "resnext101_32x8d"), ("wide_resnet101_2", "wide_resnet101_2"),
    ("squeezenet1_1", "squeezenet1_1"),
]
# Networks built exactly as torchvision builds them: its parameter count and its multiply-adds (GFLOPS
# in its metadata are multiply-adds: 4.089 for ResNet-50 v1.5).
TORCHVISION_TWINS = {"resnet18": "resnet18", "mobilenet_v2": "mobilenet_v2", "vgg16": "vgg16"}
MAP_MODELS = ["resnet18", "mobilenet_v2", "vgg16", "alexnet"]


def torchvision_meta(builder: str) -> dict:
    from torchvision.models import get_model_weights

    return get_model_weights(builder).IMAGENET1K_V1.meta  # metadata only: no download


# --- the published numbers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "error", "crops"), FROM_THE_PAPERS, ids=[n for n, _, _ in FROM_THE_PAPERS])
def test_a_config_carries_its_papers_error(name: str, error: float, crops: int) -> None:
    paper = model_config(name).paper
    assert paper.top1_err == pytest.approx(error, abs=1e-9)
    assert int(paper.get("top1_crops") or 1) == crops


@pytest.mark.parametrize(("name", "builder"), FROM_TORCHVISION, ids=[n for n, _ in FROM_TORCHVISION])
def test_a_config_without_a_single_crop_paper_figure_carries_torchvisions(name: str, builder: str) -> None:
    accuracy = torchvision_meta(builder)["_metrics"]["ImageNet-1K"]["acc@1"]
    paper = model_config(name).paper
    assert paper.top1_err == pytest.approx(100 - accuracy, abs=1e-6)
    assert paper.get("top1_crops") is None  # torchvision's figures are one centre crop


def test_the_schema_refuses_an_error_that_is_no_percentage(compose) -> None:
    from experiments.training import schema

    for override, words in (("model.paper.top1_err=150", "must be < 100"), ("model.paper.top1_err=n/a", "is not float"),
                            ("+model.paper.top1_crops=0", "must be >= 1")):
        with pytest.raises(UserError, match=words):
            schema.check(compose(["model=resnet18", override]))
    schema.check(compose(["model=alexnet"]))  # 40.7 over 10 crops fits


# --- which models are on the map ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def everything() -> list[str]:
    return [m.name for m in select()]


def test_the_map_is_every_config_with_a_published_error(everything: list[str]) -> None:
    assert set(MUST_BE_ON_THE_MAP) <= set(everything)
    assert not set(NEVER_ON_THE_MAP) & set(everything)


def test_a_new_config_is_on_the_map_by_its_key_alone(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "model" / "my_net.yaml").write_text(
        "defaults: [_resnet_imagenet, _self_]\ndepth: 18\nshortcut: A\npaper:\n  top1_err: 31.5\n")
    (conf / "model" / "my_unpublished_net.yaml").write_text("defaults: [_resnet_imagenet, _self_]\ndepth: 34\nshortcut: A\n")
    assert [m.name for m in select(["my_*"], conf_dir=conf)] == ["my_net"]
    picked = select(["my_net", "resnet18"], conf_dir=conf)
    assert [(m.name, m.top1_err, m.input_size) for m in picked] == [("my_net", 31.5, 224), ("resnet18", 30.242, 224)]
    with pytest.raises(UserError, match=r"my_unpublished_net.*has no paper\.top1_err"):
        select(["my_unpublished_net"], conf_dir=conf)


def test_a_config_that_does_not_build_is_left_out_of_the_whole_map_but_refused_when_named(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "model" / "my_broken_net.yaml").write_text(  # 19 is no depth of an ImageNet ResNet
        "defaults: [_resnet_imagenet, _self_]\ndepth: 19\nshortcut: A\npaper:\n  top1_err: 33.0\n")
    models = select(["my_broken_net", "squeezenet1_1"], conf_dir=conf)
    points, kept, left_out = profile_all(models, named=set(), log=lambda _: None)
    assert [p["model"] for p in points] == [m.name for m in kept] == ["squeezenet1_1"]
    assert [entry["model"] for entry in left_out] == ["my_broken_net"] and "depth" in left_out[0]["reason"]
    with pytest.raises(ModelConfigError, match="depth"):
        profile_all(models, named={"my_broken_net"}, log=lambda _: None)


# --- the command, without timing ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mapped(tmp_path_factory) -> Path:
    """One ``--map --no-timing`` run on four models; its output folder."""
    out = tmp_path_factory.mktemp("map") / "maps"
    assert map_main(["--map", "--no-timing", "--models", ",".join(MAP_MODELS), "--out", str(out)]) == 0
    (folder,) = out.iterdir()
    return folder


def read_csv(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "architecture_map.csv").open() as handle:
        return {row["model"]: row for row in csv.DictReader(handle)}


def test_the_map_writes_the_figure_and_the_numbers(mapped: Path) -> None:
    assert sorted(p.name for p in mapped.iterdir()) == [f"architecture_map.{e}" for e in ("csv", "json", "png", "svg")]
    assert (mapped / "architecture_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (mapped / "architecture_map.svg").read_bytes()[:2000]
    rows = read_csv(mapped)
    assert sorted(rows) == sorted(MAP_MODELS)
    points = {p["model"]: p for p in json.loads((mapped / "architecture_map.json").read_text())["points"]}
    for name, row in rows.items():
        published = model_config(name).paper
        assert float(row["top1_err"]) == points[name]["top1_err"] == published.top1_err
        assert int(row["top1_crops"]) == points[name]["top1_crops"] == int(published.get("top1_crops") or 1)
        assert int(row["input_size"]) == published.input_size
        assert row["b1_latency_ms"] == row["b64_latency_ms"] == ""  # --no-timing


@pytest.mark.parametrize("name", sorted(TORCHVISION_TWINS))
def test_the_counts_are_the_built_networks(mapped: Path, name: str) -> None:
    meta = torchvision_meta(TORCHVISION_TWINS[name])
    row = read_csv(mapped)[name]
    assert int(row["params"]) == meta["num_params"]
    assert int(row["macs"]) / 1e9 == pytest.approx(meta["_ops"], rel=0.01)


def test_marker_areas_are_proportional_to_parameters(mapped: Path) -> None:
    rows = read_csv(mapped).values()
    ratios = {float(r["marker_area_pt2"]) / int(r["params"]) for r in rows}
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)
    points = json.loads((mapped / "architecture_map.json").read_text())["points"]
    axis = figure_module.draw(points).axes[0]
    drawn = {}  # model -> (x, y, area, hollow), read back from the scatter artists
    for collection in axis.collections:
        faces = collection.get_facecolors()
        for (x, y), area, face in zip(collection.get_offsets(), collection.get_sizes(), faces):
            drawn[(round(float(x), 6), round(float(y), 6))] = (float(area), face[3] == 0)
    assert len(drawn) == len(points)
    for point in points:
        area, hollow = drawn[(round(point["macs"] / 1e9, 6), round(point["top1_err"], 6))]
        assert area / point["params"] == pytest.approx(figure_module.AREA_PER_MILLION_PARAMS / 1e6)
        assert hollow == (point["top1_crops"] > 1)  # AlexNet's 10-patch figure is drawn hollow
    assert axis.get_xscale() == "log"
    assert sorted(t.get_text() for t in axis.texts if t.get_text()) == sorted(MAP_MODELS)  # one name per marker


def test_a_second_map_goes_to_a_new_folder(mapped: Path) -> None:
    before = tree_hashes(mapped.parent)
    assert map_main(["--map", "--no-timing", "--models", "resnet18", "--out", str(mapped.parent)]) == 0
    after = tree_hashes(mapped.parent)
    assert {k: v for k, v in after.items() if k in before} == before
    assert len([p for p in mapped.parent.iterdir()]) == 2


# --- timing --------------------------------------------------------------------------------------------------
def test_the_timing_table_has_both_batch_sizes(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich's table width: no wrapped headers
    out = tmp_path / "maps"
    assert map_main(["--map", "--models", "squeezenet1_1,mobilenet_v2", "--rounds", "1", "--budget", "2",
                     "--out", str(out)]) == 0
    (folder,) = out.iterdir()
    data = json.loads((folder / "architecture_map.json").read_text())
    assert data["settings"]["batches"] == [1, 64] and data["machine"]["torch_threads"] >= 1
    for point in data["points"]:
        single, batched = point["timing"]["batch_1"], point["timing"]["batch_64"]
        assert single["size"] == 224 and batched["size"] in sizes_to_try(224)
        for timing, batch in ((single, 1), (batched, 64)):
            assert timing["batch"] == batch and timing["passes"] >= 1 and timing["latency_ms"] > 0
            assert timing["images_per_s"] == pytest.approx(batch * 1000 / timing["latency_ms"])
    for row in read_csv(folder).values():
        assert float(row["b1_latency_ms"]) > 0 and float(row["b64_images_per_s"]) > 0
    printed = capsys.readouterr().out
    assert "ms/batch b1" in printed and "ms/batch b64" in printed and "input b64" in printed


class _Tiny(nn.Module):
    """Two convolutions and a classifier sized for ``size`` (as VGG's first FC layer is)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(4 * (size // 2) ** 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def test_the_batch_is_timed_at_the_largest_size_the_budget_allows() -> None:
    assert sizes_to_try(224) == [224, 112, 56] and sizes_to_try(299) == [299, 149, 74, 37]
    model = _Tiny(64)
    # 64 images x 1 ms = 64 ms at 64 pixels; 16 ms at 32: a 100 ms budget fits 64, a 20 ms budget 32 only.
    timed = time_within_budget(model, 64, 64, 1e-3, 0.1, rounds=2, rebuild=_Tiny)
    assert (timed.size, timed.rebuilt, len(timed.seconds) >= 2) == (64, False, True)
    timed = time_within_budget(model, 64, 64, 1e-3, 0.02, rounds=2, rebuild=_Tiny)
    assert (timed.size, timed.rebuilt, len(timed.seconds) >= 2) == (32, True, True)  # 64-pixel classifier: rebuilt
    timed = time_within_budget(model, 64, 64, 1e-3, 0.02, rounds=2)  # nothing it takes fits: one pass at 64
    assert (timed.size, timed.rebuilt, len(timed.seconds)) == (64, False, 1)
    single = time_forward(model, 1, 64, rounds=2, min_seconds=0.0)
    assert (single.batch, single.size, single.warmup, len(single.seconds)) == (1, 64, 1, 2)
    assert not model.training


# --- bad options ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "words"), [
    (["--models", "nosuch"], ["--models='nosuch'", "names no model config"]),
    (["--models", "resnet18,lenet5"], ["--models='lenet5'", "has no paper.top1_err"]),
    (["--models", ","], ["--models=''", "names no model"]),
    (["--rounds", "0"], ["--rounds=0", "must be at least 1"]),
    (["--budget", "-1"], ["--budget=-1.0", "positive number of seconds"]),
    (["--budget", "nan"], ["--budget=nan", "positive number of seconds"]),
    (["--rounds", "three"], ["invalid int value: 'three'"]),
    (["model=resnet18"], ["unrecognized arguments: model=resnet18"]),
], ids=["unknown model", "no published error", "empty list", "rounds 0", "negative budget", "nan budget",
        "rounds not a number", "hydra override"])
def test_a_bad_option_is_refused_and_nothing_is_written(tmp_path: Path, monkeypatch, capsys, args, words) -> None:
    monkeypatch.chdir(tmp_path)
    message = refused_in_process(map_main, ["--map", *args], capsys, words)
    assert message.startswith("Error:") and "Traceback" not in message
    assert list(tmp_path.iterdir()) == []


def test_the_command_refuses_an_unknown_model_in_one_paragraph(tmp_path: Path) -> None:
    result = run_cli("experiments.summary", "--map", "--models", "resnet18,nosuchnet", cwd=tmp_path)
    assert_refused(result, ["--models='nosuchnet'", "names no model config"])
    assert list(tmp_path.iterdir()) == []
