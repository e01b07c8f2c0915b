"""The ``allocator`` section: what ``host_allocator`` is worth, the plain loop in fresh processes.

The setting is process-wide and glibc cannot go back to its defaults once changed, so each sample is a
fresh process (``python -m experiments.bench.allocator --setting reuse|system ...`` prints one JSON
line): the plain training loop of the case, its images/s over the timed steps and the minor page
faults per step (pages the kernel had to map and zero-fill again). The rounds alternate the settings.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections.abc import Callable
from typing import Any


def measure(setting: str, overrides: list[str], batch_size: int, warmup: int, steps: int) -> dict[str, Any]:
    """One process's sample: the allocator set first, then the plain loop's images/s and page faults."""
    import torch

    from experiments.training import host_allocator

    taken = host_allocator.apply(setting)  # before anything big is allocated, as experiments.train does
    torch.set_num_threads(1)
    from experiments.bench.training import Case, PlainLoop, prepare

    case = Case(name="allocator", overrides=overrides, batch_size=batch_size, warmup=warmup, steps=steps,
                clock="process")
    cfg, datamodule, _ = prepare(case)
    loop = PlainLoop(cfg, datamodule, torch.device("cpu"), clock="process")
    loop.timed_steps(warmup)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = loop.timed_steps(steps)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return {"setting": setting, "taken": taken, "images_per_s": steps * batch_size / seconds,
            "page_faults_per_step": faults / steps}


def allocator_section(settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``reuse`` against ``system`` in alternating fresh processes; the figure is the median ratio."""
    from experiments.bench.common import json_subprocess, median, ratio
    from experiments.core.locations import REPO_ROOT

    args = ["--batch", str(settings.batch_size), "--warmup", str(settings.warmup), "--steps", str(settings.steps),
            *settings.overrides]
    rounds = int(settings.rounds)
    log(f"  plain loop, {rounds} rounds of host_allocator=reuse and system, one process each")
    samples: dict[str, list[dict[str, Any]]] = {"reuse": [], "system": []}
    for index in range(rounds):
        for setting in ("reuse", "system") if index % 2 == 0 else ("system", "reuse"):
            command = ["-m", "experiments.bench.allocator", "--setting", setting, *args]
            samples[setting].append(json_subprocess(command, REPO_ROOT))
    speed = {name: [s["images_per_s"] for s in rows] for name, rows in samples.items()}
    return {"overrides": list(settings.overrides), "batch_size": int(settings.batch_size), "rounds": rounds,
            "samples": samples, "ratio_reuse_over_system": ratio(speed["reuse"], speed["system"]),
            "page_faults_per_step": {name: median([s["page_faults_per_step"] for s in rows])
                                     for name, rows in samples.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.allocator")
    parser.add_argument("--setting", choices=["reuse", "system"], required=True)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    print(json.dumps(measure(args.setting, args.overrides, args.batch, args.warmup, args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
