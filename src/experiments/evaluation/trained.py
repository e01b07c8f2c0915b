"""A trained run, loaded back: its own config, its weights, its data — for every after-training tool.

``experiments.eval`` and ``experiments.analyze`` start here, so both read a run the same way: the
run's saved ``config.yaml`` (not today's defaults), ``key=value`` overrides of single keys, and the
best (or last, or a named) checkpoint loaded with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.core import runs
from experiments.core.errors import UserError


@dataclass
class TrainedRun:
    run_dir: Path
    cfg: DictConfig
    checkpoint_path: Path
    module: Any  # experiments.training.module.ClassificationModule, in eval mode, on the CPU
    datamodule: Any

    @property
    def model(self):
        return self.module.model

    def class_names(self) -> list[str]:
        names = getattr(self.datamodule, "classes", None)
        return list(names) if names else [str(i) for i in range(int(self.cfg.data.num_classes))]

    def prepare_split(self, split: str) -> None:
        """Load a split on first use: a run is loaded with its test split only, so that evaluating it
        does not read (and hold out a validation set from) the whole training set as well."""
        self.datamodule.setup("test" if split == "test" else "fit")

    def test_images(self, limit: int | None = None, split: str = "test"):
        """(images as the model sees them, the same in [0, 1] for display, labels), at most ``limit``."""
        import torch

        self.prepare_split(split)
        loader = getattr(self.datamodule, f"{split}_dataloader")()
        shown, seen, labels = [], [], []
        count = 0
        pipeline = getattr(self.datamodule, "pipeline", None)
        for raw, target in loader:
            if pipeline is not None:  # in-memory data: raw images, resized and normalised on the device
                raw = raw.float().div(255) if raw.dtype == torch.uint8 else raw.float()
                shown.append(pipeline.fit_size(raw))
                seen.append(self.datamodule.transform_batch(raw, train=False))
            else:  # streamed data (ImageFolder): the loader's tensors are already model inputs
                seen.append(raw.float())
                shown.append(self.unnormalize(raw.float()))
            labels.append(target)
            count += len(target)
            if limit is not None and count >= limit:
                break
        images, display, targets = torch.cat(seen), torch.cat(shown), torch.cat(labels)
        return (images, display, targets) if limit is None else (images[:limit], display[:limit], targets[:limit])

    def unnormalize(self, images):
        """Model inputs back to [0, 1] for display (the datamodule's mean/std undone)."""
        import torch

        mean = torch.tensor(list(self.cfg.data.get("mean") or [0.0]), dtype=images.dtype).view(1, -1, 1, 1)
        std = torch.tensor(list(self.cfg.data.get("std") or [1.0]), dtype=images.dtype).view(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)


_ABSENT = object()
EVALUATION_TRAINER_KEYS = ("trainer.accelerator", "trainer.precision")  # what ensemble.eval_trainer reads


def apply_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """Set keys of the run's config; swapping a whole group (``model=vgg16``) is a different run. A key
    the run's config lacks is a typo unless added with ``+``; the values set are type-checked as
    training checks them (:mod:`experiments.training.schema`), and trainer settings must build a Trainer
    on this machine."""
    from experiments.training import schema
    from experiments.training.validation import check_evaluation_trainer

    keys = []
    for item in overrides:
        if "=" not in item:
            raise UserError("argument", item, "is not of the form key=value.", "Use key=value pairs.")
        key, value = item.split("=", 1)
        adding, key = key.startswith("+"), key.lstrip("+")
        node = OmegaConf.select(cfg, key, default=_ABSENT)
        if node is _ABSENT and not adding:
            raise UserError(key, value, "is not a key of the run's config.yaml (a misspelt key?).",
                            f"Check the spelling against the run's config.yaml; +{key}={value} adds a new key.")
        if isinstance(node, DictConfig):
            raise UserError(key, value, "would replace a whole config group of the trained run.",
                            f"Use the run's own {key}; set single keys such as {key}.<name>=<value>.")
        if key.startswith("trainer.") and key not in EVALUATION_TRAINER_KEYS:
            raise UserError(key, value, "is not used here: an evaluation's Trainer runs on one device and takes "
                            "only the accelerator and the precision from the run's trainer.",
                            "Drop it; set trainer.accelerator or trainer.precision if needed.")
        try:
            OmegaConf.update(cfg, key, OmegaConf.select(OmegaConf.from_dotlist([f"{key}={value}"]), key), merge=False,
                             force_add=adding)
        except Exception as error:
            raise UserError(key, value, f"could not be applied ({error}).", "Use key=value pairs.") from None
        keys.append(key)
    schema.check_keys(cfg, keys)
    if any(k.startswith("trainer.") for k in keys):
        check_evaluation_trainer(cfg)
    return cfg


def load_trained(run: str | Path, ckpt: str = "best", overrides: list[str] | None = None) -> TrainedRun:
    """The run's module with its checkpoint loaded (eval mode) and its test split set up; the training
    and validation splits load on demand (``TrainedRun.prepare_split``)."""
    import pytorch_lightning as pl

    from experiments.core.console import silence_harmless_warnings
    from experiments.training.build import build_datamodule, build_module

    silence_harmless_warnings()
    folder, explicit = runs.RunFolder.of(run)
    folder.refuse_if_in_use("this command")  # it writes its results into the run folder
    run_dir, cfg = folder.path, folder.config()
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    checkpoint_path = explicit or runs.choose_checkpoint(run_dir, ckpt)
    if not checkpoint_path.is_file():
        raise UserError("ckpt", str(checkpoint_path), "does not exist.", "Use ckpt=best, ckpt=last or a .ckpt path.")
    checkpoint = runs.load_checkpoint(checkpoint_path)
    pl.seed_everything(int(cfg.get("seed", 0)), verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    module = build_module(cfg)
    runs.load_model_weights(module, checkpoint, checkpoint_path)
    module.eval()
    return TrainedRun(run_dir=run_dir, cfg=cfg, checkpoint_path=checkpoint_path, module=module,
                      datamodule=datamodule)
