"""The stages of any network in the zoo, in forward order: what transfer learning freezes, trains or cuts.

A *stage* is a unit of the network with parameters, found the same way for every family:

1. the top-level children of the model, with a plain ``nn.Sequential`` child (``features``,
   ``classifier``) expanded one level (``features.0``, ``features.3``, ...), so a VGG or LeNet has one
   stage per conv or FC layer and a ResNet one per residual stage (``layer1`` ... ``layer4``; its
   stages are ``nn.Sequential`` subclasses and stay whole);
2. only units with parameters that run in an eval-mode forward pass, ordered by when they run
   (GoogLeNet's training-only auxiliary heads and Inception v3's ``AuxLogits`` drop out);
3. a unit with nothing but normalisation layers (the BatchNorm after a conv, DenseNet's ``norm5``,
   pre-activation ResNets' ``final_bn``) is merged into the unit before it (or, when it comes first,
   into the one after it);
4. the last stage is the head: the layer that produces the logits (a Linear, or SqueezeNet's 1x1 conv).

The head comes from the model interface (:func:`models.interface.classifier_module`, every zoo model
has it): the unit holding the final classifier layer. The backbone is what computes the vector that
enters it, so its units are ordered by one pass of ``forward_head(forward_features(x), pre_logits=True)``
(the head's unit is left out of that pass even when it holds more than the classifier layer). A model
from outside the zoo without the interface falls back to tracing the whole forward pass and taking the
last unit that runs as the head.

The order comes from forward pre-hooks during one pass of a single zero image (on the model's own
device, so a model on the meta device costs nothing); the model's train/eval mode is restored
afterwards and no buffer changes (eval mode).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from models.interface import classifier_module

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


@dataclass(frozen=True)
class Stage:
    """One stage: its name (the first non-norm member), its module(s) and the qualified member names.

    Unpacks as ``(name, module)``; ``module`` is the unit itself, or an ``nn.ModuleList`` of the merged
    units (they stay registered where they are in the model: the list only refers to them).
    """

    name: str
    module: nn.Module
    members: tuple[str, ...]

    def __iter__(self) -> Iterator:
        return iter((self.name, self.module))

    def parameter_names(self) -> list[str]:
        """Qualified names (as in ``model.named_parameters()``) of this stage's parameters."""
        return [f"{member}.{name}" for member, module in zip(self.members, self.modules())
                for name, _ in module.named_parameters()]

    def modules(self) -> list[nn.Module]:
        return list(self.module) if len(self.members) > 1 else [self.module]


def candidate_units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level children, plain ``nn.Sequential`` ones expanded one level, in registration order."""
    units = []
    for name, child in model.named_children():
        if type(child) is nn.Sequential:
            units.extend((f"{name}.{sub}", grandchild) for sub, grandchild in child.named_children())
        else:
            units.append((name, child))
    return units


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _norm_only(module: nn.Module) -> bool:
    parameterised = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    return bool(parameterised) and all(isinstance(m, NORM_TYPES) for m in parameterised)


def _first_parameter(model: nn.Module) -> torch.Tensor:
    return next(iter(model.parameters()))


def infer_input_shape(model: nn.Module) -> tuple[int, int, int]:
    """A guess when no input shape is given: the first conv's (or linear's) channels at 32x32."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels, 32, 32
        if isinstance(module, nn.Linear):
            raise ValueError("stages_of needs input_shape=(C, H, W) for a model that starts with a Linear layer")
    raise ValueError("stages_of needs input_shape=(C, H, W): the model has no Conv2d to infer it from")


def forward_order(model: nn.Module, units: list[tuple[str, nn.Module]], input_shape: tuple[int, int, int],
                  run: Callable[[torch.Tensor], object] | None = None) -> list[str]:
    """Names of ``units`` that run in an eval-mode pass of one zero image through ``run`` (default: the
    model's forward), in the order they run."""
    order: list[str] = []
    handles = []
    for name, unit in units:
        def record(_module, _inputs, name=name):
            if name not in order:
                order.append(name)
        handles.append(unit.register_forward_pre_hook(record))
    parameter = _first_parameter(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            (run or model)(torch.zeros(1, *input_shape, device=parameter.device, dtype=parameter.dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return order


def stages_of(model: nn.Module, input_shape: tuple[int, int, int] | None = None) -> list[Stage]:
    """The model's stages in forward order; the last one is the head. See the module docstring."""
    if input_shape is None:
        input_shape = infer_input_shape(model)
    units = [(name, unit) for name, unit in candidate_units(model) if _has_parameters(unit)]
    by_name = dict(units)
    ran = _backbone_then_head(model, units, tuple(input_shape)) or forward_order(model, units, tuple(input_shape))
    groups: list[list[str]] = []
    pending: list[str] = []  # norm-only units before any other unit
    for name in ran:
        if _norm_only(by_name[name]):
            if groups:
                groups[-1].append(name)
            else:
                pending.append(name)
            continue
        groups.append([*pending, name])
        pending = []
    if pending:  # a network of nothing but norm layers: one stage
        groups.append(pending)
    stages = []
    for members in groups:
        primary = next((m for m in members if not _norm_only(by_name[m])), members[0])
        module = by_name[members[0]] if len(members) == 1 else nn.ModuleList(by_name[m] for m in members)
        stages.append(Stage(primary, module, tuple(members)))
    return stages


def _unit_holding(units: list[tuple[str, nn.Module]], layer_name: str) -> str | None:
    return next((name for name, _ in units if layer_name == name or layer_name.startswith(f"{name}.")), None)


def _backbone_then_head(model: nn.Module, units: list[tuple[str, nn.Module]],
                        input_shape: tuple[int, int, int]) -> list[str] | None:
    """Units in forward order with the interface's classifier unit last, or None without the interface."""
    found = classifier_module(model)
    head = _unit_holding(units, found[0]) if found is not None else None
    if head is None:
        return None
    backbone = [(name, unit) for name, unit in units if name != head]

    def pre_logits(x: torch.Tensor) -> torch.Tensor:
        return model.forward_head(model.forward_features(x), pre_logits=True)

    return [*forward_order(model, backbone, input_shape, pre_logits), head]


def head_output_size(stage: Stage) -> int | None:
    """Outputs of the head's last Linear or Conv2d (its logits), or None when it has neither."""
    layers = [m for module in stage.modules() for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        return None
    last = layers[-1]
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels


def split_head(stages: list[Stage], num_classes: int | None = None) -> tuple[list[Stage], Stage]:
    """(backbone stages, head); with ``num_classes``, check the head really produces the logits."""
    if not stages:
        raise ValueError("the model has no layer with parameters, so it has no head to replace")
    head = stages[-1]
    if num_classes is not None:
        size = head_output_size(head)
        if size != num_classes:
            raise ValueError(f"the last stage {head.name!r} produces {size} outputs, not the {num_classes} "
                             "logits of a classifier head")
    return stages[:-1], head
