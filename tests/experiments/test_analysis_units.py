"""Unit visualisation by optimisation (``unit_images``) on a hand-built net whose first channel is a known
vertical-edge filter: the optimised image shows that filter, each regulariser moves the result the way it
should, the model is handed back untouched, and the analysis runs from its config."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from tests.analysis_stub import FakeRun
from torch import nn

from experiments.analysis.common import AnalysisContext
from experiments.analysis.image_optimization import gaussian_blur, total_variation
from experiments.analysis.unit_images import unit_image
from experiments.core.errors import UserError

EDGE = torch.tensor([[-1.0, -1.0, 0.0, 1.0, 1.0]]).repeat(5, 1)  # dark left, bright right
SHAPE = (1, 15, 15)


class EdgeNet(nn.Module):
    """conv (channel 0 = EDGE, no bias) -> ReLU -> conv -> BN -> ReLU -> global pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 5, padding=2)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu2 = nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)
        with torch.no_grad():
            self.conv.weight[0, 0] = EDGE
            self.conv.bias[0] = 0.0
            self.bn.running_mean.uniform_(-0.5, 0.5)  # non-trivial statistics: eval mode matters
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.fc(self.pool(self.relu2(self.bn(self.conv2(self.relu(self.conv(x)))))).flatten(1))


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12))


def _centre_patch(image: torch.Tensor) -> torch.Tensor:
    c = image.shape[-1] // 2
    return image[0, c - 2:c + 3, c - 2:c + 3]


def _best_patch_corr(image: torch.Tensor) -> float:
    """Largest correlation of any 5x5 patch of ``image`` with EDGE."""
    patches = image[0].unfold(0, 5, 1).unfold(1, 5, 1).reshape(-1, 25)
    return max(_corr(p, EDGE) for p in patches)


def _run(model: nn.Module, **settings) -> tuple[torch.Tensor, float, float]:
    base = {"unit": "neuron", "steps": 80, "lr": 0.05, "l2": 1e-3, "tv": 0.0, "jitter": 0, "blur_every": 0,
            "blur_sigma": 0.0, "start": "noise", "seed": 0}
    return unit_image(model, model.relu, 0, SHAPE, **{**base, **settings})


def test_a_neuron_image_is_its_filter_and_the_activation_rises():
    model = EdgeNet()
    image, before, after = _run(model, unit="neuron")
    assert after > before + 1.0
    assert _corr(_centre_patch(image), EDGE) > 0.95  # the receptive field holds the filter itself
    outside = image.clone()
    c = SHAPE[-1] // 2
    outside[0, c - 2:c + 3, c - 2:c + 3] = 0
    assert outside.norm() < 0.5 * _centre_patch(image).norm()  # and L2 decay has cleared the rest


def test_a_channel_image_repeats_its_filter():
    model = EdgeNet()
    image, before, after = _run(model, unit="channel", steps=100)
    assert after > before + 0.5
    assert _best_patch_corr(image) > 0.9
    # vertical structure: columns vary, rows hardly (an edge detector does not care about height)
    assert image[0].diff(dim=1).abs().mean() > 3 * image[0].diff(dim=0).abs().mean()


def test_each_regulariser_moves_the_result_its_way():
    model = EdgeNet()
    plain, *_ = _run(model, unit="channel", l2=0.0)
    with_tv, *_ = _run(model, unit="channel", l2=0.0, tv=5.0)
    assert float(total_variation(with_tv)) < 0.7 * float(total_variation(plain))
    with_l2, *_ = _run(model, unit="channel", l2=0.05)
    assert with_l2.norm() < 0.7 * plain.norm()
    blurred, *_ = _run(model, unit="channel", l2=0.0, blur_every=2, blur_sigma=1.0)
    assert float(total_variation(blurred)) < 0.7 * float(total_variation(plain))
    # jitter: the centre neuron's receptive field moves between steps, so the pattern spreads beyond it
    fixed, *_ = _run(model, unit="neuron")
    jittered, *_ = _run(model, unit="neuron", jitter=2)

    def outside_share(x: torch.Tensor) -> float:
        return 1 - float(_centre_patch(x).pow(2).sum() / x.pow(2).sum())

    assert outside_share(jittered) > outside_share(fixed) + 0.2
    assert _corr(_centre_patch(jittered), EDGE) > 0.5  # still an edge


def test_gaussian_blur_keeps_the_mean_and_smooths():
    x = torch.randn(1, 2, 12, 12, generator=torch.Generator().manual_seed(0))
    y = gaussian_blur(x, 1.0)
    assert y.shape == x.shape and float(total_variation(y)) < 0.3 * float(total_variation(x))
    assert torch.equal(gaussian_blur(x, 0.0), x)
    flat = torch.full((1, 1, 6, 6), 0.7)
    assert torch.allclose(gaussian_blur(flat, 2.0), flat)


def test_the_model_is_handed_back_untouched():
    model = EdgeNet()
    model.train()
    model.fc.weight.requires_grad_(True)
    model.conv2.bias.requires_grad_(False)  # a frozen parameter stays frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _run(model, unit="channel", steps=5, jitter=1, blur_every=2, blur_sigma=0.5, tv=0.1)
    assert model.training and all(m.training for m in model.modules())
    assert model.fc.weight.requires_grad and not model.conv2.bias.requires_grad
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():  # BN statistics included
        assert torch.equal(value, before[key]), key


def _settings(*overrides: str) -> dict:
    from experiments.analysis.analyze import compose_settings
    from experiments.training import schema

    settings = compose_settings(["analysis=[unit_images]", *overrides])
    schema.check(OmegaConf.masked_copy(settings, ["analysis"]))
    return OmegaConf.to_container(settings.analysis.unit_images, resolve=True)


def test_unit_images_runs_from_its_config(tmp_path):
    from hydra.utils import get_method

    params = _settings("analysis.unit_images.steps=4", "analysis.unit_images.num_channels=2",
                       "analysis.unit_images.num_images=8")
    model = EdgeNet()
    model.train()
    images = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(1))
    ctx = AnalysisContext(trained=FakeRun(model, images), name="unit_images", out_dir=tmp_path / "analysis")
    figures = get_method(params.pop("_target_"))(ctx, **params)
    json.dumps(figures)
    assert figures["unit"] == "channel" and [r["layer"] for r in figures["layers"]] == ["relu", "relu2"]
    assert all(len(r["units"]) == 2 for r in figures["layers"])
    means = [u["data_mean"] for u in figures["layers"][0]["units"]]
    assert means == sorted(means, reverse=True)  # the most active channels first
    assert ctx.files == ["analysis/unit_images/relu.png", "analysis/unit_images/relu2.png"]
    assert all((tmp_path / f).stat().st_size > 1000 for f in ctx.files)
    assert model.training


@pytest.mark.parametrize(("override", "words"), [
    ("analysis.unit_images.layers=[nope]", ["analysis.unit_images.layers", "nope", "conv", "relu2", "fc"]),
    ("analysis.unit_images.channels=[7]", ["analysis.unit_images.channels", "7", "relu"]),
])
def test_bad_layers_and_channels_are_one_paragraph(tmp_path, override, words):
    from hydra.utils import get_method

    params = _settings(override, "analysis.unit_images.steps=2")
    ctx = AnalysisContext(trained=FakeRun(EdgeNet(), torch.randn(4, *SHAPE)), name="unit_images",
                          out_dir=tmp_path / "analysis")
    with pytest.raises(UserError) as error:
        get_method(params.pop("_target_"))(ctx, **params)
    message = str(error.value)
    assert "\n\n" not in message.strip()
    for word in words:
        assert word in message, (word, message)
    assert not (tmp_path / "analysis").exists()


@pytest.mark.parametrize("override", ["analysis.unit_images.unit=pixel", "analysis.unit_images.jitter=-1",
                                      "analysis.unit_images.blur_sigma=-0.5", "analysis.unit_images.steps=0"])
def test_the_schema_checks_the_settings_before_the_run(override):
    with pytest.raises(UserError, match=r"analysis\.unit_images"):
        _settings(override)


def test_a_unit_silent_at_the_start_gets_a_new_noise_start():
    model = EdgeNet()
    with torch.no_grad():
        model.conv.bias[1] = -0.6  # channel 1 needs a strong input before it responds at all
    _, before, after = unit_image(model, model.relu, 1, SHAPE, "neuron", steps=30, lr=0.05, start="noise")
    assert before > 0 and after > before
