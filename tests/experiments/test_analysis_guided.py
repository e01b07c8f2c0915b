"""Guided backpropagation, deconvnet, Guided Grad-CAM and the Zeiler-Fergus patches on hand-built models
whose right answer is known, the refusal of models whose rectifiers captum would miss, and each analysis
run through its config."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from tests.analysis_stub import FakeRun
from torch import nn

from experiments.analysis.common import AnalysisContext, rectified_layers
from experiments.analysis.deconvnet_patches import unit_projections
from experiments.analysis.guided import guided_backprop_maps, guided_gradcam_maps, require_relu_modules
from experiments.core.errors import UserError

REGION = (slice(4, 10), slice(6, 12))


class RegionReLU(nn.Module):
    """Linear -> ReLU -> linear on one 6x6 window of the image only."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(36, 12), nn.ReLU(), nn.Linear(12, 3)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x[:, 0, REGION[0], REGION[1]].flatten(1))))


class OneHidden(nn.Module):
    """f(x) = V relu(W x + b): every method has a closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.relu, self.out = nn.Linear(16, 10), nn.ReLU(), nn.Linear(10, 3)

    def forward(self, x):
        return self.out(self.relu(self.hidden(x.flatten(1))))


class SmallCNN(nn.Module):
    """conv-ReLU, a stride-2 conv-ReLU (the Grad-CAM layer, half resolution), global pooling, linear."""

    def __init__(self, in_channels: int = 2) -> None:
        super().__init__()
        self.conv1, self.relu1 = nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU()
        self.conv2, self.relu2 = nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x))))).flatten(1))


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def test_guided_maps_of_a_region_model_lie_in_its_region():
    torch.manual_seed(0)
    model, images = RegionReLU(), _images(3, (1, 16, 16))
    for deconvnet in (False, True):
        maps = guided_backprop_maps(model, images, torch.tensor([0, 1, 2]), deconvnet=deconvnet)
        assert maps.shape == images.shape
        inside = maps[:, 0, REGION[0], REGION[1]].abs().sum()
        assert inside > 0 and inside == pytest.approx(float(maps.abs().sum()))  # zero outside the window


def test_guided_backprop_and_deconvnet_of_a_one_layer_relu_net_are_the_hand_computed_ones():
    torch.manual_seed(0)
    model, x, target = OneHidden(), _images(5, (1, 4, 4), seed=1), torch.tensor([0, 1, 2, 0, 1])
    W, V = model.hidden.weight.detach(), model.out.weight.detach()
    on = (model.hidden(x.flatten(1)) > 0).float()                       # (N, 10): which units were on
    arriving = V[target]                                                # d score / d hidden output
    gradient = (arriving * on) @ W                                      # the plain input gradient
    guided = (arriving.clamp_min(0) * on) @ W                           # negative gradients zeroed at the ReLU
    deconv = arriving.clamp_min(0) @ W                                  # rectified, forward mask ignored
    got_guided = guided_backprop_maps(model, x, target).flatten(1)
    got_deconv = guided_backprop_maps(model, x, target, deconvnet=True).flatten(1)
    assert torch.allclose(got_guided, guided, atol=1e-6) and torch.allclose(got_deconv, deconv, atol=1e-6)
    assert not torch.allclose(guided, gradient, atol=1e-3) and not torch.allclose(deconv, guided, atol=1e-3)


def test_guided_gradcam_is_guided_backprop_times_the_upsampled_gradcam():
    torch.manual_seed(0)
    model, images, target = SmallCNN(), _images(3, (2, 12, 12)), torch.tensor([0, 2, 1])
    model.eval()
    # Grad-CAM by hand at relu2 (6x6): channel weights = spatial mean of d score / d map, ReLU of the sum.
    x = images.clone().requires_grad_(True)
    maps = model.relu2(model.conv2(model.relu1(model.conv1(x))))
    score = model.fc(model.pool(maps).flatten(1)).gather(1, target.view(-1, 1)).sum()
    (grads,) = torch.autograd.grad(score, maps)
    cam = (grads.mean(dim=(2, 3), keepdim=True) * maps).sum(1, keepdim=True).clamp_min(0).detach()
    cam = nn.functional.interpolate(cam, size=(12, 12), mode="bilinear", align_corners=False)
    expected = guided_backprop_maps(model, images, target) * cam
    product, got_cam = guided_gradcam_maps(model, images, target, "relu2")
    assert product.shape == images.shape and got_cam.shape == (3, 12, 12)
    assert torch.allclose(got_cam, cam[:, 0], atol=1e-6)
    assert torch.allclose(product, expected, atol=1e-6) and product.abs().sum() > 0


def test_a_deconvnet_projection_of_one_conv_unit_is_its_filter_whatever_the_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    images = _images(2, (2, 10, 10))
    positions = torch.tensor([2 * 8 + 5, 7 * 8 + 0])  # output (2, 5) and (7, 0) of the 8x8 map
    for channel in range(3):
        projections = unit_projections(model, model[1], images, channel, positions)
        for image, (row, col) in zip(projections, [(2, 5), (7, 0)]):
            window = image[:, row:row + 3, col:col + 3]
            assert torch.allclose(window, model[0].weight[channel].detach(), atol=1e-6)  # on or off: rectified 1
            assert window.abs().sum() == pytest.approx(float(image.abs().sum()))           # nothing outside


def test_models_whose_rectifiers_captum_would_miss_are_refused_by_name():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu = nn.Conv2d(1, 2, 3), nn.ReLU()

        def forward(self, x):
            return nn.functional.relu(self.relu(self.conv(x))).mean(dim=(2, 3))

    class Clamped(nn.Module):
        def forward(self, x):
            return x.clamp(min=0).mean(dim=(1, 2, 3)).unsqueeze(1).expand(-1, 2)

    x = _images(1, (1, 8, 8))
    cases = [(Functional(), ["Functional", "relu", "nn.ReLU"]),
             (Clamped(), ["Clamped", "clamp(min=0)"]),
             (nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.ReLU6(), nn.Linear(4, 2)), ["ReLU6", "hardtanh"]),
             (nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 2)), ["no nn.ReLU", "saliency"])]
    for model, words in cases:
        with pytest.raises(UserError) as refused:
            require_relu_modules(model, x, "guided_backprop")
        assert all(w in str(refused.value) for w in words), str(refused.value)
    assert require_relu_modules(SmallCNN(), _images(1, (2, 8, 8)), "guided_backprop") == 2


def test_zoo_resnets_pass_the_relu_check_and_inception_v3_and_mobilenet_v2_are_refused():
    from models.inception import InceptionV3
    from models.mobilenet import MobileNetV2
    from models.resnet import ResNet

    x = _images(1, (3, 32, 32))
    resnet = ResNet(num_classes=3, form="cifar", depth=8, shortcut="A")
    assert require_relu_modules(resnet, x, "deconvnet") == 1 + 2 * 3  # the stem's, two per block
    assert rectified_layers(resnet, x) == ["layer1", "layer2", "layer3"]
    with pytest.raises(UserError, match="ReLU6"):
        require_relu_modules(MobileNetV2(num_classes=3), x, "guided_backprop")
    inception = InceptionV3(num_classes=3, input_size=75, aux_logits=False, init="kaiming")  # torchvision's F.relu
    with pytest.raises(UserError, match=r"InceptionV3 applies relu in Conv2d_1a_3x3 \(BasicConv2d\)"):
        require_relu_modules(inception, _images(1, (3, 75, 75)), "guided_gradcam")


@pytest.mark.parametrize("name", ["guided_backprop", "deconvnet", "guided_gradcam", "deconvnet_patches"])
def test_each_analysis_runs_from_its_config_and_writes_its_picture(tmp_path, name):
    from hydra.utils import get_method

    from experiments.analysis.analyze import compose_settings
    from experiments.training import schema

    torch.manual_seed(0)
    settings = compose_settings([f"analysis=[{name}]", f"analysis.{name}.num_images=6"])
    schema.check(OmegaConf.masked_copy(settings, ["analysis"]))
    params = OmegaConf.to_container(settings.analysis[name], resolve=True)
    params["split"] = "test"
    if name == "deconvnet_patches":
        params.update(num_channels=2, top_k=4, num_layers=2)
    target = params.pop("_target_")
    model = SmallCNN(in_channels=1)
    ctx = AnalysisContext(trained=FakeRun(model, _images(6, (1, 12, 12)), torch.tensor([0, 1, 2, 0, 1, 2])),
                          name=name, out_dir=tmp_path / "analysis")
    figures = get_method(target)(ctx, **params)
    json.dumps(figures)
    assert ctx.files and all((tmp_path / f).stat().st_size > 1000 for f in ctx.files)
    if name == "deconvnet_patches":
        assert [layer["layer"] for layer in figures["layers"]] == ["relu1", "relu2"]
        assert all(len(c["top"]) == 4 for layer in figures["layers"] for c in layer["channels"])
    else:
        assert figures["relu_module_calls"] == 2 and len(figures["images"]) == 6
        assert figures.get("layer") == ("relu2" if name == "guided_gradcam" else None)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


def test_bad_settings_are_refused_before_running():
    from experiments.analysis.analyze import compose_settings
    from experiments.training import schema

    for override in ["analysis.deconvnet_patches.top_k=0", "analysis.guided_backprop.num_images=0"]:
        settings = compose_settings(["analysis=[guided_backprop,deconvnet_patches]", override])
        with pytest.raises(UserError):
            schema.check(OmegaConf.masked_copy(settings, ["analysis"]))
    with pytest.raises(UserError, match="layer"):  # the layer is a Guided Grad-CAM setting only
        compose_settings(["analysis=[guided_backprop]", "analysis.guided_backprop.layer=relu2"])
