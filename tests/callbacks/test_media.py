"""The media adapter: one call reaches TensorBoard, W&B, the CSV file and a PNG in the run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import media, plotting
from experiments.training.loggers import make_wandb_logger

from .conftest import SmallConvNet, column, csv_logger, module_for, read_metrics, tiny_data, trainer_for

VALUES = torch.arange(1000, dtype=torch.float32) / 10  # 0.0 .. 99.9


class LogEverything(pl.Callback):
    """Sends one of each kind of media through the adapter at the end of training."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        media.log_scalars(trainer, {"probe/scalar": 0.25})
        media.log_histogram(trainer, "probe/hist", media.Histogram.from_reduced(media.Histogram.reduce(VALUES, 10)))
        gradient = torch.linspace(0, 1, 16 * 24).view(1, 16, 24).expand(3, -1, -1)
        media.log_image(trainer, "probe/image", gradient, "probe/image.png")
        figure = plotting.new_figure(2, 1.5)
        figure.add_subplot().plot([0, 1], [1, 0])
        media.log_figure(trainer, "probe/figure", figure, "probe/figure.png")


def test_histogram_is_reduced_exactly():
    histogram = media.Histogram.from_reduced(media.Histogram.reduce(VALUES, 10))
    assert histogram.num == 1000
    assert histogram.counts.tolist() == [100.0] * 10
    assert histogram.min == 0.0 and abs(histogram.max - 99.9) < 1e-4
    assert abs(histogram.sum - float(VALUES.sum())) < 1e-2
    constant = media.Histogram.from_reduced(media.Histogram.reduce(torch.full((7,), 3.0), 4))
    assert constant.counts.sum() == 7 and constant.min == 3.0


def test_every_logger_and_a_png_get_the_media(tmp_path: Path, offline_wandb):
    tensorboard = TensorBoardLogger(save_dir=str(tmp_path), name="tensorboard", version="", default_hp_metric=False)
    wandb_logger = make_wandb_logger(save_dir=str(tmp_path), project="test", name="media", mode="offline")
    loggers = [csv_logger(tmp_path), tensorboard, wandb_logger]
    trainer = trainer_for(tmp_path, [LogEverything()], loggers=loggers, max_epochs=1, limit_train_batches=2,
                          limit_val_batches=1)
    trainer.fit(module_for(SmallConvNet()), datamodule=tiny_data())
    wandb_logger.experiment.finish()

    # PNG files in the run folder, whatever the loggers.
    image = np.asarray(Image.open(tmp_path / "plots/probe/image.png"))
    assert image.shape == (16, 24, 3) and image[0, 0, 0] == 0 and image[-1, -1, 0] == 255
    figure = np.asarray(Image.open(tmp_path / "plots/probe/figure.png"))
    assert figure.shape == (150, 200, 3)

    # CSV: the scalar, with the epoch like Lightning's own rows.
    rows = read_metrics(tmp_path)
    assert column(rows, "probe/scalar") == [0.25]

    # TensorBoard, read back with its own reader.
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    tags = events.Tags()
    assert [e.value for e in events.Scalars("probe/scalar")] == [0.25]
    histogram = events.Histograms("probe/hist")[0].histogram_value
    assert histogram.num == 1000 and list(histogram.bucket) == [100.0] * 10
    assert {"probe/image", "probe/figure"} <= set(tags["images"])
    stored = events.Images("probe/image")[0]
    assert (stored.width, stored.height) == (24, 16)

    # W&B offline run: image files under media/, histogram in the run's history records.
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    pictures = sorted(p.relative_to(run_dir / "files/media/images").as_posix()
                      for p in (run_dir / "files/media/images").rglob("*.png"))
    assert any(p.startswith("probe/image") for p in pictures) and any(p.startswith("probe/figure") for p in pictures)
    records = next(run_dir.glob("*.wandb")).read_bytes()
    assert b"probe/hist" in records and b"histogram" in records
