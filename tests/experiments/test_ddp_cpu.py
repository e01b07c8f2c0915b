"""The multi-GPU code path (Lightning DDP, one process per device) on 2 CPU processes over gloo."""

from __future__ import annotations

import csv
import json

from tests.conftest import TINY, run_cli


def test_ddp_cpu_trains_with_two_processes_and_logs_once(tmp_path):
    # 256 training images, batch 32: 8 steps per epoch on one process, 4 per process on two.
    result = run_cli("experiments.train", *TINY, "data.batch_size=32", "trainer=ddp_cpu", "trainer.max_epochs=2",
                     cwd=tmp_path, check=True, timeout=400)
    runs = [p.parent for p in tmp_path.glob("outputs/train/*/*/summary.json")]
    assert len(runs) == 1, "the second process must not create a run folder of its own"
    run = runs[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["steps"] == 2 * 4
    assert "MEMBER: 2/2" in (run / "train.log").read_text() + result.stderr
    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    val_rows = [r for r in rows if r.get("val/err")]
    assert [int(r["epoch"]) for r in val_rows] == [0, 1], "rank zero alone writes one row per epoch"
    assert len([r for r in rows if r.get("test/acc")]) == 1
