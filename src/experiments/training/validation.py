"""Checks of the composed config that catch a mistake before anything is built or written.

Models and datasets check their own arguments; this covers the keys that belong to no constructor
of ours (optimizer, trainer, module) and that torch would otherwise reject deep inside a run.
"""

from __future__ import annotations

import math
from numbers import Real

from omegaconf import DictConfig, ListConfig, OmegaConf

from experiments.core.errors import UserError
from experiments.training import schema

MAX_SEED = 2**32 - 1
PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "transformer-engine")


_ABSENT = object()


def _value(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=_ABSENT)


def _number(cfg: DictConfig, key: str, low: float | None = None, high: float | None = None,
            low_inclusive: bool = True, fix: str = "") -> None:
    value = _value(cfg, key)
    if value is _ABSENT or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, Real):
        raise UserError(key, value, "must be a number.", fix)
    if not math.isfinite(value):
        raise UserError(key, value, "must be a finite number.", fix)
    if low is not None and (value < low or (value == low and not low_inclusive)):
        bound = f">= {low}" if low_inclusive else f"> {low}"
        raise UserError(key, value, f"must be {bound}.", fix)
    if high is not None and value >= high:
        raise UserError(key, value, f"must be below {high}.", fix)


def _integer(cfg: DictConfig, key: str, low: int, fix: str) -> None:
    value = _value(cfg, key)
    if value is _ABSENT or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(key, value, f"must be an integer >= {low}.", fix)


def require_a_model(cfg: DictConfig, choice: str | None) -> None:
    """Refuse a base (``model=_resnet_cifar``: a config that model configs inherit, with ``???`` left for
    each model to set) and any model config that leaves a key at ``???``, naming the keys."""
    from experiments.core.fast_help import group_options
    from models.errors import ModelConfigError

    missing = [str(key) for key in cfg.model if OmegaConf.is_missing(cfg.model, key)]
    if choice and choice.startswith("_"):
        unset = f" ({', '.join(missing)} unset)" if missing else ""
        raise ModelConfigError(missing[0] if missing else "_target_", "???",
                               f"`model={choice}` is a base that model configs inherit{unset}, not a model.",
                               f"Choose a model: {', '.join(group_options('model'))}.")
    if missing:
        raise ModelConfigError(missing[0], "???", f"is not set by `model={choice}` (left at ???: {', '.join(missing)}).",
                               f"Set it on the command line (model.{missing[0]}=...) or in the model config.")


def _check_hardware(trainer: DictConfig) -> None:
    """The accelerator and device count the trainer asks for exist on this machine (Lightning would fail
    inside the run with its own exception, after the run folder was made)."""
    import torch

    accelerator = str(trainer.get("accelerator", "auto")).lower()
    devices = trainer.get("devices", "auto")
    if devices == 0 or (isinstance(devices, (list, ListConfig)) and len(devices) == 0):
        raise UserError("trainer.devices", devices, "asks for no device at all.",
                        "Use trainer.devices=1 (or a count, or auto).")
    available = {"gpu": torch.cuda.is_available(), "cuda": torch.cuda.is_available(),
                 "mps": torch.backends.mps.is_available(), "tpu": False}
    if accelerator in available and not available[accelerator]:
        raise UserError("trainer.accelerator", accelerator, f"is not available: this machine has no visible "
                        f"{'GPU' if accelerator in ('gpu', 'cuda') else accelerator.upper()}"
                        f"{' (torch.cuda.is_available() is False)' if accelerator in ('gpu', 'cuda') else ''}.",
                        "Train on the CPU (trainer=cpu, or trainer.accelerator=cpu), or run on a machine with one.")
    if accelerator in ("gpu", "cuda") and isinstance(devices, int) and devices > torch.cuda.device_count():
        raise UserError("trainer.devices", devices, f"asks for more GPUs than the {torch.cuda.device_count()} "
                        "visible here.", f"Use trainer.devices={torch.cuda.device_count()} or fewer.")


def _check_interpolations(cfg: DictConfig) -> None:
    """Every ``${...}`` resolves (a study's ``study.variant`` picks its model keys by interpolation; a
    variant it lacks would fail when the model is built, as a traceback)."""
    from omegaconf.errors import InterpolationResolutionError

    study = cfg.get("study")
    if isinstance(study, DictConfig) and isinstance(study.get("variants"), DictConfig):
        variant, variants = study.get("variant"), list(study.variants)
        if variant not in variants:
            raise UserError("study.variant", variant, "is not one of this study's variants.",
                            f"Use one of: {', '.join(map(str, variants))}.")
    try:
        for key in cfg:  # (Hydra's own node, present in a config composed in-process, resolves inside a job)
            node = cfg._get_node(key)  # (a top-level value such as run_name: ${hydra:...} resolves in a job)
            if key != "hydra" and isinstance(node, (DictConfig, ListConfig)):
                OmegaConf.to_container(node, resolve=True)
    except InterpolationResolutionError as error:
        key = getattr(error, "full_key", None) or "config"
        parent, _, leaf = key.rpartition(".")
        try:  # the text the user wrote, ${...} and all
            raw = (OmegaConf.select(cfg, parent) if parent else cfg)._get_node(leaf)._value()
        except Exception:
            raw = None
        problem = " ".join(str(error).split("full_key:")[0].split())
        raise UserError(key, raw, f"cannot be resolved ({problem}).", "Set the keys it refers to, or set this key "
                        "itself (python -m experiments.train --cfg job shows the config).") from None


def _check_precision(trainer) -> None:
    """A precision Lightning knows, and not one of those it accepts that this project cannot honour."""
    precision = str(trainer.get("precision", "32-true"))
    if precision not in PRECISIONS:
        raise UserError("trainer.precision", precision, "is not a precision Lightning knows.",
                        f"Use one of: {', '.join(PRECISIONS[:6])}.")
    if precision in ("bf16-true", "16-true"):
        raise UserError("trainer.precision", precision, "keeps the weights themselves in half precision, which "
                        "this project does not support: its data path normalises images to float32 after "
                        "Lightning converts a batch, and its diagnostics probe the model with float32 images.",
                        "Use bf16-mixed (or 16-mixed on a GPU): the weights stay float32 and the convolutions run "
                        "in half precision under autocast.")
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    if precision in ("16-mixed", "16") and accelerator == "cpu":
        raise UserError("trainer.precision", precision, "is float16 autocast, which the CPU does not do: Lightning "
                        "would run bf16-mixed instead without saying so.",
                        "Use trainer.precision=bf16-mixed on the CPU (or 32-true), 16-mixed on a GPU.")


def _check_trainer_ranges(cfg: DictConfig) -> None:
    """Values Lightning's Trainer accepts when it is built but fails on inside the run (a division by
    zero, an empty epoch), after the run folder is made."""
    fix = "python -m experiments.train --cfg job shows the defaults."
    _integer(cfg, "trainer.accumulate_grad_batches", 1, f"Use 1 (no accumulation) or more; {fix}")
    _integer(cfg, "trainer.check_val_every_n_epoch", 1, f"Use 1 (validate every epoch) or more; {fix}")
    _integer(cfg, "trainer.log_every_n_steps", 1, f"Use e.g. trainer.log_every_n_steps=50; {fix}")
    _integer(cfg, "trainer.num_sanity_val_steps", -1, f"Use 0 (none), a count, or -1 (all); {fix}")
    _number(cfg, "trainer.gradient_clip_val", 0, fix=f"Use null (no clipping) or a positive value; {fix}")
    for key in ("limit_train_batches", "val_check_interval"):
        value = _value(cfg, f"trainer.{key}")
        if isinstance(value, Real) and not isinstance(value, bool) and not value > 0:
            raise UserError(f"trainer.{key}", value, "leaves nothing to train on (it must be > 0: a count of "
                            "batches, or a fraction of the epoch in (0, 1]).", f"Use e.g. trainer.{key}=1.0; {fix}")


def _check_model_follows_data(cfg: DictConfig) -> None:
    """The model's input channels and class count are the data's (conf/model/_model.yaml interpolates
    them); one set apart would fail inside the run (a conv expecting other channels, a target index out
    of the logits' range) after the run folder is made."""
    for key in ("in_channels", "num_classes"):
        ours, theirs = _value(cfg, f"model.{key}"), _value(cfg, f"data.{key}")
        if _ABSENT in (ours, theirs) or None in (ours, theirs) or ours == theirs:
            continue
        raise UserError(f"model.{key}", ours, f"differs from data.{key}={theirs}: the model would "
                        f"{'expect other input channels' if key == 'in_channels' else 'predict another number of classes'} "
                        "than the dataset gives.", f"Drop the model.{key} override (it follows data.{key}), or "
                        f"change data.{key} where the dataset allows it"
                        + (" (data.classes picks a subset of labels)." if key == "num_classes" else "."))


def check_evaluation_trainer(cfg: DictConfig) -> None:
    """A run's trainer settings changed for an evaluation: what the evaluation's one-device Trainer uses
    (:func:`experiments.evaluation.ensemble.eval_trainer`: the accelerator and the precision) exists here
    and builds. The run's other trainer keys (its devices, strategy, nodes) are not the evaluation's."""
    trainer = cfg.get("trainer") or {}
    used = OmegaConf.create({"_target_": "pytorch_lightning.Trainer", "devices": 1,
                             "accelerator": trainer.get("accelerator", "auto"),
                             "precision": trainer.get("precision", "32-true")})
    _check_hardware(used)
    _check_precision(used)
    check_trainer_builds(OmegaConf.create({"trainer": used}))


def check_trainer_builds(cfg: DictConfig) -> None:
    """Build a Trainer from ``cfg.trainer`` on the side (no logger, callbacks or folders), so that a value
    Lightning refuses (``strategy=bogus``, ``limit_train_batches=1.5``, ``num_nodes=0``) is refused before
    the run folder gets anything, in one paragraph naming the key Lightning names."""
    import logging
    import tempfile

    from hydra.utils import instantiate

    node = cfg.get("trainer")
    if node is None:
        return
    quiet = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch")]
    levels = [logger.level for logger in quiet]
    try:
        for logger in quiet:
            logger.setLevel(logging.ERROR)  # its "GPU available: ..." lines belong to the real Trainer
        instantiate(node, logger=False, callbacks=[], enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=tempfile.gettempdir())
    except Exception as error:  # Lightning's MisconfigurationException, ValueError, TypeError, ...
        cause = error.__cause__ if error.__cause__ is not None else error  # Hydra wraps the constructor's error
        message = " ".join(str(cause).split())
        named = sorted((str(k) for k in node if str(k) in message and not str(k).startswith("_")), key=len, reverse=True)
        key = f"trainer.{named[0]}" if named else "trainer"
        value = OmegaConf.select(cfg, key) if named else None
        if not named:
            message = f"Lightning's Trainer cannot be built from it: {message}"
        raise UserError(key, value, message[:600].rstrip(".") + ".",
                        "Change it (python -m experiments.train --cfg job shows the trainer's keys).") from None
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def _model_choice() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get("model") if HydraConfig.initialized() else None


def validate(cfg: DictConfig, this_machine: bool = True) -> None:
    """Every check of the composed config. ``this_machine=False`` leaves out what depends on the machine
    that runs the check (the GPUs it has, a Trainer built here): ``coarse_to_fine`` checks its overrides on
    a login node and its trials may run elsewhere (a SLURM launcher); each trial checks them all itself."""
    require_a_model(cfg, _model_choice())
    schema.check(cfg)  # every key's type (schema.py); the ranges below
    _check_interpolations(cfg)
    _number(cfg, "optimizer.lr", 0, low_inclusive=False, fix="Set a positive learning rate, e.g. optimizer.lr=0.1.")
    _number(cfg, "optimizer.weight_decay", 0, fix="Use 0 to disable weight decay, or e.g. 1e-4.")
    _number(cfg, "optimizer.momentum", 0, 1, fix="Use a momentum in [0, 1), e.g. 0.9.")
    _number(cfg, "module.label_smoothing", 0, 1, fix="Use a value in [0, 1), e.g. 0.1.")
    _number(cfg, "model.dropout", 0, 1, fix="Use a dropout probability in [0, 1), e.g. 0.5.")
    _integer(cfg, "data.batch_size", 1, "Use a positive batch size, e.g. data.batch_size=128.")
    _integer(cfg, "seed", 0, "Use a non-negative integer seed, e.g. seed=42.")
    if isinstance(_value(cfg, "seed"), int) and cfg.seed > MAX_SEED:  # numpy's seeds are 32-bit
        raise UserError("seed", cfg.seed, f"is past the largest seed numpy takes ({MAX_SEED}).", "Use e.g. seed=42.")
    _integer(cfg, "trainer.max_epochs", -1, "Use a positive number of epochs, or -1 with trainer.max_steps.")
    _integer(cfg, "trainer.max_steps", -1, "Use a positive number of steps, or -1 to train by epochs.")
    trainer = cfg.get("trainer") or {}
    if trainer.get("max_epochs") == 0 or (trainer.get("max_epochs") in (-1, None) and trainer.get("max_steps", -1) in (-1, None)
                                         and not trainer.get("fast_dev_run")):
        raise UserError("trainer.max_epochs", trainer.get("max_epochs"), "leaves nothing to train.",
                        "Set trainer.max_epochs to a positive number (or trainer.max_steps).")
    if this_machine:
        _check_hardware(trainer)
    _check_trainer_ranges(cfg)
    _check_precision(trainer)
    if this_machine:
        check_trainer_builds(cfg)
    _check_model_follows_data(cfg)
    weights = (cfg.get("module") or {}).get("aux_loss_weights") or []
    if any(isinstance(w, bool) or not isinstance(w, Real) or w < 0 for w in weights):
        raise UserError("module.aux_loss_weights", list(weights), "must be non-negative numbers.",
                        "Use e.g. [0.3, 0.3] (GoogLeNet) or [] to ignore auxiliary classifiers.")
    from experiments.training.finetune import check_config

    check_config(cfg)
    resume = cfg.get("resume")
    if not isinstance(resume, (bool, str)) or resume == "":
        raise UserError("resume", resume, "must be true/false or a run folder.",
                        "Use resume=true or resume=outputs/train/<date>/<time>_<name>.")
