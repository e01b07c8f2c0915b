"""FilterImages, ErrorCurves, LayerResponseStd, ConfusionMatrix and Predictions: files and numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from callbacks.confusion_matrix import ConfusionMatrix
from callbacks.error_curves import ErrorCurves
from callbacks.filter_images import FilterImages
from callbacks.layer_response import LayerResponseStd
from callbacks.predictions import Predictions
from models.resnet import ResNet

from .conftest import SmallConvNet, column, csv_logger, module_for, read_metrics, tiny_data, trainer_for


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_filters_rgb_first_layer_and_grayscale_deep_layer(tmp_path: Path):
    callback = FilterImages(every_n_epochs=1, deep_layer="second")
    trainer = trainer_for(tmp_path, [callback], max_epochs=2, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(module_for(SmallConvNet(width=8)), datamodule=tiny_data())
    files = sorted(p.name for p in (tmp_path / "plots/filters").iterdir())
    assert files == [f"features.{i}_epoch{e:03d}.png" for i in (0, 3) for e in range(3)]
    first = pixels(tmp_path / "plots/filters/features.0_epoch002.png")
    # 8 filters of 3x3 in colour: a 3x3 grid of 24-px tiles, channels differ (colour, not gray).
    assert first.shape == (3 * 25 + 1, 3 * 25 + 1, 3)
    assert np.abs(first[..., 0] - first[..., 1]).max() > 0
    tile = first[1:25, 1:25]
    assert tile.min() == 0 and tile.max() == 255  # each filter stretched over the full range
    deep = pixels(tmp_path / "plots/filters/features.3_epoch002.png")
    assert deep.shape == (8 * 25 + 1, 8 * 25 + 1, 3)  # 8 filters (rows) x 8 input channels (columns)
    assert (deep[..., 0] == deep[..., 1]).all()  # grayscale


def test_error_curves_follow_the_logged_errors(tmp_path: Path):
    curves = ErrorCurves(every_n_epochs=1)
    trainer = trainer_for(tmp_path, [curves], loggers=[csv_logger(tmp_path)], max_epochs=3, limit_train_batches=3,
                          limit_val_batches=1)
    module = module_for(SmallConvNet())
    datamodule = tiny_data()
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)
    rows = read_metrics(tmp_path)
    assert [curves.history["train/err"][e] for e in range(3)] == pytest.approx(column(rows, "train/err"))
    assert [curves.history["val/err"][e] for e in range(3)] == pytest.approx(column(rows, "val/err"))
    assert list(curves.history["test/err"].values()) == pytest.approx(column(rows, "test/err"))
    assert (tmp_path / "plots/error_curves.png").stat().st_size > 10_000


def test_layer_response_std_matches_a_manual_measurement(tmp_path: Path):
    torch.manual_seed(0)
    model = ResNet(in_channels=3, num_classes=4, form="cifar", depth=8, shortcut="A")
    callback = LayerResponseStd(every_n_epochs=1, probe_size=32)
    trainer = trainer_for(tmp_path, [callback], loggers=[csv_logger(tmp_path)], max_epochs=1,
                          limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module_for(model), datamodule=tiny_data())
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [c for c, _ in callback.pairs] == convs and len(convs) == 7  # stem + 3 blocks x 2
    # Each response is the BN right after its conv (before ReLU and before the residual add).
    assert all(r == c.replace("conv", "bn") for c, r in callback.pairs)
    responses = {}
    handles = [model.get_submodule(r).register_forward_hook(
        lambda m, i, o, _c=c: responses.__setitem__(_c, float(o.std()))) for c, r in callback.pairs]
    model.eval()
    with torch.no_grad():
        model(callback._probe)
    for handle in handles:
        handle.remove()
    assert callback.latest == pytest.approx(responses, rel=1e-5)
    record = json.loads((tmp_path / "diagnostics/layer_response_std.json").read_text())
    assert record["layers"] == convs and record["std"] == pytest.approx([responses[c] for c in convs], rel=1e-5)
    assert column(read_metrics(tmp_path), "layer_response_std/layer1.0.conv2") == pytest.approx(
        [responses["layer1.0.conv2"]], rel=1e-5)
    assert (tmp_path / "plots/layer_response_std.png").is_file()


def test_per_class_errors_and_misclassified_grid(tmp_path: Path):
    confusion = ConfusionMatrix(every_n_epochs=1)
    predictions = Predictions(every_n_epochs=1, max_images=8, columns=4)
    trainer = trainer_for(tmp_path, [confusion, predictions], loggers=[csv_logger(tmp_path)], max_epochs=1,
                          limit_train_batches=2)
    module = module_for(SmallConvNet(), lr=0.01)
    datamodule = tiny_data(signal=0.3)
    trainer.fit(module, datamodule=datamodule)

    # Recompute on the whole validation set with the final weights (validation ran after the last step).
    module.eval()
    images, labels = [], []
    for x, y in datamodule.val_dataloader():
        images.append(datamodule.transform_batch(x, train=False))
        labels.append(y)
    x, y = torch.cat(images), torch.cat(labels)
    with torch.no_grad():
        predicted = module(x).argmax(dim=1)
    expected = {str(c): 100 * float((predicted[y == c] != c).float().mean()) for c in range(4) if (y == c).any()}
    assert confusion.errors == pytest.approx(expected)
    assert int(confusion.matrix.sum()) == len(y) == 64
    rows = read_metrics(tmp_path)
    for name, error in expected.items():
        assert column(rows, f"val_class_err/{name}") == pytest.approx([error], rel=1e-5)
    assert (tmp_path / "plots/confusion/epoch001.png").is_file()

    wrong = int((predicted != y).sum())
    assert wrong > 0 and len(predictions.mistakes["images"]) == min(8, wrong)
    first_wrong = (predicted != y).nonzero().flatten()[: min(8, wrong)]
    assert predictions.mistakes["true"].tolist() == y[first_wrong].tolist()
    assert predictions.mistakes["predicted"].tolist() == predicted[first_wrong].tolist()
    assert (tmp_path / "plots/predictions/misclassified_epoch001.png").is_file()
    assert all(not m._forward_hooks for m in module.modules())  # the validation taps are gone
