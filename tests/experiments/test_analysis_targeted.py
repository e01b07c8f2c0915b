"""Targeted attacks and fooling images: the closed-form minimal perturbation of a linear classifier, the
target rules, fooling images that reach 99% on a small trained network, and both analyses end to end
through ``python -m experiments.analyze`` on a real trained run."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from tests.conftest import TINY, assert_refused, refused_in_process, run_cli, tree_hashes
from torch import nn

from experiments.analysis.adversarial import Normalised
from experiments.analysis.common import analysis_mode
from experiments.analysis.fooling import fooling_images
from experiments.analysis.targeted import choose_targets, smallest_targeted, targeted_pgd

SIDE = 8  # 8x8 one-channel images: 64 pixels


def _linear_model(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 3-class linear classifier on [0, 1] pixels whose third class can never win (bias -1e3)."""
    generator = torch.Generator().manual_seed(seed)
    linear = nn.Linear(SIDE * SIDE, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(3, SIDE * SIDE, generator=generator))
        linear.bias.copy_(torch.tensor([0.0, 0.0, -1e3]))
    model = nn.Sequential(nn.Flatten(), linear).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, linear.weight.detach(), linear.bias.detach()


def _mid_grey_images(count: int, seed: int = 1) -> torch.Tensor:
    """Images in [0.35, 0.65]: far enough from 0 and 1 that the box never binds on a small perturbation."""
    return 0.35 + 0.3 * torch.rand(count, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_a_linear_classifier_gives_the_closed_form_smallest_targeted_perturbation(norm):
    """Moving x from class i to j: margin m = (b_i - b_j) + (w_i - w_j) x must be undone. The L2-smallest
    step is m / ||w_i - w_j||_2 along w_j - w_i; the L-inf-smallest is m / ||w_i - w_j||_1 along
    sign(w_j - w_i) (Goodfellow et al.'s linear explanation)."""
    model, weight, bias = _linear_model()
    images = _mid_grey_images(6)
    with torch.no_grad():
        current = model(images).argmax(dim=1)
    assert set(current.tolist()) <= {0, 1}
    targets = 1 - current
    tolerance = 1e-3
    found = smallest_targeted(model, images, targets, norm=norm, max_epsilon=2.0, tolerance=tolerance, steps=20)
    for image, i, j, result in zip(images, current.tolist(), targets.tolist(), found):
        difference = weight[i] - weight[j]
        margin = float(bias[i] - bias[j] + difference @ image.flatten())
        assert margin > 0
        dual = difference.norm(p=2) if norm == "l2" else difference.norm(p=1)
        expected = margin / float(dual)
        direction = -difference / difference.norm() if norm == "l2" else torch.sign(-difference)
        assert float((expected * direction).abs().max()) < 0.35  # inside the box: the closed form applies
        assert result.epsilon is not None
        # the search's grid (steps of `tolerance`) lands on the first grid point at or past the minimum
        assert expected - 1e-6 <= result.epsilon <= expected + tolerance + 1e-6
        delta = (result.adversarial - image).flatten()
        cosine = float(delta @ direction / (delta.norm() * direction.norm()))
        assert cosine > 0.999
        with torch.no_grad():
            assert int(model(result.adversarial.unsqueeze(0)).argmax()) == j
        linf, l2 = result.norms(image)
        assert (l2 if norm == "l2" else linf) <= result.epsilon + 1e-6


def test_an_unreachable_target_is_reported_as_not_found():
    model, _, _ = _linear_model()
    images = _mid_grey_images(2)
    found = smallest_targeted(model, images, torch.tensor([2, 2]), norm="linf", max_epsilon=0.05, tolerance=0.01)
    assert [f.epsilon for f in found] == [None, None] and all(f.adversarial is None for f in found)


def test_target_rules():
    probabilities = torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4], [0.25, 0.05, 0.5, 0.2]])
    labels = torch.tensor([0, 2, 3])
    assert choose_targets(probabilities, labels, "least_likely").tolist() == [3, 0, 1]
    # the most probable class other than the label (image 1 is misclassified: its top class is wrong already)
    assert choose_targets(probabilities, labels, "runner_up").tolist() == [1, 3, 2]
    assert choose_targets(probabilities, labels, "next").tolist() == [1, 3, 0]
    assert choose_targets(probabilities, labels, 2).tolist() == [2, 2, 2]


def test_the_l2_attack_stays_in_its_ball_and_in_the_pixel_range():
    model, _, _ = _linear_model()
    images = torch.rand(4, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(3))  # near 0 and 1 too
    adversarial = targeted_pgd(model, images, torch.tensor([0, 1, 0, 1]), 1.5, norm="l2", steps=10)
    assert float(adversarial.min()) >= 0 and float(adversarial.max()) <= 1
    assert float((adversarial - images).flatten(1).norm(dim=1).max()) <= 1.5 + 1e-5


# --- on a real trained network ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def relu_run(tmp_path_factory) -> Path:
    """LeNet-5 with ReLUs (unbounded scores, as in the networks Nguyen et al. fooled), trained with Adam
    until it is sure of the synthetic classes (12 short epochs: a barely trained net has scores too flat
    for any image in [0, 1] to reach 99%)."""
    workdir = tmp_path_factory.mktemp("lenet_relu")
    run_cli("experiments.train", *TINY, "data.signal=0.5", "data.batch_size=32", "model.activation=relu",
            "optimizer=adam", "optimizer.lr=0.003", "trainer.max_epochs=12", cwd=workdir, check=True)
    return next(p.parent for p in (workdir / "outputs").glob("train/*/*/config.yaml"))


def _pixel_model(run: Path) -> tuple[nn.Module, object]:
    from experiments.evaluation.trained import load_trained

    trained = load_trained(run)
    mean = torch.tensor(list(trained.cfg.data.mean)).view(1, -1, 1, 1)
    std = torch.tensor(list(trained.cfg.data.std)).view(1, -1, 1, 1)
    return Normalised(trained.model, mean, std), trained


def test_fooling_images_reach_99_percent_from_noise_on_a_trained_network(relu_run):
    model, trained = _pixel_model(relu_run)
    with analysis_mode(trained.model):
        # seed 1: seed 0's uniform noise is exactly the synthetic dataset's class templates (its own seed 0)
        images, probabilities = fooling_images(model, (1, 32, 32), list(range(10)), steps=200, lr=0.01, seed=1)
    assert float(images.min()) >= 0 and float(images.max()) <= 1  # valid pictures
    reached = probabilities[torch.arange(10), torch.arange(10)]
    assert bool((reached >= 0.99).all()), reached
    # ... from noise: the same seeded uniform noise gave the wanted class almost nothing to start with
    # (this network calls every noise image one class or another, as Nguyen et al.'s did)
    start = torch.rand(10, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with analysis_mode(trained.model), torch.no_grad():
        before = model(start).softmax(dim=1)[torch.arange(10), torch.arange(10)]
    assert bool((before < 0.99).all()) and float(before.mean()) < 0.5, before


def test_targeted_examples_on_a_trained_network_reach_their_target_within_their_radius(relu_run):
    model, trained = _pixel_model(relu_run)
    _, display, labels = trained.test_images(limit=6)
    with analysis_mode(trained.model):
        with torch.no_grad():
            probabilities = model(display).softmax(dim=1)
        targets = choose_targets(probabilities, labels, "least_likely")
        for norm, ceiling in (("linf", 1.0), ("l2", 32.0)):  # the whole [0, 1] cube of 32x32 pixels
            found = smallest_targeted(model, display, targets, norm=norm, max_epsilon=ceiling, tolerance=0.005,
                                      steps=10)
            assert all(f.epsilon is not None for f in found), norm
            adversarial = torch.stack([f.adversarial for f in found])
            with torch.no_grad():
                assert model(adversarial).argmax(dim=1).tolist() == targets.tolist()
            size = (adversarial - display).flatten(1)
            size = size.abs().max(dim=1).values if norm == "linf" else size.norm(dim=1)
            assert bool((size <= torch.tensor([f.epsilon for f in found]) + 1e-5).all())
            assert float(adversarial.min()) >= 0 and float(adversarial.max()) <= 1


def test_both_analyses_through_the_command_line(relu_run):
    result = run_cli("experiments.analyze", f"run={relu_run}", "analysis=[targeted_attack,fooling_images]",
                     "analysis.targeted_attack.num_images=8", "analysis.targeted_attack.target=next",
                     "analysis.targeted_attack.steps=10", "analysis.targeted_attack.tolerance=0.005",
                     "analysis.fooling_images.classes=[0,3]", "analysis.fooling_images.seed=1", cwd=relu_run,
                     check=True)
    assert "targeted_attack:" in result.stdout and "fooling_images:" in result.stdout
    folder = relu_run / "analysis"
    targeted = json.loads((folder / "targeted_attack.json").read_text())["figures"]
    records = targeted["per_image"]
    assert targeted["images"] == 8 and targeted["attacked"] == len(records) >= 1
    assert targeted["attacked"] + targeted["skipped_misclassified"] + targeted["skipped_target_is_label"] == 8
    for record in records:
        assert int(record["target"]) == (int(record["label"]) + 1) % 10  # the 'next' rule; names are digits here
        if record["success"]:
            assert record["top_class_after"] == record["target"]
            assert record["linf"] <= record["epsilon"] + 1e-6
    wins = sorted(r["linf"] for r in records if r["success"])
    assert targeted["success_rate"] == pytest.approx(100 * len(wins) / len(records), abs=1e-3)
    assert targeted["median_smallest_linf"] == pytest.approx(statistics.median(wins), abs=1e-5)
    fooling = json.loads((folder / "fooling_images.json").read_text())["figures"]
    assert [c["class"] for c in fooling["classes"]] == ["0", "3"] and fooling["fooled"] == 2
    for name in ("targeted_attack/targeted_examples.png", "fooling_images/fooling_images.png"):
        assert (folder / name).stat().st_size > 1000


@pytest.mark.parametrize(("args", "words"), [
    (["analysis.targeted_attack.target=10"], ["analysis.targeted_attack.target=10", "class index"]),
    (["analysis.targeted_attack.target=most_likely"], ["analysis.targeted_attack.target", "least_likely"]),
    (["analysis.targeted_attack.norm=l1"], ["analysis.targeted_attack.norm", "linf"]),
    (["analysis.targeted_attack.tolerance=0"], ["analysis.targeted_attack.tolerance", "> 0"]),
    (["analysis.targeted_attack.max_epsilon=2"], ["analysis.targeted_attack.max_epsilon=2.0", "norm=l2"]),
])
def test_bad_targeted_settings_are_one_paragraph_and_write_nothing(relu_run, args, words, capsys):
    from experiments.analysis.analyze import main

    before = tree_hashes(relu_run)
    refused_in_process(main, [f"run={relu_run}", "analysis=[targeted_attack]", *args], capsys, words)
    assert tree_hashes(relu_run) == before


def test_bad_fooling_classes_through_the_command_line(relu_run):
    before = tree_hashes(relu_run)
    result = run_cli("experiments.analyze", f"run={relu_run}", "analysis=[fooling_images]",
                     "analysis.fooling_images.classes=[12]", cwd=relu_run)
    assert_refused(result, ["analysis.fooling_images.classes", "12"])
    assert tree_hashes(relu_run) == before
