"""The diagnostics set under DDP (2 CPU processes over gloo): no hang, one writer, collectives matched.

One diverging run covers both collective paths: the non-finite guard's decision is reduced over the
ranks at every step (both must stop at the same step or the run hangs), and the confusion matrix of
the validation that follows the stop is summed over the ranks (each sees half the validation set).
"""

from __future__ import annotations

import json

import torch

from tests.conftest import TINY, run_cli


def test_diverging_ddp_run_stops_on_both_ranks_and_sums_the_confusion_matrix(tmp_path):
    result = run_cli("experiments.train", *TINY, "model.activation=relu", "data.batch_size=32", "trainer=ddp_cpu",
                     "trainer.max_epochs=3", "callbacks=diagnostics", "optimizer.lr=1e6", "optimizer.momentum=0.0",
                     cwd=tmp_path, check=True, timeout=400)
    runs = [p.parent for p in tmp_path.glob("outputs/train/*/*/summary.json")]
    assert len(runs) == 1
    run = runs[0]
    log = (run / "train.log").read_text() + result.stderr
    assert log.count("Non-finite training loss") == 1  # said once, by rank zero
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] < 3 * 4
    confusion = json.loads((run / "diagnostics/confusion_matrix.json").read_text())
    assert sum(map(sum, confusion["matrix"])) == 128  # both halves of the validation set
    state = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert (run / "plots/error_curves.png").is_file() and (run / "plots/gradient_flow.png").is_file()
