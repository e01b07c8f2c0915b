"""Memory: the lectures' accounting of a training step beside the measured peak.

The accounting (CS231n's VGG-16 walk-through, lecture 02): every layer's output is kept for the
backward pass, so a forward pass stores the sum of the layers' output elements per image; the backward
pass needs about as much again for their gradients (the "x2 for backward"); the weights, their
gradients and the optimizer's state come on top (SGD with momentum keeps one buffer per weight, Adam
two). A conv layer and the ReLU after it count as one layer, as in the lecture: element-wise
activations, dropout, flatten and identity are not counted (PyTorch runs most of them in place).

``python -m experiments.bench.memory --overrides ... --batch N`` measures one configuration in a fresh
process (peak RSS on the CPU, CUDA's max allocated on a GPU) and prints a JSON line; the benchmark runs
it as a subprocess so one measurement cannot inflate the next.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from typing import Any

# Parameter-free element-wise modules the lecture folds into the layer before them.
TRANSPARENT = ("ReLU", "ReLU6", "LeakyReLU", "ELU", "GELU", "SiLU", "Tanh", "Sigmoid", "Hardswish",
               "Dropout", "Dropout2d", "Flatten", "Identity")
OPTIMIZER_SLOTS = {"sgd": 0, "sgd_momentum": 1, "adam": 2}
BYTES_FP32 = 4


def activation_elements(model, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Output elements per image of every leaf layer (forward only), counted with hooks on one image.

    Works on the ``meta`` device (shapes only), so even VGG-16 at 224x224 costs nothing to count.
    """
    import torch

    per_layer: list[tuple[str, int]] = []
    handles = []
    for name, module in model.named_modules():
        if any(True for _ in module.children()) or type(module).__name__ in TRANSPARENT:
            continue

        def hook(_module, _inputs, output, name=name):
            tensors = output if isinstance(output, (tuple, list)) else (output,)
            per_layer.append((name, sum(t[0].numel() for t in tensors if isinstance(t, torch.Tensor))))

        handles.append(module.register_forward_hook(hook))
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    input_elements = 1
    for size in input_shape:
        input_elements *= int(size)
    return {"input": input_elements, "layers": per_layer, "total": sum(n for _, n in per_layer)}


def account(model, input_shape: tuple[int, ...], batch_size: int, optimizer: str = "sgd_momentum",
            bytes_per_value: int = BYTES_FP32) -> dict[str, Any]:
    """The lecture's memory bill of one training step with ``batch_size`` images, in elements and bytes."""
    counted = activation_elements(model, input_shape)
    params = sum(p.numel() for p in model.parameters())
    slots = OPTIMIZER_SLOTS[optimizer]
    forward = (counted["input"] + counted["total"]) * batch_size * bytes_per_value
    training = {
        "activations_forward": forward,
        "activation_gradients": counted["total"] * batch_size * bytes_per_value,  # the "x2 for backward"
        "parameters": params * bytes_per_value,
        "gradients": params * bytes_per_value,
        "optimizer_state": slots * params * bytes_per_value,
    }
    return {
        "input_shape": list(input_shape),
        "batch_size": batch_size,
        "optimizer": optimizer,
        "activations_per_image": counted["total"],
        "input_per_image": counted["input"],
        "activation_bytes_per_image_forward": counted["total"] * bytes_per_value,
        "parameters": params,
        "optimizer_state_values": slots * params,
        "bytes": training,
        "total_bytes": sum(training.values()),
    }


def render(bill: dict[str, Any], title: str, console=None) -> None:
    """The bill as a small rich table (used by ``experiments.summary memory=true`` and the benchmark)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=title, title_justify="left")
    table.add_column("item")
    table.add_column("values", justify="right")
    table.add_column("bytes (fp32)", justify="right")
    n = bill["batch_size"]
    rows = [
        ("activations per image (forward)", bill["activations_per_image"], bill["activation_bytes_per_image_forward"]),
        (f"activations + input, batch {n} (forward)", None, bill["bytes"]["activations_forward"]),
        ("activation gradients (x2 for backward)", None, bill["bytes"]["activation_gradients"]),
        ("parameters", bill["parameters"], bill["bytes"]["parameters"]),
        ("parameter gradients", bill["parameters"], bill["bytes"]["gradients"]),
        (f"optimizer state ({bill['optimizer']})", bill["optimizer_state_values"], bill["bytes"]["optimizer_state"]),
    ]
    for label, values, size in rows:
        table.add_row(label, "" if values is None else f"{values:,}", human_bytes(size))
    table.add_section()
    table.add_row(f"total for a training step, batch {n}", "", human_bytes(bill["total_bytes"]))
    console.print(table)


def human_bytes(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


# --- measured --------------------------------------------------------------------------------------
def _status_bytes(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss_bytes() -> int:
    """Current resident set size."""
    current = _status_bytes("VmRSS")
    return current if current is not None else _peak_rss_bytes()


def _peak_rss_bytes() -> int:
    """Peak RSS of this process image. ``VmHWM``, not ``ru_maxrss``: on Linux a child started by fork+exec
    inherits its parent's ``ru_maxrss``, which would bill the benchmark process's memory to the model."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # Linux reports KiB


def measure(overrides: list[str], batch_size: int, steps: int = 2, device: str = "cpu",
            optimizer: str = "sgd_momentum", autocast: str | None = None, channels_last: bool = False) -> dict[str, Any]:
    """Peak memory of ``steps`` SGD+momentum training steps on random data, beside the accounting.

    On the CPU: peak RSS minus the RSS before the model was built (the process holds only torch and the
    config then). On CUDA: ``max_memory_allocated`` (model, optimizer, activations; no allocator slack).
    """
    import torch
    import torch.nn.functional as F

    from experiments.core.compose import compose_train
    from experiments.training.build import build_model, input_shape_of

    cfg = compose_train(overrides)
    shape = input_shape_of(cfg)
    _load_kernels(device)
    before = _rss_bytes()
    torch.manual_seed(0)
    model = build_model(cfg.model, shape).to(device).train()
    bill = account(model, shape, batch_size, optimizer)
    if channels_last:
        from experiments.bench.training import to_channels_last

        to_channels_last(model)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9 if optimizer == "sgd_momentum" else 0.0)
    images = torch.randn(batch_size, *shape, device=device)
    labels = torch.randint(0, int(cfg.data.num_classes), (batch_size,), device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast or "")
    for _ in range(steps):
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(_logits(model(images)), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
        measured = {"measured_bytes": torch.cuda.max_memory_allocated(), "measured_how": "cuda max_memory_allocated"}
    else:
        measured = {"measured_bytes": _peak_rss_bytes() - before, "measured_how": "peak RSS - RSS before the model"}
    return {**bill, **measured, "ratio_measured_over_accounted": measured["measured_bytes"] / bill["total_bytes"]}


def _load_kernels(device: str) -> None:
    """One tiny training step first: torch loads its kernels and thread pools (~300 MB of RSS on the
    CPU) on first use, which would otherwise be billed to the model being measured."""
    import torch
    import torch.nn.functional as F

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2)).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for dtype in (None, torch.bfloat16):
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(net(torch.randn(2, 3, 8, 8, device=device)), torch.tensor([0, 1], device=device))
        loss.backward()
        opt.step()


def _logits(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def largest_batch(overrides: list[str], start: int = 16, limit: int = 4096, autocast: str | None = "bf16",
                  channels_last: bool = True) -> dict[str, Any]:
    """The largest batch whose training step fits on the GPU: doubling, then bisection, catching OOM."""
    import gc

    import torch

    def fits(batch: int) -> bool:
        try:
            measure(overrides, batch, steps=1, device="cuda", autocast=autocast, channels_last=channels_last)
            return True
        except RuntimeError as error:  # torch.cuda.OutOfMemoryError, or cuDNN's own "out of memory"
            if "out of memory" not in str(error).lower():
                raise
            return False
        finally:
            gc.collect()
            torch.cuda.empty_cache()

    low, high = 0, start
    while high <= limit and fits(high):
        low, high = high, high * 2
    if low == 0:
        return {"largest_batch": 0, "searched_up_to": limit}
    high = min(high, limit + 1)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return {"largest_batch": low, "searched_up_to": limit, "autocast": autocast, "channels_last": channels_last}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure one training step's peak memory (prints JSON).")
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--optimizer", default="sgd_momentum", choices=sorted(OPTIMIZER_SLOTS))
    parser.add_argument("--largest-batch", action="store_true", help="GPU: search the largest batch that fits")
    parser.add_argument("overrides", nargs="*", help="train-config overrides, e.g. model=vgg16")
    args = parser.parse_args(argv)
    if args.largest_batch:
        result = largest_batch(args.overrides, start=args.batch)
    else:
        result = measure(args.overrides, args.batch, device=args.device, optimizer=args.optimizer)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
