"""He et al. 2016, Fig. 7 across runs: the std of every 3x3 layer's response, plain nets vs ResNets.

Each run's ``diagnostics/layer_response_std.json`` (written by ``callbacks.layer_response``, which the
degradation studies record) holds the std of each 3x3 conv's response (after its BN, before the
nonlinearity and the residual addition) on a probe batch after training. Here they are overlaid, one
line per group of the comparison (seeds averaged layer by layer): top, by layer index in network
order; bottom, sorted in descending order — the paper's two panels. The paper's reading: ResNets'
responses are smaller than their plain twins', and smaller in deeper ResNets.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from experiments.core.errors import UserError
from experiments.core.runs import RunFolder
from experiments.studies import run_table as rt

DIAGNOSTIC = "layer_response_std"


def group_responses(runs: list[rt.Run], keys: list[str]) -> dict[str, list[float]]:
    """Group label -> mean std per layer, over the group's runs that recorded the same number of layers."""
    by_group: dict[str, list[list[float]]] = {}
    for run in runs:
        try:
            record = RunFolder(run.path).diagnostic(DIAGNOSTIC)
        except UserError:
            continue  # a damaged record: that run has no line (the comparison's notes say why elsewhere)
        if record and record.get("std"):
            by_group.setdefault(rt.group_label(keys, run.group), []).append([float(s) for s in record["std"]])
    curves = {}
    for label, series in by_group.items():
        length = len(series[0])
        same = [s for s in series if len(s) == length]
        curves[label] = [statistics.fmean(values) for values in zip(*same)]
    return curves


def plot_layer_responses(runs: list[rt.Run], keys: list[str], out: Path) -> tuple[Path, Path] | None:
    """``layer_responses.png`` and ``layer_responses.json`` in ``out``; None when no run recorded them."""
    curves = group_responses(runs, keys)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_index, by_size) = plt.subplots(2, 1, figsize=(7.0, 6.4))
    for label, stds in sorted(curves.items()):
        residual = "residual=true" in label.replace(" ", "").lower() or "resnet" in label.lower()
        style = "-" if residual else "--"
        by_index.plot(range(1, len(stds) + 1), stds, style, marker=".", label=label)
        by_size.plot(range(1, len(stds) + 1), sorted(stds, reverse=True), style, marker=".", label=label)
    by_index.set(title="std of each 3x3 layer's response (He et al. 2016, Fig. 7)", xlabel="layer index",
                 ylabel="std")
    by_size.set(xlabel="layer index (sorted by magnitude)", ylabel="std")
    for axis in (by_index, by_size):
        axis.grid(alpha=0.3)
    by_index.legend(fontsize=8)
    fig.tight_layout()
    png = out / "layer_responses.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    record: dict[str, Any] = {"source": f"diagnostics/{DIAGNOSTIC}.json of each run", "keys": keys,
                              "groups": {label: {"std": stds, "mean": statistics.fmean(stds), "layers": len(stds)}
                                         for label, stds in curves.items()}}
    data = out / "layer_responses.json"
    data.write_text(json.dumps(record, indent=2) + "\n")
    return png, data
