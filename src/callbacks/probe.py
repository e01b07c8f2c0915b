"""A fixed probe batch and one traced forward pass: what the layer-inspecting callbacks share.

The probe is the first ``size`` validation images, taken once and transformed exactly as validation
batches are (no augmentation), so numbers from different epochs describe the same inputs. The trace
runs the probe once with a hook on every leaf module and records the order in which modules run and
which tensor each one consumed and produced; the callbacks read the network's structure off it
(which activation follows which conv, which BatchNorm normalises a 3x3 conv's output) instead of
guessing from module names. Hooks of the trace are removed before it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from callbacks import dataflow

if TYPE_CHECKING:
    import pytorch_lightning as pl

# Rectifier-like units are "off" (zero, or on their small negative branch) for x < 0, so a unit that is
# never positive is dead; saturating units squash both tails flat, so the question there is saturation.
RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
              nn.SiLU, nn.Mish, nn.Hardswish)
SATURATING = (nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardsigmoid, nn.Softsign)
ACTIVATIONS = (*RECTIFIERS, *SATURATING, nn.Softplus, nn.Tanhshrink)
WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def plain_model(pl_module: pl.LightningModule) -> nn.Module:
    """The network itself (``ClassificationModule.model``), or the LightningModule when it has none."""
    model = getattr(pl_module, "model", None)
    return model if isinstance(model, nn.Module) else pl_module


def take_probe_batch(trainer: pl.Trainer, pl_module: pl.LightningModule, size: int
                     ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The first ``size`` validation examples (training ones when there is no validation set), on the
    module's device, normalised as in validation; ``None`` when no data can be found."""
    loader = _first_loader(trainer)
    if loader is None:
        return None
    images, labels = [], []
    taken = 0
    for batch in loader:
        x, y = batch[0], batch[1]
        images.append(x[: size - taken])
        labels.append(y[: size - taken])
        taken += len(images[-1])
        if taken >= size:
            break
    if not images:
        return None
    x, y = torch.cat(images), torch.cat(labels)
    datamodule = trainer.datamodule
    if datamodule is not None and hasattr(datamodule, "transform_batch"):
        x = datamodule.transform_batch(x.to(pl_module.device), train=False)
        y = y.to(pl_module.device)
    else:  # Lightning's own transfer hooks (may augment when the datamodule does so in training)
        x, y = trainer.strategy.batch_to_device((x, y))[:2]
    return x.detach(), y.detach()


def _first_loader(trainer: pl.Trainer):
    datamodule = trainer.datamodule
    for name in ("val_dataloader", "train_dataloader"):
        if datamodule is not None:
            try:
                loader = getattr(datamodule, name)()
            except Exception:  # a datamodule without that split
                loader = None
        else:
            loader = trainer.val_dataloaders if name == "val_dataloader" else trainer.train_dataloader
        if isinstance(loader, (list, tuple)):
            loader = loader[0] if loader else None
        if loader is not None:
            return loader
    return None


@contextmanager
def evaluation(model: nn.Module) -> Iterator[None]:
    """Eval mode (BN running stats, no dropout) and no autograd for a probe; restores the mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def forward(model: nn.Module, x: torch.Tensor) -> Any:
    """Run ``model`` eagerly: a ``model.compile()``-d module would not fire hooks reliably."""
    if getattr(model, "_compiled_call_impl", None) is not None:
        return model._call_impl(x)
    return model(x)


@contextmanager
def hooks(modules: dict[str, nn.Module], hook: Callable[[str, nn.Module, tuple, Any], None]) -> Iterator[None]:
    """Forward hooks on ``modules`` (name -> module) for the duration of the block, removed afterwards."""
    def observer(name: str) -> Callable[[nn.Module, tuple, Any], None]:
        def observe(module: nn.Module, inputs: tuple, output: Any) -> None:
            hook(name, module, inputs, output)  # never returns a value: outputs stay untouched

        return observe

    handles = [m.register_forward_hook(observer(name)) for name, m in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Call:
    """One call of a leaf module during the traced forward pass."""

    name: str
    module: nn.Module
    index: int  # how many times this module ran before in the same forward pass
    input_id: int | None
    output_id: int | None


@dataclass
class Trace:
    calls: list[Call] = field(default_factory=list)  # leaf module calls
    flow: list[dataflow.Step] = field(default_factory=list)  # leaf calls and the tensor operations between them

    def activation_targets(self) -> dict[str, tuple[str, int]]:
        """For each conv/linear layer (name), the call whose output is its post-activation output.

        That is the first activation call that reads the layer's output, followed through the data
        flow (BN, pooling, the residual addition, concatenation; never through another conv/linear):
        ``(activation name, call index)``. A layer whose output meets no activation gets its own
        output (``(layer, 0)``). A shared activation module (ResNet blocks call one ReLU two or three
        times) is told apart by call index.

        Where outputs of several layers meet before one activation (a residual branch and its
        projection shortcut at the addition), that activation is the block's rectified output and
        is reported once, under the deepest of them (the branch's last conv, as in an identity
        block); the projection is not reported: it has no nonlinearity of its own.
        """
        reached, depth = dataflow.first_activations(self.flow, lambda m: isinstance(m, WEIGHTED),
                                                    lambda m: isinstance(m, ACTIVATIONS))
        owner: dict[tuple[str, int], str] = {}
        for layer in depth:  # execution order: on equal depth the earlier layer keeps the report
            target = reached.get(layer)
            if target is not None and (target not in owner or depth[layer] > depth[owner[target]]):
                owner[target] = layer
        targets: dict[str, tuple[str, int]] = {}
        for layer in depth:
            target = reached.get(layer)
            if target is None:
                targets[layer] = (layer, 0)
            elif owner[target] == layer:
                targets[layer] = target
        return targets

    def conv3x3_responses(self) -> list[tuple[str, str]]:
        """(3x3 conv, module whose output is its response) pairs in execution order.

        The response is the output of the BatchNorm that directly consumes the conv's output (after
        BN, before the nonlinearity and before any residual addition: He et al. 2016, Fig. 7); a 3x3
        conv without such a BN gives its own output.
        """
        pairs: list[tuple[str, str]] = []
        seen: set[str] = set()
        for position, call in enumerate(self.calls):
            module = call.module
            if not (isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (3, 3)) or call.name in seen:
                continue
            seen.add(call.name)
            follower = next((c for c in self.calls[position + 1:] if c.input_id == call.output_id), None)
            if follower is not None and isinstance(follower.module, BATCH_NORMS):
                pairs.append((call.name, follower.name))
            else:
                pairs.append((call.name, call.name))
        return pairs


def trace(model: nn.Module, x: torch.Tensor) -> Trace:
    """Run ``x`` through ``model`` once (eval mode, no grad) and record every leaf module call, and
    (``flow``) every tensor operation that runs between them (the residual addition, ``cat``)."""
    leaves = {name: m for name, m in model.named_modules() if name and not any(True for _ in m.children())}
    result = Trace()
    counts: dict[str, int] = {}
    # Every output stays referenced until the trace ends, so no id can be reused by a new tensor.
    keep: list[Any] = []
    recorder = dataflow.Recorder(result.flow, keep)

    def record(name: str, module: nn.Module, inputs: tuple, output: Any) -> None:
        recorder.leave()
        keep.append(output)
        index = counts.get(name, 0)
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        result.calls.append(Call(name, module, index, id(first) if first is not None else None,
                                 id(output) if isinstance(output, torch.Tensor) else None))
        result.flow.append(dataflow.Step(name, module, index, dataflow.tensor_ids(inputs),
                                         dataflow.tensor_ids(output)))
        counts[name] = index + 1

    entering = [m.register_forward_pre_hook(lambda module, inputs: recorder.enter()) for m in leaves.values()]
    try:
        with evaluation(model), hooks(leaves, record), recorder:
            forward(model, x[:2])
    finally:
        for handle in entering:
            handle.remove()
    keep.clear()
    return result
