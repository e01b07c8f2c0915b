"""Transfer learning: turn a fresh model and a source of weights into the model to fine-tune.

``finetune.from`` names the source: a run folder of this framework (or a ``.ckpt`` inside one), or a
plain ``state_dict`` file (``.pt``/``.pth``, e.g. torchvision's ImageNet weights: the zoo keeps
torchvision's keys; a plain file is refused by a model that has torchvision's keys but not its network,
such as the v1 ``resnet50``, see :mod:`models.torchvision_twins`). ``finetune.strategy`` says what
trains (cs231n's transfer-learning table):

==============  ===============================================================================
``head``        freeze everything, train a new classifier (little data, similar to the source's)
``last_k``      also fine-tune the last ``finetune.k`` stages before the head (more data)
``from_layer``  cut the network after ``finetune.layer``, global-average-pool that output, attach a
                new linear classifier and train only it; the kept layers stay frozen (little data,
                different from the source's: earlier features are more generic)
``full``        fine-tune the whole network, the backbone at ``optimizer.lr x backbone_lr_scale`` and
                the new head at ``optimizer.lr`` (a lot of data)
==============  ===============================================================================

The stages are :func:`models.stages.stages_of`'s (a VGG's convs and FCs, a ResNet's ``conv1`` and
``layer1..4``, ...); the last one is the head. The head is always built fresh for the new
``num_classes`` and its source weights are never copied (``reset_head: true``, even when the shapes
happen to match); every other weight of the transfer model must be in the source with the same name
and shape. Frozen parameters get ``requires_grad=False`` and stay out of the optimizer; frozen
normalisation layers run in eval mode, so their running statistics never change (a forward pre-hook,
:func:`keep_frozen_norms_in_eval`: Lightning and the diagnostics callbacks' probes call ``.train()``).

How a fine-tuned run is rebuilt later (``experiments.eval``, ``experiments.evaluation.trained.load_trained``,
``resume=``). The architecture is fixed in the run's own ``config.yaml`` before anything is built:

1. :func:`adopt_source_model` (``experiments.train`` only, before the run starts) replaces ``cfg.model``
   with the source run's own ``model`` node, its ``in_channels``/``num_classes``/``input_size``
   pointed at the new ``data`` (and training-only auxiliary heads switched off): the user does not
   repeat ``model=...``, and the saved ``config.yaml`` names the exact architecture. A plain
   ``state_dict`` file has no config, so ``cfg.model`` is used as given.
2. :func:`apply_transfer` does the surgery that follows from the config alone (the cut of ``from_layer``, freezing,
   the per-group learning rates). It never reads the source, so a fine-tuned run evaluates even after
   its source run was deleted.
3. :func:`load_source_weights` copies the source weights in, only for a fresh run (on resume the run's
   own ``last.ckpt`` holds them; an evaluation loads its checkpoint).

A fine-tuned run is rebuilt later (``experiments.eval``, ``load_trained``, ``resume=``) from its own
``config.yaml``, which already names the adopted architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from experiments.core import runs
from experiments.core.errors import UserError
from models.interface import ClassifierMixin

STRATEGIES = ("full", "head", "last_k", "from_layer")
# Model keys that follow the new data rather than the source run.
DATA_KEYS = {"in_channels": "${data.in_channels}", "num_classes": "${data.num_classes}",
             "input_size": "${data.image_size}"}
SOURCE_FIX = ("Pass a run folder printed by experiments.train (or a .ckpt inside its checkpoints/), or a "
              "state_dict file (.pt/.pth) saved from the model of cfg.model.")


# --- the one call ---------------------------------------------------------------------------------------
@dataclass
class Network:
    """What the training path gets from :func:`network`: everything about the model's starting point."""

    model: nn.Module
    lr_scales: dict[str, float] | None = None  # trainable parameter -> lr multiplier (None: all at optimizer.lr)
    transferred: dict[str, Any] | None = None  # for summary.json: what was copied from where (fresh runs only)
    plan: Transfer | None = None               # the surgery: stages, what trains, the new head


def network(cfg: DictConfig, build: Callable[[], nn.Module], input_shape: tuple[int, int, int], *,
            load_source: bool) -> Network:
    """The model to train and its starting point: built by ``build()``; with ``finetune.from`` set, given
    the source run's architecture (``load_source`` only), cut and frozen as ``finetune.strategy`` says,
    and filled with the source's weights (``load_source`` only: a fresh run, not a resume or an eval)."""
    if not is_active(cfg):
        return Network(build())
    source = adopt_source_model(cfg) if load_source else None
    transfer = apply_transfer(build(), cfg, input_shape, int(cfg.data.num_classes))
    transferred = load_source_weights(transfer, cfg, source) if load_source else None
    return Network(transfer.model, transfer.lr_scales, transferred, transfer)


# --- the config ---------------------------------------------------------------------------------------
def settings(cfg: DictConfig) -> DictConfig | None:
    node = cfg.get("finetune") if isinstance(cfg, DictConfig) else None
    return node if isinstance(node, DictConfig) else None


def is_active(cfg: DictConfig) -> bool:
    """True when the config fine-tunes from a source (``finetune.from`` is set)."""
    node = settings(cfg)
    return node is not None and not OmegaConf.is_missing(node, "from") and node.get("from") is not None


def check_config(cfg: DictConfig) -> None:
    """The finetune keys that can be checked without building anything (called by ``validation``)."""
    node = settings(cfg)
    if node is None:
        return
    strategy = node.get("strategy", "full")
    if OmegaConf.is_missing(node, "from"):
        raise UserError("finetune.from", "???", f"is required with finetune.strategy={strategy}.",
                        "Pass finetune.from=<run folder> (e.g. of experiment=transfer_pretrain) or a .pt/.pth "
                        "state_dict file, or drop finetune= to train from scratch.")
    if not is_active(cfg):
        return
    source = node.get("from")
    if not isinstance(source, str) or not source:
        raise UserError("finetune.from", source, "must be a path.", SOURCE_FIX)
    if strategy not in STRATEGIES:
        raise UserError("finetune.strategy", strategy, "is not a transfer strategy.",
                        f"Use one of: {', '.join(STRATEGIES)}.")
    k = node.get("k", 1)
    if strategy == "last_k" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise UserError("finetune.k", k, "must be an integer >= 1 (the number of stages before the head to "
                        "fine-tune).", "Use e.g. finetune.k=1, or finetune.strategy=head to train only the head.")
    scale = node.get("backbone_lr_scale", 0.1)
    if isinstance(scale, bool) or not isinstance(scale, Real) or scale <= 0:
        raise UserError("finetune.backbone_lr_scale", scale, "must be a positive number (the backbone's lr is "
                        "optimizer.lr times it).", "Use e.g. 0.1, or finetune.strategy=head to freeze the backbone.")
    if not isinstance(node.get("reset_head", True), bool):
        raise UserError("finetune.reset_head", node.get("reset_head"), "must be true or false.",
                        "Use finetune.reset_head=true (a fresh classifier).")
    ckpt = node.get("ckpt", "best")
    if not isinstance(ckpt, str) or not ckpt:
        raise UserError("finetune.ckpt", ckpt, "must be best, last or a checkpoint path.", "Use finetune.ckpt=best.")


# --- the source -----------------------------------------------------------------------------------------
@dataclass
class Source:
    """Where the weights come from: ``file`` to read, and for a run of ours its folder and config."""

    file: Path
    run_dir: Path | None = None
    config: DictConfig | None = None
    plain: bool | None = None  # a plain state_dict file (no record of its architecture); set when read


def resolve_source(cfg: DictConfig) -> Source:
    """The file to read for ``finetune.from`` (a run's best/last checkpoint, or the file itself)."""
    node = settings(cfg)
    target = str(node.get("from"))
    path = Path(target).expanduser()
    if not path.exists():
        raise UserError("finetune.from", target, "does not exist.", SOURCE_FIX)
    if path.is_dir():
        if not runs.RunFolder.is_run_folder(path):
            raise UserError("finetune.from", target, "is a folder but not a run folder (no config.yaml).", SOURCE_FIX)
        run_dir, explicit = path, None
    else:
        run_dir = next((p for p in path.parents if runs.RunFolder.is_run_folder(p)), None) if path.suffix == ".ckpt" else None
        if run_dir is None:
            return Source(file=path)
        explicit = path
    folder = runs.RunFolder(run_dir, key="finetune.from")
    if not folder.config_file.is_file():
        raise UserError("finetune.from", target, f"has no {runs.CONFIG_FILE} (the run did not get past its start), so "
                        "its architecture is unknown.", "Pick a run that trained.")
    which = str(node.get("ckpt", "best"))
    if explicit is None:
        try:
            explicit = folder.checkpoint(which)
        except UserError:
            raise UserError("finetune.from", target, f"has no checkpoint in {runs.CHECKPOINT_DIR}/ (it stopped before "
                            "its first epoch ended).", "Train it further (resume=<run folder>) or pick another "
                            "run.") from None
    if not explicit.is_file():
        raise UserError("finetune.ckpt", which, f"does not exist in {run_dir}.",
                        "Use finetune.ckpt=best, last or a checkpoint path inside the run.")
    return Source(file=explicit, run_dir=run_dir, config=folder.config())


def adopt_source_model(cfg: DictConfig) -> Source | None:
    """Give ``cfg.model`` the source run's architecture (see the module docstring); returns the source.

    Command-line ``model.<key>=...`` overrides of this call still apply on top (e.g. ``model.dropout``).
    """
    if not is_active(cfg):
        return None
    source = resolve_source(cfg)
    if source.config is None or source.config.get("model") is None:
        return source
    if is_active(source.config) and OmegaConf.select(source.config, "finetune.strategy") == "from_layer":
        raise UserError("finetune.from", str(settings(cfg).get("from")), "is a from_layer run: a network cut after "
                        f"{OmegaConf.select(source.config, 'finetune.layer')} with a new classifier, not a whole "
                        "network to transfer.", "Fine-tune from the run it was cut from "
                        f"({OmegaConf.select(source.config, 'finetune.from')}), or from a head, last_k or full run.")
    _refuse_other_model(cfg, source)
    model = OmegaConf.to_container(source.config.model, resolve=False)
    for key, value in DATA_KEYS.items():
        if key in model:
            model[key] = value
    if model.get("aux_logits"):
        model["aux_logits"] = False  # auxiliary heads help deep nets train from scratch; the transfer drops them
    if "channels_last" in (cfg.get("model") or {}):
        model["channels_last"] = cfg.model.channels_last
    cfg.model = OmegaConf.create(model)
    for override in _model_overrides():
        key, value = override.lstrip("+~").split("=", 1)
        OmegaConf.update(cfg, key, OmegaConf.select(OmegaConf.from_dotlist([f"{key}={value}"]), key), merge=True,
                         force_add=True)
    return source


def _refuse_other_model(cfg: DictConfig, source: Source) -> None:
    """A run source fixes the architecture: a ``model=`` choice that names another one is a conflict,
    not something to drop without a word (the run folder would be named after a model it does not hold)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    chosen = next((o.split("=", 1)[1] for o in HydraConfig.get().overrides.task
                   if o.lstrip("+~").split("=", 1)[0] == "model" and "=" in o), None)
    if chosen is None:
        return
    folder = runs.RunFolder(source.run_dir, key="finetune.from")
    theirs = folder.choices().get("model") or folder.summary().get("model_name")
    if theirs is not None and chosen != theirs:
        raise UserError("model", chosen, f"conflicts with finetune.from={settings(cfg).get('from')}, a {theirs} "
                        f"run: a run source fixes the architecture (its config.yaml), so model={chosen} cannot "
                        "apply.", f"Drop model= (the run trains as {theirs}), or fine-tune from a {chosen} run or "
                        f"a {chosen} state_dict file.")


def _model_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [o for o in HydraConfig.get().overrides.task if o.lstrip("+~").startswith("model.") and "=" in o]


def source_state(source: Source) -> dict[str, torch.Tensor]:
    """The source's tensors by model key: a Lightning checkpoint's ``model.`` prefix removed. Sets
    ``source.plain`` (a state_dict file such as torchvision's, not a run or checkpoint of ours)."""
    checkpoint = runs.load_checkpoint(source.file)
    source.plain = source.run_dir is None and "pytorch-lightning_version" not in checkpoint
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict):
        raise UserError("finetune.from", str(source.file), "holds no state_dict.", SOURCE_FIX)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if source.run_dir is not None or any(k.startswith("model.") for k in tensors):
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    if not tensors:
        raise UserError("finetune.from", str(source.file), "holds no weights.", SOURCE_FIX)
    return tensors


# --- the surgery -------------------------------------------------------------------------------------
class FromLayer(ClassifierMixin):
    """A network cut after one of its layers: the kept layers (``body``, a ``torch.fx`` graph of the
    original modules under their original names), global average pooling and a new linear classifier.
    It has the zoo's model interface (:mod:`models.interface`), so the analyses find its layers."""

    classifier_name = "fc"
    feature_module_name = "body"

    def __init__(self, body: nn.Module, features: int, num_classes: int, pool: bool, kept: list[str]) -> None:
        super().__init__()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(1) if pool else nn.Identity()
        self.fc = nn.Linear(features, num_classes)
        self.kept = list(kept)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = torch.flatten(self.pool(features), 1)
        return pooled if pre_logits else self.fc(pooled)

    def summary_modules(self) -> list[tuple[str, nn.Module]]:
        """Profile rows (``experiments.summary``, ``summary.json``): the kept stages, the pool, the classifier."""
        rows = [(f"body.{name}", self.body.get_submodule(name)) for name in self.kept]
        return [*rows, ("pool", self.pool), ("fc", self.fc)]


@dataclass
class Transfer:
    """The model to fine-tune and what :func:`load_source_weights` and the optimizer need to know."""

    model: nn.Module
    strategy: str
    stages: list[str]                 # the source network's stage names, in forward order (the head last)
    trained: list[str]                # the stages that train (the new head included)
    head_prefixes: tuple[str, ...]    # modules of the new head: their weights never come from the source
    source_prefix: str = ""           # from_layer: the kept layers sit under body. with their source names
    lr_scales: dict[str, float] = field(default_factory=dict)  # trainable parameter -> lr multiplier
    first_conv: str | None = None     # key of the first weight (names the channel count in errors)

    def source_key(self, key: str) -> str | None:
        if self.source_prefix:
            return key[len(self.source_prefix):] if key.startswith(self.source_prefix) else None
        return key

    def is_head(self, key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in self.head_prefixes)


def is_frozen_norm(module: nn.Module) -> bool:
    """A normalisation layer with running statistics whose parameters are all frozen."""
    if not isinstance(module, nn.modules.batchnorm._NormBase):
        return False
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


def _stay_in_eval(module: nn.Module, _inputs: Any) -> None:
    module.training = False


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """Frozen BatchNorms run in eval mode whoever calls ``.train()`` (Lightning, a callback's probe):
    a forward pre-hook puts them back in eval mode before every forward, so their running statistics
    never change. (``ClassificationModule.train`` also keeps their flag right between forwards.)"""
    for module in model.modules():
        if is_frozen_norm(module):
            module.register_forward_pre_hook(_stay_in_eval)


def _stage_error(key: str, value: Any, problem: str, names: list[str]) -> UserError:
    listed = ", ".join(names) if names else "(none)"
    return UserError(key, value, problem, f"Valid layers, in forward order: {listed}.")


def apply_transfer(model: nn.Module, cfg: DictConfig, input_shape: tuple[int, int, int],
                   num_classes: int) -> Transfer:
    """Cut (``from_layer``) and freeze ``model`` as ``finetune.strategy`` says; see the module docstring."""
    from models.stages import split_head, stages_of

    node = settings(cfg)
    strategy = str(node.get("strategy", "full"))
    name = type(model).__name__
    stages = stages_of(model, input_shape)
    try:
        backbone, head = split_head(stages, num_classes)
    except ValueError as error:
        raise UserError("finetune.from", node.get("from"), f"cannot be used with {name}: {error}.",
                        "Fine-tune a classifier whose last layer produces the logits.") from None
    names = [s.name for s in backbone]
    scale = float(node.get("backbone_lr_scale", 0.1))
    first = next(iter(model.state_dict()), None)
    if strategy == "from_layer":
        layer = node.get("layer")
        index = _layer_index(layer, backbone, name)
        return _cut_after(model, stages, index, input_shape, num_classes, strategy, first)
    if strategy == "last_k":
        k = int(node.get("k", 1))
        if not 1 <= k <= len(backbone):
            raise _stage_error("finetune.k", k, f"must be between 1 and the {len(backbone)} stages of {name} before "
                               "its head.", names)
        trained_backbone = backbone[len(backbone) - k:]
    elif strategy == "head":
        trained_backbone = []
    else:
        trained_backbone = backbone
    scales = {n: 1.0 for n in head.parameter_names()}
    if strategy == "full":
        scales.update({n: scale for n, _ in model.named_parameters() if n not in scales})
    else:
        scales.update({n: scale for stage in trained_backbone for n in stage.parameter_names()})
    for param_name, param in model.named_parameters():
        param.requires_grad_(param_name in scales)
    keep_frozen_norms_in_eval(model)
    return Transfer(model=model, strategy=strategy, stages=[s.name for s in stages],
                    trained=[s.name for s in trained_backbone] + [head.name], head_prefixes=head.members,
                    lr_scales=scales, first_conv=first)


def _layer_index(layer: Any, backbone: list, model_name: str) -> int:
    names = [s.name for s in backbone]
    if layer is None:
        raise _stage_error("finetune.layer", None, f"must name the layer of {model_name} to cut after "
                           "(finetune.strategy=from_layer).", names)
    for index, stage in enumerate(backbone):
        if layer == stage.name or layer in stage.members:
            return index
    raise _stage_error("finetune.layer", layer, f"is not a layer of {model_name} before its head.", names)


def _cut_after(model: nn.Module, stages: list, index: int, input_shape: tuple[int, int, int], num_classes: int,
               strategy: str, first: str | None) -> Transfer:
    """``FromLayer``: the graph of ``model`` up to the input of stage ``index + 1``, then GAP and a new FC."""
    import torch.fx

    leaves = {member for stage in stages for member in stage.members}

    class StageTracer(torch.fx.Tracer):
        def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
            return qualified_name in leaves or super().is_leaf_module(module, qualified_name)

    was_training = model.training
    model.eval()  # trace the inference path (no auxiliary heads, no training-only branches)
    try:
        graph = StageTracer().trace(model)
    except Exception as error:
        raise UserError("finetune.strategy", strategy, f"cannot cut {type(model).__name__}: its forward pass is "
                        f"not traceable by torch.fx ({' '.join(str(error).split())[:200]}).",
                        "Use finetune.strategy=head or last_k for this model.") from None
    finally:
        model.train(was_training)
    following = set(stages[index + 1].members)
    start = next(n for n in graph.nodes if n.op == "call_module" and n.target in following)
    cut = start.args[0]
    # The feature map, not its flattened copy: step back over flatten/view/dropout/identity.
    while _is_passthrough(cut, model):
        cut = cut.args[0]
    needed, todo = set(), [cut]  # the nodes the cut's output depends on
    while todo:
        node = todo.pop()
        if node not in needed:
            needed.add(node)
            todo.extend(node.all_input_nodes)
    kept = torch.fx.Graph()
    copies: dict = {}
    for node in graph.nodes:
        if node in needed:
            copies[node] = kept.node_copy(node, lambda n: copies[n])
    kept.output(copies[cut])
    body = torch.fx.GraphModule(model, kept)
    for param in body.parameters():
        param.requires_grad_(False)
    keep_frozen_norms_in_eval(body)
    parameter = next(model.parameters())
    with torch.no_grad():
        body.eval()
        features = body(torch.zeros(1, *input_shape, device=parameter.device, dtype=parameter.dtype))
        body.train(was_training)
    pool = features.ndim == 4
    width = features.shape[1] if features.ndim in (2, 4) else int(features[0].numel())
    kept_stages = [member for stage in stages[: index + 1] for member in stage.members]
    transfer_model = FromLayer(body, int(width), num_classes, pool, kept_stages)
    transfer_model.to(device=parameter.device, dtype=parameter.dtype)
    transfer_model.train(was_training)
    return Transfer(model=transfer_model, strategy=strategy, stages=[s.name for s in stages], trained=["fc"],
                    head_prefixes=("fc",), source_prefix="body.",
                    lr_scales={n: 1.0 for n, _ in transfer_model.fc.named_parameters(prefix="fc")},
                    first_conv=f"body.{first}" if first else None)


def _is_passthrough(node, model: nn.Module) -> bool:
    """A node that only reshapes or (at inference) copies its input: flatten, view, dropout, identity."""
    if not node.args or not hasattr(node.args[0], "op"):
        return False
    if node.op == "call_module":
        return isinstance(model.get_submodule(node.target), (nn.Flatten, nn.Identity, nn.Dropout))
    if node.op == "call_function":
        return node.target in (torch.flatten, torch.reshape)
    return node.op == "call_method" and node.target in ("flatten", "view", "reshape")


# --- the weights ---------------------------------------------------------------------------------------
def load_source_weights(transfer: Transfer, cfg: DictConfig, source: Source | None = None) -> dict[str, Any]:
    """Copy the source's weights into ``transfer.model`` (the head stays fresh); returns a record for
    ``summary.json``. Any weight of the transfer model missing from the source, or of another shape, is
    one paragraph naming ``finetune.from``, the key, both shapes and the fix."""
    node = settings(cfg)
    source = source or resolve_source(cfg)
    state = source_state(source)
    own = transfer.model.state_dict()
    reset_head = bool(node.get("reset_head", True))
    merged, copied = dict(own), 0
    for key, value in own.items():
        if transfer.is_head(key) and (reset_head or transfer.source_prefix):
            continue
        source_key = transfer.source_key(key)
        if source_key not in state:
            if key.endswith("num_batches_tracked"):
                continue  # older torchvision files have none
            raise _missing_key(cfg, source, key, source_key, state)
        if tuple(state[source_key].shape) != tuple(value.shape):
            raise _shape_error(cfg, source, transfer, key, source_key, tuple(state[source_key].shape),
                               tuple(value.shape))
        merged[key] = state[source_key].to(dtype=value.dtype)
        copied += 1
    if source.plain:
        _refuse_torchvision_lookalike(cfg, source, transfer.model)
    transfer.model.load_state_dict(merged)
    return {"from": str(node.get("from")), "checkpoint": str(source.file.resolve()), "strategy": transfer.strategy,
            "trained_stages": transfer.trained, "copied_tensors": copied,
            "source_model": _source_model_name(source)}


def _refuse_torchvision_lookalike(cfg: DictConfig, source: Source, model: nn.Module) -> None:
    """A plain file that fits ``model`` key for key may still be torchvision's weights of another network
    (``models.torchvision_twins``): refuse rather than fine-tune wrong features without a word."""
    from models.torchvision_twins import torchvision_variant_problem

    found = torchvision_variant_problem(model)
    if found is not None:
        raise UserError("finetune.from", str(settings(cfg).get("from")), "is a plain state_dict file (such as "
                        f"torchvision's weights), and {found.problem}", found.fix)


def _source_model_name(source: Source) -> str | None:
    if source.run_dir is None:
        return None
    name = runs.RunFolder(source.run_dir, key="finetune.from").summary().get("model_name")
    return name or OmegaConf.select(source.config, "model._target_", default=None)


def _missing_key(cfg: DictConfig, source: Source, key: str, source_key: str, state: dict) -> UserError:
    model = OmegaConf.select(cfg, "model._target_", default="?")
    if source.run_dir is None:
        fix = (f"Choose the model the file was saved from (model=...; now {model}); its keys look like "
               f"{next(iter(state))!r}.")
    else:
        fix = "Fine-tune from a run of the same architecture (the run's config.yaml decides it)."
    return UserError("finetune.from", str(settings(cfg).get("from")), f"does not hold the weights of this "
                     f"model: {source_key!r} is missing from {source.file.name} ({len(state)} tensors).", fix)


def _shape_error(cfg: DictConfig, source: Source, transfer: Transfer, key: str, source_key: str,
                 theirs: tuple, ours: tuple) -> UserError:
    problem = (f"the source's {source_key} is {theirs} but the transfer model needs {ours} "
               f"({source.file.name}).")
    source_data = source.config.get("data") if source.config is not None else None
    if transfer.is_head(key):
        fix = "Set finetune.reset_head=true to give the new classes a fresh classifier."
    elif key == transfer.first_conv and len(theirs) > 1 and len(ours) > 1 and theirs[1] != ours[1]:
        fix = (f"The source was trained on {theirs[1]}-channel images and data.in_channels is {ours[1]}: "
               f"fine-tune on {theirs[1]}-channel data (data.in_channels={theirs[1]} with {theirs[1]} data.mean/std "
               f"values), or from a source trained on {ours[1]}-channel images.")
    elif source_data is not None and source_data.get("image_size") != cfg.data.get("image_size"):
        fix = (f"The source was trained at data.image_size={source_data.get('image_size')} and this run uses "
               f"{cfg.data.get('image_size')}, which changes the size of its fully connected layers: set "
               f"data.image_size={source_data.get('image_size')}.")
    else:
        fix = "Fine-tune with the architecture the source was trained with (same model config and data shape)."
    return UserError("finetune.from", str(settings(cfg).get("from")), problem, fix)
