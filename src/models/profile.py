"""Per-stage profile of a model, the way the papers tabulate it: output size, parameters, multiply-adds.

``profile_model`` runs one image through the model in eval mode under
``torch.utils.flop_counter.FlopCounterMode`` (which counts a multiply-add as 2 FLOPs of conv and matmul
work; BN, pooling and activations are not counted, as in the papers) and records, for each row module,
its output shape, parameters and multiply-adds. It works on the ``meta`` device too, so the summary of a
152-layer network costs no memory and no arithmetic. Training calls it to store the same figures in
each run's ``summary.json``; ``experiments.summary`` prints them next to the paper's.

Rows are the model's stages: its direct children, with ``features``/``classifier``/``head`` sequences
opened one level (so VGG shows each conv, ResNet each stage), and parameter-free element-wise layers
(ReLU, dropout, flatten, identity) left out. A model can choose its own rows with ``summary_modules()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

EXPANDED_CONTAINERS = ("features", "classifier", "head")
SKIPPED_TYPES = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Identity, nn.Flatten)


def summary_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The (qualified name, module) pairs that become rows of the profile."""
    custom = getattr(model, "summary_modules", None)
    if callable(custom):
        return list(custom())
    rows: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if name in EXPANDED_CONTAINERS and isinstance(child, nn.Sequential):
            rows += [(f"{name}.{sub}", module) for sub, module in child.named_children()
                     if not isinstance(module, SKIPPED_TYPES)]
        elif not isinstance(child, SKIPPED_TYPES):
            rows.append((name, child))
    return rows


def describe_window(module: nn.Module) -> str:
    """``kxk/s`` for convs and pools, ``n x Block`` for a stage of identical blocks, else ''."""
    kernel = getattr(module, "kernel_size", None)
    if kernel is None:
        children = list(module.children())
        kinds = {type(child) for child in children}
        if len(children) > 1 and len(kinds) == 1 and not isinstance(children[0], nn.Sequential) \
                and not hasattr(children[0], "kernel_size"):
            return f"{len(children)} x {type(children[0]).__name__}"
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        if isinstance(module, nn.Sequential) and convs:
            # A conv unit (conv-BN-ReLU, depthwise-separable pair): its spatial window is the first conv's.
            return describe_window(convs[0])
        return ""
    stride = getattr(module, "stride", 1)
    pair = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    step = stride if isinstance(stride, tuple) else (stride, stride)
    text = f"{pair[0]}x{pair[1]}/{step[0]}"
    groups = getattr(module, "groups", 1)
    if groups > 1:
        text += f" g{groups}"
    return text


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def profile_model(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """Profile ``model`` on one ``(C, H, W)`` image; returns JSON-ready figures.

    Keys: ``params`` (all parameters), ``trainable_params``, ``inference_params`` (without modules that
    only run in training, such as auxiliary classifiers), ``macs`` (multiply-adds = FLOPs / 2),
    ``input_shape``, ``output_shape`` and ``rows`` (one dict per row: name, type, kernel, output [H, W, C]
    or None when the module did not run, params, macs).
    """
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() else torch.float32
    rows = summary_modules(model)
    outputs: dict[str, list[int]] = {}
    handles = []
    for name, module in rows:
        def hook(_module, _inputs, output, name=name):
            tensor = _first_tensor(output)
            if tensor is not None and name not in outputs:
                outputs[name] = [int(s) for s in tensor.shape[1:]]
        handles.append(module.register_forward_hook(hook))

    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            result = model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    flops = counter.get_flop_counts()
    root = type(model).__name__
    table = []
    for name, module in rows:
        shape = outputs.get(name)
        if shape is not None and len(shape) == 3:
            shape = [shape[1], shape[2], shape[0]]  # H, W, C as the papers print it
        table.append({
            "name": name,
            "type": type(module).__name__,
            "kernel": describe_window(module),
            "output": shape,
            "params": count_params(module),
            "macs": int(sum(flops.get(f"{root}.{name}", {}).values()) // 2),
        })
    params = count_params(model)
    unused = sum(row["params"] for row in table if row["output"] is None)
    final = _first_tensor(result)
    return {
        "params": params,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "inference_params": params - unused,
        "macs": int(counter.get_total_flops() // 2),
        "input_shape": list(input_shape),
        "output_shape": [int(s) for s in final.shape[1:]] if final is not None else None,
        "rows": table,
    }


def compare_with_paper(profile: Mapping[str, Any], paper: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Our totals beside the paper's (``paper.params``, ``paper.macs``), with the difference in percent.

    Parameters are compared without training-only modules (auxiliary heads), as papers count them.
    """
    if not paper:
        return []
    comparisons = []
    for key, ours_key in (("params", "inference_params"), ("macs", "macs")):
        if paper.get(key) is None:
            continue
        theirs = float(paper[key])
        ours = profile[ours_key]
        comparisons.append({
            "quantity": key,
            "ours": ours,
            "paper": theirs,
            "diff_pct": 100.0 * (ours - theirs) / theirs if theirs else None,
        })
    return comparisons
