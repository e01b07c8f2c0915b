"""The `diagnostics` callbacks set through the real pipeline: every callback's files and logger entries."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

DIAGNOSTICS = ["activation_stats", "filter_images", "error_curves", "layer_response_std", "gradient_flow",
               "confusion_matrix", "predictions"]


def test_diagnostics_is_default_plus_every_diagnostic(compose):
    default = OmegaConf.to_container(compose(["callbacks=default"]).callbacks)
    diagnostics = OmegaConf.to_container(compose(["callbacks=diagnostics"]).callbacks)
    assert {k: diagnostics[k] for k in default} == default
    assert sorted(set(diagnostics) - set(default)) == sorted(DIAGNOSTICS)


def test_a_resnet_run_with_every_diagnostic_and_logger(compose, tmp_path: Path, offline_wandb):
    from experiments.training.pipeline import train

    run = tmp_path / "run"
    cfg = compose(["data=synthetic", "model=resnet20", "data.image_size=16", "data.num_train=320",
                   "data.val_size=64", "data.num_test=64", "data.batch_size=32", "trainer.max_epochs=2",
                   "trainer.limit_train_batches=3", "trainer.log_every_n_steps=1", "callbacks=diagnostics",
                   "callbacks.gradient_flow.every_n_steps=2", "logger=many", "quiet=true",
                   f"paths.run_dir={run}"])
    with open_dict(cfg):
        cfg.pop("hydra")  # as in a real run: the job's config has no hydra node (its resolvers still work)
    train(cfg)

    plots = {p.relative_to(run / "plots").as_posix() for p in (run / "plots").rglob("*.png")}
    expected = {"error_curves.png", "gradient_flow.png", "layer_response_std.png", "confusion/epoch002.png",
                "predictions/misclassified_epoch002.png", "filters/conv1_epoch000.png",
                "filters/conv1_epoch002.png", "activations/conv1_step000000.png",
                "activations/conv1_step000006.png", "activations/layer3.2.conv2_step000006.png"}
    assert expected <= plots, sorted(plots)
    assert (run / "diagnostics/layer_response_std.json").is_file()

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "histograms": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for scalar in ("activation_sparsity/conv1", "activation_dead/fc", "grad_norm/conv1", "update_ratio/fc",
                   "layer_response_std/layer1.0.conv1", "val_class_err/0", "val/err"):
        assert scalar in tags["scalars"], scalar
    assert len(events.Scalars("activation_sparsity/conv1")) == 3  # before training + 2 epochs
    assert len(events.Scalars("grad_norm/conv1")) == 3  # steps 0, 2, 4
    assert "activation_hist/conv1" in tags["histograms"]
    assert {"error_curves", "gradient_flow", "layer_response_std", "confusion_matrix", "misclassified",
            "filters/conv1", "activation_maps/conv1"} <= set(tags["images"])

    wandb_run = next((run / "wandb").glob("offline-run-*"))
    media = {p.relative_to(wandb_run / "files/media/images").parts[0]
             for p in (wandb_run / "files/media/images").rglob("*.png")}
    assert {"filters", "activation_maps"} <= media
    assert any(m.startswith("error_curves") for m in media) and any(m.startswith("misclassified") for m in media)
    assert b"activation_hist/conv1" in next(wandb_run.glob("*.wandb")).read_bytes()
