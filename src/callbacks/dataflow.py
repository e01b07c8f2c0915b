"""Which tensor flows into which: the data-flow graph of one forward pass, and what it says about layers.

Module hooks see the leaf modules but not the tensor operations written in ``forward`` code between
them: the residual addition ``out + shortcut``, ``torch.cat`` of inception branches or dense layers,
a flatten. Without those, a probe can only go by execution order, and execution order puts a
projection shortcut's 1x1 conv between the residual branch's last conv and the ReLU after the
addition (torchvision and our ResNets compute the branch, then ``downsample``, then add): the branch
conv then looks as if no activation followed it. :class:`Recorder` adds the missing edges by
recording every torch function called outside a leaf module (a ``TorchFunctionMode``: PyTorch's own
mechanism for seeing ``+``, ``add_``, ``cat``, indexing; no library derives a data-flow graph from
hooks for us, so the walk over it in :func:`first_activations` is written here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode


@dataclass(frozen=True)
class Step:
    """One module call or one tensor operation of a forward pass: which tensors (by id) it read and wrote.

    ``module`` is ``None`` for a tensor operation (then ``name`` is the function's name); ``index`` counts
    earlier calls of the same module in the pass.
    """

    name: str
    module: nn.Module | None
    index: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def tensor_ids(value: Any) -> tuple[int, ...]:
    """Ids of the tensors in ``value`` (a tensor, or lists/tuples/dicts of them, as ``cat`` takes)."""
    if isinstance(value, torch.Tensor):
        return (id(value),)
    if isinstance(value, (list, tuple)):
        return tuple(i for item in value for i in tensor_ids(item))
    if isinstance(value, dict):
        return tuple(i for item in value.values() for i in tensor_ids(item))
    return ()


class Recorder(TorchFunctionMode):
    """Records every torch function called while active, except inside a leaf module (the module's own
    call stands for it: :meth:`enter` / :meth:`leave` bracket it). Results are kept alive until the
    recorder is dropped, so no id is reused by a later tensor."""

    def __init__(self, steps: list[Step], keep: list[Any]) -> None:
        super().__init__()
        self.steps, self.keep = steps, keep
        self.depth = 0

    def enter(self) -> None:
        self.depth += 1

    def leave(self) -> None:
        self.depth -= 1

    def __torch_function__(self, func: Callable, types: Iterable[type], args: tuple = (), kwargs: dict | None = None
                           ) -> Any:
        result = func(*args, **(kwargs or {}))
        outputs = tensor_ids(result)
        if self.depth == 0 and outputs:
            self.keep.append(result)
            inputs = tensor_ids(args) + tensor_ids(kwargs or {})
            self.steps.append(Step(getattr(func, "__name__", str(func)), None, 0, inputs, outputs))
        return result


def first_activations(steps: list[Step], is_weighted: Callable[[nn.Module], bool],
                      is_activation: Callable[[nn.Module], bool]) -> tuple[dict[str, tuple[str, int]], dict[str, int]]:
    """For each weighted layer, the first activation call its output reaches, and each layer's depth.

    The output is followed through every module and operation that is not itself a weighted layer
    (BN, pooling, dropout, the residual addition, concatenation) up to the first activation call that
    reads it; a weighted layer ends the path (what follows belongs to that layer). A layer whose
    output meets no activation is absent from the first dict. Only a layer's first call opens a path.
    Depth is the number of weighted layers on the longest path from the input to the layer (a
    residual branch's last conv is deeper than the projection beside it).
    """
    open_layers: dict[int, frozenset[str]] = {}  # tensor id -> layers whose un-activated output it carries
    depth_of: dict[int, int] = {}
    reached: dict[str, tuple[str, int]] = {}
    depth: dict[str, int] = {}
    for step in steps:
        carried = frozenset().union(*(open_layers.get(i, frozenset()) for i in step.inputs))
        level = max((depth_of.get(i, 0) for i in step.inputs), default=0)
        module = step.module
        if module is not None and is_weighted(module):
            level += 1
            carried = frozenset() if step.name in depth else frozenset({step.name})
            depth.setdefault(step.name, level)
        elif module is not None and is_activation(module):
            for layer in carried:
                reached.setdefault(layer, (step.name, step.index))
            carried = frozenset()
        for output in step.outputs:  # an in-place step writes the tensor it read: its id now carries this
            open_layers[output], depth_of[output] = carried, level
    return reached, depth
