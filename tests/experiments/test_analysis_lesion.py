"""The lesion study (Veit et al. 2016) on hand-built residual nets whose answer is known, on a ResNet and
its plain twin, and run through its config."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from tests.analysis_stub import FakeRun
from torch import nn

from experiments.analysis.common import AnalysisContext
from experiments.analysis.lesion import deleted, lesion_study, residual_blocks, shape_keeping
from experiments.core.errors import UserError
from models.resnet import BasicBlock, BlockOptions, ResNet

PREACT = BlockOptions(shortcut="A", residual=True, preactivation=True)


class TwoBlocks(nn.Module):
    """stem conv -> block ``a`` (branch exactly zero) -> block ``b`` -> global average pool -> linear.

    Pre-activation blocks output ``x + branch(x)`` with no ReLU after the sum, so removing ``b``'s branch
    changes the logits by exactly ``fc.weight @ mean(branch_b)``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.a, self.b = BasicBlock(4, 4, 1, PREACT), BasicBlock(4, 4, 1, PREACT)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)
        with torch.no_grad():
            self.a.conv2.weight.zero_()
            for block in (self.a, self.b):  # non-trivial BN statistics, so eval mode matters
                block.bn1.running_mean.uniform_(-0.5, 0.5)
                block.bn2.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.fc(self.pool(self.b(self.a(self.stem(x)))).flatten(1))


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def test_deleting_a_zero_branch_changes_nothing_and_a_real_branch_exactly_its_output():
    torch.manual_seed(0)
    model = TwoBlocks().eval()
    x = _images(5, (1, 8, 8))
    with torch.no_grad():
        full = model(x)
        with deleted([model.a]):
            without_a = model(x)
        h = model.a(model.stem(x))                                   # what block b receives
        branch = model.b.branch(model.b.relu(model.b.bn1(h)))        # its residual branch on it
        with deleted([model.b]):
            without_b = model(x)
        after = model(x)
    assert torch.equal(without_a, full)
    assert branch.abs().sum() > 0
    assert torch.allclose(full - without_b, branch.mean(dim=(2, 3)) @ model.fc.weight.T, atol=1e-5)
    assert torch.equal(after, full) and "branch" not in vars(model.b)  # the block is itself again


def test_a_resnet_deletes_shape_keeping_blocks_only_and_draws_reproducible_sets():
    torch.manual_seed(0)
    model = ResNet(in_channels=1, num_classes=3, form="cifar", depth=14, shortcut="A").eval()  # 2 blocks a stage
    images, labels = _images(32, (1, 16, 16)), torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(1))
    names = [n for n, _ in residual_blocks(model)]
    assert names == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1"]
    assert [n for n, keeps in shape_keeping(model, residual_blocks(model), images).items() if not keeps] == \
        ["layer2.0", "layer3.0"]
    study = lesion_study(model, images, labels, max_deleted=6, draws=3, seed=7)
    assert study["residual"] and study["deletable"] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1"]
    assert [k["block"] for k in study["kept"]] == ["layer2.0", "layer3.0"]
    assert [s["block"] for s in study["single"]] == study["deletable"]
    assert [r["deleted"] for r in study["random"]] == [1, 2, 3, 4]    # at most the 4 deletable blocks
    assert [len(r["errors"]) for r in study["random"]] == [3, 3, 3, 1]  # one set of 4 exists; 3 of the others
    assert all(len(set(map(tuple, r["blocks"]))) == len(r["blocks"]) for r in study["random"])  # different sets
    with deleted([model.layer1[0]]):                                   # single errors are real evaluations
        wrong = float((model(images).argmax(1) != labels).float().mean()) * 100
    assert study["single"][0]["error"] == pytest.approx(wrong, abs=1e-3)
    assert lesion_study(model, images, labels, max_deleted=6, draws=3, seed=7) == study
    json.dumps(study)


def test_a_plain_twin_replaces_a_deleted_block_by_the_identity():
    torch.manual_seed(0)
    model = ResNet(in_channels=1, num_classes=3, form="cifar", depth=14, shortcut="A", residual=False).eval()
    images, labels = _images(16, (1, 16, 16)), torch.randint(0, 3, (16,))
    seen = {}
    handle = model.layer1[1].register_forward_hook(lambda m, i, o: seen.update(i=i[0], o=o))
    with torch.no_grad(), deleted([model.layer1[1]]):
        model(images)
    handle.remove()
    assert torch.equal(seen["i"], seen["o"])
    study = lesion_study(model, images, labels, max_deleted=2, draws=2)
    assert not study["residual"] and "identity" in study["deletion"]
    assert study["deletable"] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1"]
    assert len(study["single"]) == 4 and [len(r["errors"]) for r in study["random"]] == [2, 2]


def test_a_network_without_resnet_blocks_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(UserError, match="ResNet"):
        lesion_study(model, _images(2, (1, 8, 8)), torch.tensor([0, 1]))


def test_lesion_runs_from_its_config_and_draws_its_figure(tmp_path):
    from hydra.utils import get_method

    from experiments.analysis.analyze import compose_settings
    from experiments.training import schema

    settings = compose_settings(["analysis=[lesion]", "analysis.lesion.num_images=24", "analysis.lesion.draws=2"])
    schema.check(OmegaConf.masked_copy(settings, ["analysis"]))
    params = OmegaConf.to_container(settings.analysis.lesion, resolve=True)
    torch.manual_seed(0)
    model = ResNet(in_channels=1, num_classes=3, form="cifar", depth=14, shortcut="A")
    ctx = AnalysisContext(trained=FakeRun(model, _images(24, (1, 16, 16)), torch.randint(0, 3, (24,))),
                          name="lesion", out_dir=tmp_path / "analysis")
    figures = get_method(params.pop("_target_"))(ctx, **params)
    assert figures["images"] == 24 and figures["chance_error"] == pytest.approx(66.667)
    assert len(figures["random"]) == 4 and figures["draws"] == 2
    assert ctx.files == ["analysis/lesion/lesion.png"] and (tmp_path / ctx.files[0]).stat().st_size > 1000
    assert model.training  # handed back in the mode it came in
    with pytest.raises(UserError):
        schema.check(OmegaConf.masked_copy(compose_settings(["analysis=[lesion]", "analysis.lesion.draws=0"]),
                                           ["analysis"]))
