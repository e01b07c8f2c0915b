"""Every config key has a declared type; a value that does not fit is refused before anything runs.

The declarations live in two places only:

* a node with ``_target_`` is declared by its target's signature: the type hints of the model,
  datamodule, optimizer, scheduler, Trainer, callback, logger or analysis function it builds. A key
  that is not an argument (and the target takes no ``**kwargs``) is a typo;
* every other key is declared in :data:`DECLARED` below (keys our code reads itself: ``seed``,
  ``module.*``, ``finetune.*``, the optimizer's and scheduler's own keys, a model's ``paper`` figures).

``tests/experiments/test_schema.py`` composes every option of every config group and checks that no
key is left undeclared, so a new key cannot be added without its type.

Why not Hydra structured configs: the model group alone has 15 families with their own arguments, and
their constructors already state the types; a second copy in dataclasses would drift. What Hydra's
typed nodes give (``hflip=off`` read as a string is refused for a ``bool``; ``optimizer.lr=inf`` is
refused for every float, as no setting here means anything at infinity) this module gives too.
Ranges (a positive learning rate, ...) stay with the code that knows them (:mod:`.validation`, the
constructors).
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import math
import types
import typing
from typing import Annotated, Any, Literal, Union

from annotated_types import Ge, Gt, Le, Lt
from omegaconf import DictConfig, ListConfig, OmegaConf

from experiments.core.errors import UserError

ANY = Any
# Keys that no constructor receives: our code reads them (path -> type hint). ``*`` matches one key.
DECLARED: dict[str, Any] = {
    "seed": int,
    "resume": bool | str,
    "quiet": bool,
    "compile": bool,
    "host_allocator": Literal["reuse", "system"],
    "optimized_metric": str,
    "run_name": str,
    "paths.output_root": str,
    "paths.run_dir": str,
    "module.label_smoothing": Annotated[float, Ge(0), Lt(1)],
    "module.aux_loss_weights": list[Annotated[float, Ge(0)]],
    "module.adversarial": Literal["fgsm", "pgd"] | None,
    "module.adversarial_epsilon": Annotated[float, Ge(0), Le(1)],
    "module.adversarial_steps": Annotated[int, Ge(1)],
    "module.adversarial_weight": Annotated[float, Ge(0), Le(1)],
    "finetune.from": str | None,
    "finetune.strategy": str,
    "finetune.k": Annotated[int, Ge(1)],
    "finetune.layer": str | None,
    "finetune.backbone_lr_scale": Annotated[float, Gt(0)],
    "finetune.reset_head": bool,
    "finetune.ckpt": str,
    # read by experiments.training.optim, never passed to torch
    "optimizer.exclude_norm_and_bias": bool,
    "scheduler.unit": Literal["epoch", "step", "fraction"],
    "scheduler.warmup_steps": Annotated[int, Ge(0)],
    "scheduler.warmup_factor": Annotated[float, Gt(0), Le(1)],
    "scheduler.warmup_mode": Literal["constant", "linear"],
    "scheduler.monitor": str,
    # lengths of time in `scheduler.unit` (fractions of training, epochs or steps), converted to steps
    "scheduler.step_size": int | float,
    "scheduler.milestones": list[int | float],
    "scheduler.T_max": int | float | None,
    "scheduler.total_iters": int | float,
    "scheduler.T_0": int | float,
    # read by experiments.training.build and models.profile, never passed to the model
    "model.channels_last": bool,
    "model.paper": dict,
    "model.paper.*": int | float | str | None,
    # the published ImageNet top-1 error (%, one model) that places a model on `summary --map`, and the
    # number of test crops behind it when the paper gives no single-crop figure (1 when absent)
    "model.paper.top1_err": Annotated[float, Gt(0), Lt(100)],
    "model.paper.top1_crops": Annotated[int, Ge(1)],
    # the in-memory datamodules' BatchPipeline and the image folder's scale augmentation
    "data.augment": dict | None,
    "data.augment.crop_padding": int,
    "data.augment.hflip": bool,
    "data.augment.color_jitter": float,
    "data.augment.scale": list[int],
    "data.augment.rotation": float,
    "data.augment.translate": float,
    "data.augment.color_cast": float,
    # a callback or logger set to null is switched off (each entry is otherwise a target node)
    "callbacks.*": None.__class__,
    "logger.*": None.__class__,
    # conf/analyze.yaml's own keys (experiments.analyze)
    "ckpt": str,
    "dashboards": bool,
    # a study's description of its variants (experiment/depth_vs_width), read by its sweep
    "study": ANY,
}
_NODE_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def check(cfg: DictConfig) -> None:
    """Refuse the first value that does not fit its declared type (one paragraph: key, value, fix)."""
    for key, value, hint, problem in _walk(cfg):
        if problem == "undeclared":
            continue  # a key nobody declared is the test suite's business, not the user's
        raise UserError(key, value, problem, _fix(key, hint))


def check_keys(cfg: DictConfig, keys: list[str]) -> None:
    """:func:`check` for ``keys`` and the keys under them only: a saved run's other keys were checked
    when it trained (by the rules of that day), and an evaluation must not trip over them."""
    for key, value, hint, problem in _walk(cfg):
        if problem != "undeclared" and any(key == k or key.startswith(k + ".") for k in keys):
            raise UserError(key, value, problem, _fix(key, hint))


def undeclared_keys(cfg: DictConfig) -> list[str]:
    """Keys of ``cfg`` that neither a target's signature nor :data:`DECLARED` gives a type."""
    return [key for key, _, _, problem in _walk(cfg) if problem == "undeclared"]


def _fix(key: str, hint: Any) -> str:
    if hint is None:
        return "Remove it, or check its spelling against `python -m experiments.train --cfg job`."
    if hint is bool:
        return f"Use {key}=true or {key}=false."
    return f"Use a value of type {describe(hint)} (python -m experiments.train --cfg job shows the defaults)."


def describe(hint: Any) -> str:
    """A type hint in words a user reads: ``int``, ``list of float``, ``one of epoch, step``, ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "null (or a callback/logger node with _target_)"
    if origin is typing.Annotated:
        bounds = [f"{text} {getattr(b, name)}" for b in args[1:] for name, text in
                  (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if getattr(b, name, None) is not None]
        return " ".join([describe(args[0]), " and ".join(bounds)]).strip()
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else "")
    if origin in (list, tuple, collections.abc.Sequence):
        return f"list of {describe(args[0])}" if args else "list"
    return getattr(hint, "__name__", str(hint))


# --- walking the config ---------------------------------------------------------------------------------
def _walk(cfg: DictConfig, prefix: str = "", hints: dict[str, Any] | None = None, closed: bool = False):
    """(key, value, hint, problem or None) for every leaf. ``hints`` are the enclosing target's arguments
    (None outside any target: then only :data:`DECLARED` gives types); ``closed``: it takes no ``**kwargs``."""
    for name in list(cfg):
        name = str(name)
        if name in _NODE_KEYS or (not prefix and name == "hydra"):
            continue
        key = f"{prefix}{name}"
        node = cfg._get_node(name)
        hint = _declared(key)
        if hint is None and hints is not None:
            hint = hints.get(name)
        if hint is ANY:
            continue  # declared free-form: its reader checks it
        if OmegaConf.is_interpolation(cfg, name):
            try:
                resolved = cfg[name]  # a whole node picked by interpolation (experiment=optimizers)
            except Exception:
                resolved = None  # resolves only inside a run (${hydra:...}): checked there
            if isinstance(resolved, DictConfig):
                node = resolved
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
            target = node.get("_target_") if "_target_" in node else None
            if isinstance(target, str):
                signature = target_hints(target)
                if signature is not None:  # (a target that cannot be imported is Hydra's error, at build time)
                    yield from _walk(node, key + ".", *signature)
            elif hints is not None and hint is None and closed:
                yield key, _value(node), None, "is not an argument of this target: a misspelt key?"
            else:
                yield from _walk(node, key + ".")
            continue
        if hint is None:
            if hints is None:
                yield key, _value(node), None, "undeclared"
            elif closed:
                yield key, _value(node), None, "is not an argument of this target: a misspelt key?"
            continue
        problem = _misfit(node, hint)
        if problem:
            yield key, _value(node), hint, problem


def _declared(key: str) -> Any:
    if key in DECLARED:
        return DECLARED[key]
    parent, _, _ = key.rpartition(".")
    return DECLARED.get(f"{parent}.*") if parent else None


def _value(node: Any) -> Any:
    """The node's value for an error message (resolved where possible)."""
    try:
        if isinstance(node, (DictConfig, ListConfig)):
            return OmegaConf.to_container(node, resolve=True)
        return node._get_parent()[node._key()]
    except Exception:
        return node._value()


def _misfit(node: Any, hint: Any) -> str | None:
    """Why the node's value does not fit ``hint`` (None when it fits, or when it cannot be told yet)."""
    parent, key = node._get_parent(), node._key()
    interpolated = OmegaConf.is_interpolation(parent, key)
    try:
        value = OmegaConf.to_container(node, resolve=True) if isinstance(node, ListConfig) else parent[key]
        if isinstance(value, (ListConfig, DictConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except Exception:
        return None  # an interpolation that only resolves inside a run (${hydra:...}): checked there
    if OmegaConf.is_missing(parent, key) or (value is None and interpolated):
        return None  # ??? is Hydra's own error; an interpolated None is filled later (num_classes from data)
    if _has_non_finite(value):
        return "must be a finite number."
    base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
    if not fits(value, base):
        return f"is not {describe(base)}."
    return out_of_range(value, hint) or (None if fits(value, hint) else f"is not {describe(hint)}.")


def out_of_range(value: Any, hint: Any) -> str | None:
    """The bound an ``Annotated[T, Ge(0)]``-style hint (annotated_types) puts on a value, when broken."""
    if typing.get_origin(hint) is not typing.Annotated or not isinstance(value, (int, float)):
        return None
    for bound in typing.get_args(hint)[1:]:
        for name, text, holds in (("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
                                  ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b)):
            limit = getattr(bound, name, None)
            if limit is not None and not holds(value, limit):
                return f"must be {text} {limit}."
    return None


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


def fits(value: Any, hint: Any) -> bool:
    """Whether a plain config value fits a type hint; a hint that cannot be judged here fits."""
    if hint in (Any, inspect.Parameter.empty, object) or isinstance(hint, (str, typing.TypeVar)):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return fits(value, args[0]) and out_of_range(value, hint) is None
    if origin in (Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint in (dict, collections.abc.Mapping) or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    if hint in (list, tuple, collections.abc.Sequence) or origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        items = [a for a in args if a is not Ellipsis]
        if origin is tuple and len(items) > 1 and Ellipsis not in args:
            return len(value) == len(items) and all(fits(v, a) for v, a in zip(value, items))
        return not items or all(fits(v, items[0]) for v in value)
    return True  # a class, a callable, a tensor: the constructor judges it


@functools.cache
def target_hints(target: str) -> tuple[dict[str, Any], bool] | None:
    """(argument -> type hint, whether other keys are refused) of a ``_target_``, or None if unknown.

    A class whose ``__init__`` passes ``**kwargs`` on (``super().__init__(**kwargs)``) takes its base
    classes' arguments too: their hints are gathered along the MRO until an ``__init__`` without
    ``**kwargs`` closes the list."""
    from hydra._internal.utils import _locate

    try:
        factory = _locate(target)
    except Exception:
        return None
    functions = [c.__init__ for c in factory.__mro__ if "__init__" in vars(c) and c is not object] \
        if inspect.isclass(factory) else [factory]
    hints: dict[str, Any] = {}
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):
            return None
        try:
            resolved = typing.get_type_hints(function, include_extras=True)
        except Exception:  # a hint that names something its module does not import at run time
            resolved = {}
        for name, parameter in parameters.items():
            if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                hints.setdefault(name, resolved.get(name, parameter.annotation))
        if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            return hints, True
    return hints, False
