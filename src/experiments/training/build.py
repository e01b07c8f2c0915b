"""Turn the composed config into objects: model, datamodule, trainer. The only place that calls ``instantiate``.

Hydra's ``_target_`` is the registry; this module adds what Hydra cannot know: metadata keys that are
not constructor arguments, and a probe forward pass that turns a too-small input into a readable error
instead of a shape error deep inside torch.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from experiments.core.errors import UserError, instantiate_or_explain

# Keys in a model config that describe the model (paper figures) or tell the framework how to run it
# (memory format), rather than build it.
MODEL_METADATA_KEYS = ("paper", "channels_last")


def constructor_config(cfg: DictConfig, drop: tuple[str, ...]) -> DictConfig:
    """A copy of ``cfg`` without the metadata keys, with every interpolation resolved."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in drop:
        plain.pop(key, None)
    return OmegaConf.create(plain)


def build_model(model_cfg: DictConfig, input_shape: tuple[int, int, int] | None = None):
    """Instantiate the model of ``model_cfg``; with ``input_shape`` (C, H, W), check it can take it."""
    import warnings

    from models.errors import ModelConfigError

    try:
        with warnings.catch_warnings():  # a zero-width layer is refused below, in one paragraph
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            model = instantiate_or_explain(constructor_config(model_cfg, MODEL_METADATA_KEYS), "model")
    except ModelConfigError as error:
        raise _named_as_set(error, model_cfg) from None
    _refuse_empty_layers(model, model_cfg)
    if input_shape is not None:
        check_model_accepts(model, input_shape, model_cfg.get("_target_", "?"))
    return model


def _refuse_empty_layers(model, model_cfg: DictConfig) -> None:
    """A width, ratio or multiplier small enough to round a layer down to zero channels builds a network
    that cannot compute anything (torch only warns); name the layers. The families check their own keys
    where they can (DenseNet's ``compression``); this is the net under every family."""
    empty = [name or "<the model itself>" for name, module in model.named_modules()
             if any(p.numel() == 0 for p in module.parameters(recurse=False))]
    if empty:
        where = ", ".join(empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
        raise UserError("model", str(model_cfg.get("_target_", "?")), f"builds layer(s) {where} with zero channels "
                        "or features: a width, ratio or multiplier among the model's keys rounds them down to nothing.",
                        "Raise it (python -m experiments.train --cfg job shows the model's keys and their values).")


def _named_as_set(error: Exception, model_cfg: DictConfig) -> Exception:
    """A model error about a key the user never set (``input_size: ${data.image_size}``) names the key
    they did set (``data.image_size``), so the message points at the override to change."""
    key = getattr(error, "key", None)
    if not isinstance(key, str) or key not in model_cfg or not OmegaConf.is_interpolation(model_cfg, key):
        return error
    source = str(model_cfg._get_node(key)._value()).strip()
    if not (source.startswith("${") and source.endswith("}")) or not source[2:-1].replace(".", "").replace("_", "").isalnum():
        return error
    named = source[2:-1]
    rest = str(error).split(": ", 1)[-1].replace(f"model.{key}", named)
    return UserError(named, getattr(error, "value", None), f"sets model.{key}, which {rest}", "")


def check_model_accepts(model, input_shape: tuple[int, int, int], name: str) -> None:
    """Run a 2-image zero batch through ``model`` in eval mode; explain a failure as a user error."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_shape))
    except RuntimeError as error:
        channels, height, width = input_shape
        detail = " ".join(str(error).split())[:300]
        raise UserError(
            "data.image_size", height,
            f"model {name} cannot take a {channels}x{height}x{width} input (its spatial size collapses or "
            f"its layers do not fit: {detail}).",
            "Set data.image_size to the model's native input size (see python -m experiments.summary "
            "model=<name>), or choose a model made for small images.",
        ) from None
    finally:
        model.train(was_training)


def one_value_norms(model, input_shape: tuple[int, int, int]) -> list[str]:
    """Names of the BatchNorm layers that see one value per channel per image (a 1x1 map, or a vector
    after global pooling) at this input size: in training mode they need at least two images a batch.
    Found with a 2-image eval forward pass (no running statistics change)."""
    import torch
    from torch import nn

    found: list[str] = []
    hooks = [module.register_forward_pre_hook(
        lambda _module, args, name=name: found.append(name) if args[0][0, 0].numel() == 1 else None)
        for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, *input_shape))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return list(dict.fromkeys(found))


def build_network(cfg: DictConfig, *, load_source: bool = False, device: str | None = None):
    """The model of ``cfg`` and its starting point, as one :class:`experiments.training.finetune.Network`
    (fine-tuning: the source's architecture and weights, frozen parts, per-group learning rates).
    ``load_source`` only for a fresh training run; ``device="meta"`` builds shapes only (no memory)."""
    import contextlib

    import torch

    from experiments.training import finetune

    shape = input_shape_of(cfg)
    probe = None if device == "meta" else shape  # the probe forward pass needs real numbers
    with torch.device(device) if device else contextlib.nullcontext():
        return finetune.network(cfg, lambda: build_model(cfg.model, probe), shape, load_source=load_source)


def profile_of(cfg: DictConfig) -> dict:
    """Params and multiply-adds of the configured network, counted on the meta device (no memory, no time)."""
    from models.profile import compare_with_paper, profile_model

    model = build_network(cfg, device="meta").model
    profile = profile_model(model, input_shape_of(cfg))
    profile["paper"] = compare_with_paper(profile, cfg.model.get("paper"))
    return profile


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build_datamodule(cfg: DictConfig):
    """Instantiate ``cfg.data``; fill ``data.num_classes`` in the config when the dataset infers it, and
    ``data.mean``/``std`` when it derives them (an image folder's own statistics): the run's config.yaml
    then holds the numbers used, for evaluation and resume."""
    datamodule = instantiate_or_explain(cfg.data, "data")
    if cfg.data.get("num_classes") is None:
        cfg.data.num_classes = int(datamodule.num_classes)
    for key in ("mean", "std"):
        if key in cfg.data and cfg.data.get(key) is None:
            cfg.data[key] = [float(v) for v in getattr(datamodule, key)]
    return datamodule


def input_shape_of(cfg: DictConfig) -> tuple[int, int, int]:
    return int(cfg.data.in_channels), int(cfg.data.image_size), int(cfg.data.image_size)


def build_module(cfg: DictConfig, network=None):
    """The network (``build_network(cfg)`` unless given) inside a :class:`ClassificationModule`."""
    from experiments.training.module import ClassificationModule

    network = network or build_network(cfg)
    model = network.model
    if cfg.model.get("channels_last"):
        import torch

        model = model.to(memory_format=torch.channels_last)
    if cfg.get("compile"):
        model.compile()  # in place: state_dict keys stay those of the plain model
    module_cfg = cfg.get("module") or {}
    scheduler = cfg.get("scheduler")
    return ClassificationModule(
        model=model,
        num_classes=int(cfg.data.num_classes),
        optimizer=cfg.optimizer,
        scheduler=scheduler if scheduler is not None and scheduler.get("_target_") else None,
        label_smoothing=module_cfg.get("label_smoothing", 0.0),
        aux_loss_weights=module_cfg.get("aux_loss_weights", (0.3, 0.3)),
        adversarial=module_cfg.get("adversarial"),
        adversarial_epsilon=module_cfg.get("adversarial_epsilon", 0.1),
        adversarial_steps=module_cfg.get("adversarial_steps", 7),
        adversarial_weight=module_cfg.get("adversarial_weight", 0.5),
        # (the attack's epsilon is in pixel units; the batches it perturbs are normalised with these)
        data_mean=list(cfg.data.get("mean") or [0.0])[: int(cfg.data.in_channels)],
        data_std=list(cfg.data.get("std") or [1.0])[: int(cfg.data.in_channels)],
        channels_last=bool(cfg.model.get("channels_last", False)),
        lr_scales=network.lr_scales,
        # (not for a compiled model: the summary's forward would compile it for a shape training never uses)
        example_input_shape=None if cfg.get("compile") else input_shape_of(cfg),
    )


def build_trainer(cfg: DictConfig, keep_through_epoch: int | None = None):
    """The Trainer with the configured callbacks and loggers, plus the ones every run needs: the per-epoch
    seed (resumable augmentation) and the save-on-interrupt checkpoint. ``keep_through_epoch`` makes the
    CSV logger keep a resumed run's rows up to that epoch."""
    import sys

    from hydra.utils import instantiate

    from callbacks.epoch_seed import EpochSeed
    from experiments.core import runs
    from experiments.training.interrupts import SaveOnInterrupt
    from experiments.training.movable import ResolveCheckpointPathsInRunFolder

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks.append(EpochSeed(int(cfg.seed)))
    folder = runs.RunFolder(cfg.paths.run_dir)
    callbacks.append(SaveOnInterrupt(folder.last_checkpoint))
    callbacks.append(ResolveCheckpointPathsInRunFolder(folder.checkpoint_dir))
    quiet = bool(cfg.get("quiet"))
    if quiet:
        callbacks = [c for c in callbacks if type(c).__name__ != "EpochLine"]
    interactive = sys.stdout.isatty() and not quiet
    if interactive:
        from experiments.training.lean_trainer import ThrottledRichProgressBar

        callbacks.append(ThrottledRichProgressBar(leave=False))  # redrawn every 0.2 s, not every batch
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if logger_cfg is None:
            continue
        extra = {"keep_through_epoch": keep_through_epoch} if name == "csv" else {}
        loggers.append(instantiate(logger_cfg, **extra))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                          enable_progress_bar=interactive, enable_model_summary=not quiet,
                          default_root_dir=cfg.paths.run_dir)
    from experiments.training.lean_trainer import streamline

    streamline(trainer)  # no per-step work that does nothing (idle callback hooks, profiler contexts)
    return trainer
