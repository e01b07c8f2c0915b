"""More than one machine, through the engine that exists: two "nodes" of one process each, started by
torchrun with a rendezvous on localhost (gloo), train one run together (``trainer=ddp_cpu
trainer.num_nodes=2 trainer.devices=1``). One run folder, each epoch logged once, the same weights on
both ranks at the end."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import torch
from tests.conftest import ONE_THREAD, TESTS, TINY


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_torchrun_nodes_train_one_run(tmp_path):
    port, run_dir, dumps = _free_port(), tmp_path / "run", tmp_path / "weights"
    command = [*TINY, "data.batch_size=32", "trainer=ddp_cpu", "trainer.num_nodes=2", "trainer.devices=1",
               "trainer.max_epochs=2", f"hydra.run.dir={run_dir}",
               "+callbacks.dump._target_=crash_callbacks.SaveWeightsPerRank", f"+callbacks.dump.folder={dumps}"]
    env = {**os.environ, "PYTHONPATH": str(TESTS / "helpers"), "WANDB_MODE": "offline", **ONE_THREAD}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
         "-m", "experiments.train", *command],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    for node, (out, err) in zip(nodes, outputs):
        assert node.returncode == 0, (out[-2000:], err[-4000:])

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["steps"] == 2 * 4  # 256 images, batch 32: 8 batches per epoch, 4 per rank
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "weights"], "one run folder, nothing else"
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows if r.get("val/err")] == [0, 1], "each epoch logged once"
    first, second = (torch.load(dumps / f"weights-rank{r}.pt", weights_only=True) for r in (0, 1))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first), "both replicas end with the same weights"
