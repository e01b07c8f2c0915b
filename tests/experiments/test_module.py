"""The LightningModule: losses with auxiliary heads and label smoothing, errors in percent."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from experiments.training.module import ClassificationModule

SGD = OmegaConf.create({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1})


class WithAux(nn.Module):
    """Returns (main, aux1, aux2) in training, main only in eval, as GoogLeNet does."""

    def __init__(self) -> None:
        super().__init__()
        self.main, self.aux1, self.aux2 = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(4, 3)

    def forward(self, x):
        if self.training:
            return self.main(x), self.aux1(x), self.aux2(x)
        return self.main(x)


def test_auxiliary_losses_are_weighted_and_training_only():
    model = WithAux()
    module = ClassificationModule(model, num_classes=3, optimizer=SGD, aux_loss_weights=[0.3, 0.3])
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    loss, logits = module.loss(model(x), y)
    expected = F.cross_entropy(model.main(x), y) + 0.3 * (F.cross_entropy(model.aux1(x), y)
                                                          + F.cross_entropy(model.aux2(x), y))
    assert loss.item() == pytest.approx(expected.item())
    assert torch.equal(logits, model.main(x))
    module.eval()
    assert torch.equal(module(x), model.main(x))


def test_label_smoothing_is_applied():
    model = nn.Linear(4, 3)
    module = ClassificationModule(model, num_classes=3, optimizer=SGD, label_smoothing=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    loss, _ = module.loss(model(x), y)
    assert loss.item() == pytest.approx(F.cross_entropy(model(x), y, label_smoothing=0.1).item())


class Fixed(nn.Module):
    """Predicts class 0 for every input: error is exactly the share of non-zero labels."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([10.0, 0.0, 0.0, 0.0, 0.0, 0.0]))

    def forward(self, x):
        return self.bias.expand(len(x), -1)


def test_test_error_is_in_percent_with_top5():
    labels = torch.tensor([0, 0, 0, 1, 2, 3, 4, 5])  # 3 of 8 right at top-1
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(8, 1), labels), batch_size=3)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    (metrics,) = trainer.test(ClassificationModule(Fixed(), num_classes=6, optimizer=SGD), loader, verbose=False)
    assert metrics["test/err"] == pytest.approx(62.5)
    assert metrics["test/acc"] == pytest.approx(37.5)
    # top-5: class 5 is ranked last (6th) among equal scores -> only labels hit by top-5 count
    assert 0 <= metrics["test/err5"] < metrics["test/err"]
