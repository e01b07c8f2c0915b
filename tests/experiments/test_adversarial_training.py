"""Adversarial training (issue 18 #3): module.adversarial=fgsm|pgd, attacks on normalised batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tests.conftest import TINY, run_cli, run_folders
from torch import nn

from experiments.core.errors import UserError
from experiments.training import schema
from experiments.training.adversarial import InputBounds, attack
from experiments.training.module import ClassificationModule

SGD = OmegaConf.create({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1})
MEAN, STD = [0.3, 0.6], [0.2, 0.4]


class Linear(nn.Module):
    """A hand-built linear classifier on 2x2x2 images: its input gradient is known in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.arange(24, dtype=torch.float32).view(3, 8).sin())
            self.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))

    def forward(self, x):
        return self.fc(x.flatten(1))


class WithBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.bn(x).flatten(1))


def _batch(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 2, 2, 2, generator=g)
    pixels[0, 0, 0, 0], pixels[1, 1, 1, 1] = 0.0, 1.0  # at the range's edges: clipping shows
    mean, std = torch.tensor(MEAN).view(1, -1, 1, 1), torch.tensor(STD).view(1, -1, 1, 1)
    return (pixels - mean) / std, torch.randint(0, 3, (n,), generator=g), mean, std


def _module(model, **kwargs):
    return ClassificationModule(model, num_classes=3, optimizer=SGD, data_mean=MEAN, data_std=STD, **kwargs)


def test_fgsm_moves_every_pixel_by_epsilon_over_std_along_the_gradient_sign_then_clips():
    model = Linear()
    x, y, mean, std = _batch()
    eps = 0.1
    # closed form: d CE / d x = (softmax - onehot) @ W, per image
    probs = F.softmax(model(x), dim=1)
    grad = ((probs - F.one_hot(y, 3).float()) @ model.fc.weight).view_as(x)
    assert (grad != 0).all()
    expected = torch.clamp(x + eps / std * grad.sign(), (0 - mean) / std, (1 - mean) / std)
    adv = attack(model, x, y, "fgsm", eps, InputBounds(MEAN, STD))
    torch.testing.assert_close(adv, expected)
    # in pixel units: every pixel moved by exactly epsilon, except where the [0, 1] range clipped it
    moved = ((adv - x) * std).abs()
    pixels_adv = adv * std + mean
    clipped = (pixels_adv <= 1e-6) | (pixels_adv >= 1 - 1e-6)
    torch.testing.assert_close(moved[~clipped], torch.full_like(moved[~clipped], eps))
    assert clipped.any() and (pixels_adv >= -1e-6).all() and (pixels_adv <= 1 + 1e-6).all()


def test_the_training_batch_is_the_attacked_one():
    """The adversarial term of the training loss is the loss on exactly that FGSM batch."""
    torch.manual_seed(0)
    model = Linear()
    module = _module(model, adversarial="fgsm", adversarial_epsilon=0.1, adversarial_weight=1.0)
    x, y, _, _ = _batch()
    loss, _ = module._adversarial_loss(x, y)
    adv = attack(model, x, y, "fgsm", 0.1, InputBounds(MEAN, STD))
    torch.testing.assert_close(loss, F.cross_entropy(model(adv), y))
    mixed = _module(model, adversarial="fgsm", adversarial_epsilon=0.1, adversarial_weight=0.3)
    loss, logits = mixed._adversarial_loss(x, y)
    torch.testing.assert_close(loss, 0.7 * F.cross_entropy(model(x), y) + 0.3 * F.cross_entropy(model(adv), y))
    torch.testing.assert_close(logits, model(x))  # train/err counts the clean predictions


def test_pgd_stays_in_the_ball_and_the_valid_range_and_is_stronger_than_the_start():
    model = Linear()
    x, y, mean, std = _batch(64, seed=1)
    eps = 0.05
    torch.manual_seed(3)
    adv = attack(model, x, y, "pgd", eps, InputBounds(MEAN, STD), steps=7)
    dist = ((adv - x) * std).abs()
    assert dist.max() <= eps + 1e-6
    pixels = adv * std + mean
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)
    assert dist.mean() > 0.5 * eps  # pushed out towards the ball's corners, not left near the image
    torch.manual_seed(3)
    torch.testing.assert_close(attack(model, x, y, "pgd", eps, InputBounds(MEAN, STD), steps=7), adv)  # seeded


def test_a_pgd_training_step_trains_on_the_seeded_pgd_batch():
    model = Linear()
    x, y, _, _ = _batch()
    module = _module(model, adversarial="pgd", adversarial_epsilon=0.05, adversarial_steps=4, adversarial_weight=1.0)
    torch.manual_seed(5)
    loss, logits = module._adversarial_loss(x, y)
    torch.manual_seed(5)
    adv = attack(model, x, y, "pgd", 0.05, InputBounds(MEAN, STD), steps=4)
    torch.testing.assert_close(loss, F.cross_entropy(model(adv), y))
    torch.testing.assert_close(logits, model(adv))  # Madry's w = 1: no clean pass, train/err is adversarial


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_the_attack_leaves_bn_running_stats_and_weight_grads_untouched(method):
    torch.manual_seed(0)
    model = WithBN().train()
    x, y, _, _ = _batch(16)
    model.bn.running_mean.fill_(0.25)
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    adv = attack(model, x, y, method, 0.1, InputBounds(MEAN, STD), steps=3)
    assert not torch.equal(adv, x)
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    assert model.training and not adv.requires_grad


def _one_step(module, x, y):
    import pytorch_lightning as pl

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=len(y))
    trainer = pl.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].detach().clone())

    trainer.callbacks.append(Record())
    trainer.fit(module, loader)
    return losses[0], {k: v.clone() for k, v in module.model.state_dict().items()}


def test_adversarial_null_is_the_plain_training_step_bit_for_bit():
    x, y, _, _ = _batch(16)
    results = []
    for kwargs in ({}, {"adversarial": None, "adversarial_epsilon": 0.2, "adversarial_weight": 1.0}):
        torch.manual_seed(0)
        model = WithBN()
        module = ClassificationModule(model, num_classes=3, optimizer=SGD, **kwargs)
        results.append(_one_step(module, x, y))
    (loss_a, state_a), (loss_b, state_b) = results
    torch.manual_seed(0)
    plain = WithBN().train()
    assert torch.equal(loss_a, F.cross_entropy(plain(x), y))  # the plain step's loss, one forward pass
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    # and an FGSM step differs (it trains on other images)
    torch.manual_seed(0)
    loss_c, _ = _one_step(_module(WithBN(), adversarial="fgsm", adversarial_epsilon=0.2), x, y)
    assert not torch.equal(loss_a, loss_c)


def test_the_keys_are_declared_with_their_ranges(compose):
    cfg = compose([])
    assert cfg.module.adversarial is None and cfg.module.adversarial_weight == 0.5
    schema.check(compose(["module.adversarial=pgd", "module.adversarial_epsilon=0.03", "module.adversarial_steps=10"]))
    for bad in ("module.adversarial=bim", "module.adversarial_epsilon=2", "module.adversarial_steps=0",
                "module.adversarial_weight=1.5"):
        with pytest.raises(UserError):
            schema.check(compose([bad]))


def test_fgsm_training_runs_from_the_cli(tmp_path):
    run_cli("experiments.train", *TINY, "trainer.max_epochs=1", "module.adversarial=fgsm",
            "module.adversarial_epsilon=0.1", cwd=tmp_path, check=True)
    (run,) = run_folders(tmp_path / "outputs")
    assert (run / "checkpoints" / "last.ckpt").exists()
    config = OmegaConf.load(run / "config.yaml")
    assert config.module.adversarial == "fgsm" and config.module.adversarial_epsilon == 0.1
