"""The analyses' computations on hand-built models whose right answer is known in advance."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from experiments.analysis.adversarial import Normalised, accuracy_curve, perturb
from experiments.analysis.cam import class_activation_maps
from experiments.analysis.class_model import class_model
from experiments.analysis.common import analysis_mode, feature_layer, head_layer
from experiments.analysis.loss_landscape import filter_normalised_direction, surface
from experiments.analysis.max_activating import receptive_field
from experiments.analysis.occlusion import occlusion_maps
from experiments.analysis.saliency import saliency_maps
from experiments.analysis.tsne import neighbour_accuracy

REGION = (slice(8, 16), slice(20, 28))  # rows, columns the region model looks at


class RegionModel(nn.Module):
    """Logits from one 8x8 window of the image only: everything else cannot matter."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(8 * 8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[:, 0, REGION[0], REGION[1]].flatten(1))


class GapNet(nn.Module):
    """conv -> BN -> ReLU -> global average pooling -> linear: the network CAM was made for."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


def _images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_saliency_of_a_region_model_lies_in_its_region():
    torch.manual_seed(0)
    model = RegionModel()
    maps = saliency_maps(model, _images(), torch.tensor([0, 1, 2, 0]))
    assert maps.shape == (4, 32, 32)
    inside = maps[:, REGION[0], REGION[1]].sum()
    assert inside > 0 and inside == pytest.approx(float(maps.sum()))  # nothing outside the window
    smooth = saliency_maps(model, _images(), torch.tensor([0, 1, 2, 0]), smoothgrad_samples=4)
    assert smooth[:, REGION[0], REGION[1]].sum() == pytest.approx(float(smooth.sum()))


def test_occlusion_map_is_lowest_on_the_informative_patch():
    class PatchDetector(nn.Module):  # class 0 when the patch is bright, else class 1
        def forward(self, x):
            score = 20 * (x[:, 0, REGION[0], REGION[1]].mean(dim=(1, 2)) - 0.5)
            return torch.stack([score, -score], dim=1)

    images = torch.zeros(2, 1, 32, 32)
    images[:, 0, REGION[0], REGION[1]] = 1.0
    maps = occlusion_maps(PatchDetector(), images, torch.tensor([0, 0]), window=8, stride=4, fill=torch.tensor([0.0]))
    for m in maps:
        row, col = divmod(int(m.flatten().argmin()), 32)
        assert REGION[0].start <= row < REGION[0].stop and REGION[1].start <= col < REGION[1].stop
        assert m[0, 0] == pytest.approx(float(torch.sigmoid(torch.tensor(20.0 * 2 * 0.5))), abs=1e-4)  # untouched
        assert float(m.min()) < 0.5 < float(m.max())


def test_gradcam_equals_cam_on_a_global_pooling_network():
    torch.manual_seed(0)
    model = GapNet()
    model.eval()
    images, targets = _images(3), torch.tensor([0, 1, 3])
    cam = class_activation_maps(model, images, targets, "cam", "relu", "fc")
    gradcam = class_activation_maps(model, images, targets, "gradcam", "relu")
    plusplus = class_activation_maps(model, images, targets, "gradcampp", "relu")
    assert cam.shape == gradcam.shape == plusplus.shape == (3, 32, 32)
    # With GAP, Grad-CAM's channel weights are the fc weights / (H W): the same map up to scale, except
    # that Grad-CAM keeps only its positive part (ReLU) before torchcam scales each map to [0, 1].
    for c, g in zip(cam, gradcam):
        positive = g > 1e-6
        assert positive.any() and int(c.flatten().argmax()) == int(g.flatten().argmax())
        assert np.corrcoef(c[positive].numpy(), g[positive].numpy())[0, 1] > 0.999
    assert float(plusplus.min()) >= 0 and float(plusplus.max()) <= 1


def test_gradient_methods_restore_train_mode_and_leave_weights_untouched():
    torch.manual_seed(0)
    model = GapNet()
    model.train()
    model.fc.weight.requires_grad_(True)
    model.conv.bias.requires_grad_(False)  # a frozen parameter stays frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, targets = _images(3), torch.tensor([0, 1, 2])
    saliency_maps(model, images, targets)
    class_activation_maps(model, images, targets, "gradcam", "relu")
    occlusion_maps(model, images, targets, 8, 8, torch.tensor([0.0]))
    class_model(model, (1, 32, 32), 1, steps=3)
    assert model.training and all(m.training for m in model.modules())
    assert model.fc.weight.requires_grad and not model.conv.bias.requires_grad
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():  # BN statistics included
        assert torch.equal(value, before[key]), key
    with analysis_mode(model):
        assert not model.training
    assert model.training


def test_fgsm_at_zero_keeps_accuracy_and_accuracy_falls_with_epsilon():
    torch.manual_seed(0)
    pixels = torch.rand(200, 1, 8, 8)
    labels = (pixels.mean(dim=(1, 2, 3)) <= 0.5).long()  # bright images are class 0
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        linear[1].weight.copy_(torch.stack([torch.full((64,), 1.0), torch.full((64,), -1.0)]))
        linear[1].bias.copy_(torch.tensor([-32.0, 32.0]))
    model = Normalised(linear, torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    with torch.no_grad():
        clean = 100.0 * float((model(pixels).argmax(1) == labels).float().mean())
    curve = accuracy_curve(model, pixels, labels, [0.0, 0.01, 0.05, 0.2])
    assert curve[0] == pytest.approx(clean) and clean > 95
    assert all(a >= b for a, b in itertools.pairwise(curve)) and curve[-1] < 5
    pgd = accuracy_curve(model, pixels, labels, [0.0, 0.05], steps=5)
    assert pgd[0] == pytest.approx(clean) and pgd[1] <= curve[2] + 1e-9


def _sure_linear_model(scale: float) -> nn.Module:
    """Two logits w.x and -w.x with every weight ``scale``: a model sure of class 0 on bright images,
    whose loss gradient is tiny (softmax saturated) but non-zero at every pixel, of known sign."""
    linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 2, bias=False))
    with torch.no_grad():
        linear[1].weight.copy_(torch.stack([torch.full((64,), scale), torch.full((64,), -scale)]))
    return Normalised(linear, torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))


def test_fgsm_moves_every_pixel_by_epsilon_even_where_the_gradient_is_tiny():
    # Goodfellow et al.: x + eps * sign(grad). At logit margin 2 * 64 * 0.5 * 0.35 = 22.4 the softmax
    # is saturated: the gradient per pixel is about 0.35 * exp(-22.4) ~ 7e-11, far below captum's 1e-6
    # threshold, yet non-zero, so every pixel must move, away from class 0 (darker).
    model = _sure_linear_model(0.35)
    pixels = torch.full((3, 1, 8, 8), 0.5)
    labels = torch.zeros(3, dtype=torch.long)
    pixels.requires_grad_(True)
    loss = nn.functional.cross_entropy(model(pixels), labels, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, pixels)
    assert bool((gradient != 0).all()) and float(gradient.abs().max()) < 1e-6
    adversarial = perturb(model, pixels.detach(), labels, epsilon=0.1)
    assert torch.allclose(adversarial, torch.full_like(adversarial, 0.4))  # 0.5 - 0.1 at EVERY pixel


def test_pgd_starts_at_a_random_point_of_the_ball_and_stays_in_it():
    # A constant model has no gradient: FGSM steps do nothing, so PGD's answer is its random start.
    constant = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        constant[1].weight.zero_()
    model = Normalised(constant, torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    pixels, labels = torch.full((4, 1, 8, 8), 0.5), torch.zeros(4, dtype=torch.long)
    state = torch.random.get_rng_state()
    one = perturb(model, pixels, labels, epsilon=0.1, steps=3, seed=1)
    again = perturb(model, pixels, labels, epsilon=0.1, steps=3, seed=1)
    other = perturb(model, pixels, labels, epsilon=0.1, steps=3, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is untouched
    assert torch.equal(one, again) and not torch.equal(one, other)
    moved = (one - pixels).abs()
    assert float(moved.max()) <= 0.1 + 1e-6 and float(moved.mean()) > 0.02  # uniform in [-0.1, 0.1]: mean 0.05
    assert torch.equal(perturb(model, pixels, labels, epsilon=0.1), pixels)  # FGSM: sign(0) = 0 moves nothing


def test_receptive_field_of_a_known_stack():
    # conv3 -> maxpool2 -> conv3: receptive field 3 + 1 + 2 * 2 = 8 pixels.
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    top, left, bottom, right = receptive_field(model, "3", (1, 32, 32), channel=1, position=2 * 13 + 3)
    assert (bottom - top + 1, right - left + 1) == (8, 8)
    assert (top, left) == (2 * 2, 3 * 2)  # output (2, 3) of the second conv starts at pixel 2 x stride 2


def test_loss_landscape_directions_are_filter_normalised_and_the_model_is_untouched():
    torch.manual_seed(0)
    model = GapNet()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    direction = filter_normalised_direction(model, torch.Generator().manual_seed(1))
    weight = model.conv.weight.detach()
    assert torch.allclose(direction["conv.weight"].flatten(1).norm(dim=1), weight.flatten(1).norm(dim=1))
    assert not direction["conv.bias"].any() and not direction["bn.weight"].any()
    images, labels = _images(16), torch.randint(0, 4, (16,))
    line = np.linspace(-1, 1, 5)
    losses, errors = surface(model, images, labels, [direction], [line])
    with torch.no_grad():
        at_origin = float(nn.functional.cross_entropy(model(images), labels))
    assert losses[2] == pytest.approx(at_origin, rel=1e-5)
    assert losses.shape == errors.shape == (5,)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_class_model_raises_the_class_score():
    torch.manual_seed(0)
    model = GapNet()
    image, curve = class_model(model, (1, 32, 32), target=2, steps=30, lr=0.1)
    assert image.shape == (1, 32, 32) and curve[-1] > curve[0]
    with torch.no_grad():
        model.eval()
        assert model(image.unsqueeze(0))[0, 2] > model(torch.zeros(1, 1, 32, 32))[0, 2]


def test_neighbour_accuracy_separates_clusters():
    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(0, 0.1, (30, 2)), rng.normal(5, 0.1, (30, 2))])
    labels = np.repeat([0, 1], 30)
    assert neighbour_accuracy(points, labels) == 100.0
    assert neighbour_accuracy(points, rng.permutation(labels)) < 80


def test_default_layers_of_a_gap_network():
    model = GapNet()
    x = _images(1)
    assert feature_layer(model, x) == "relu"
    assert head_layer(model, x)[0] == "fc"


def test_landscapes_of_two_runs_are_overlaid(tmp_path, capsys):
    from experiments.analysis.compare_landscapes import main

    for name, sharpness in (("plain", 2.0), ("resnet", 0.5)):
        folder = tmp_path / name / "analysis"
        folder.mkdir(parents=True)
        figures = {"alphas": [-1, 0, 1], "loss_1d": [1 + sharpness, 1.0, 1 + sharpness], "split": "train",
                   "loss_at_minimum": 1.0, "sharpness_half_span": sharpness}
        (folder / "loss_landscape.json").write_text(json.dumps({"figures": figures}))
    table = main([str(tmp_path / "plain"), str(tmp_path / "resnet"), "--out", str(tmp_path / "out")])
    assert [r["sharpness_half_span"] for r in table["runs"]] == [2.0, 0.5]
    assert (tmp_path / "out" / "landscapes.png").stat().st_size > 1000
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "nothing-here")])
    assert stop.value.code == 2 and "loss_landscape" in capsys.readouterr().err


def test_feature_inversion_inverts_rectified_representations_not_raw_convs():
    # Mahendran & Vedaldi invert ReLU outputs; in a ResNet that is a whole block (shortcut included),
    # not the raw output of a conv inside its residual branch.
    from experiments.analysis.feature_inversion import default_layers
    from models.resnet import ResNet

    resnet = ResNet(depth=8, form="cifar", num_classes=3, input_size=16, in_channels=1).eval()
    assert default_layers(resnet, torch.rand(1, 1, 16, 16)) == ["layer1", "layer2", "layer3"]
