"""``python -m experiments.benchmark [suite=cpu|gpu] [quick=true] [key=value ...]``: is the framework free?

Sections (issue 6): 1 overhead of our training path over a plain PyTorch loop, 2 data path vs training,
3 start-up of the CLI, 4 memory (the lectures' accounting beside the measured peak), 5 options
(channels_last, compile, deterministic, mixed precision) against their baseline; (issue 19) 6 steps:
microseconds per step on a near-zero-compute model for the plain loop, a bare Lightning Trainer and
our pipeline per callback set, where ours spends them (a profiler's breakdown), and the host reads
(device syncs) per step; allocator: ``host_allocator=reuse`` against the C library's defaults, in
fresh processes. The overhead section pairs ours with the plain loop in alternating blocks inside one
run (and a bare Lightning Trainer the same way: Lightning's own floor). Prints a table and writes ``<output_dir>/<timestamp>.json``. Settings live in ``conf/benchmark.yaml`` and take
Hydra overrides (``sections=[overhead] cpu.rounds=3``).

Only the standard library is imported at module level, so ``--help`` answers at once; torch and
Lightning are imported when a section runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

USAGE = __doc__.split("\n\n")[0]


def parse(argv: list[str]) -> list[str]:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.benchmark", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  python -m experiments.benchmark\n  python -m experiments.benchmark quick=true\n"
               "  python -m experiments.benchmark suite=gpu\n  python -m experiments.benchmark sections=[startup]\n"
               "  python -m experiments.benchmark sections=[steps] cpu.steps.rounds=9")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/benchmark.yaml")
    return parser.parse_args(argv).overrides


SECTIONS = ("overhead", "data", "allocator", "startup", "memory", "options", "steps")


def load_config(overrides: list[str]):
    """``conf/benchmark.yaml`` with overrides; with ``quick=true`` the quick block replaces the suite's."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import ListConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from experiments.core.errors import UserError
    from experiments.core.locations import CONF_DIR as CONF

    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="benchmark", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as error:
        detail = " ".join(str(error).split())
        raise UserError("overrides", " ".join(overrides), f"do not fit conf/benchmark.yaml ({detail}).",
                        "Check the key names there; quote list items that contain '=' "
                        '(cpu.steps.overrides=["model=linear"]).') from None
    if cfg.suite not in ("cpu", "gpu"):
        raise UserError("suite", cfg.suite, "is not a suite.", "Use suite=cpu or suite=gpu.")
    sections = list(cfg.sections) if isinstance(cfg.sections, ListConfig) else None
    if not sections or set(sections) - set(SECTIONS):
        raise UserError("sections", cfg.sections, "must list one or more of the sections"
                        + (f" (not {', '.join(sorted(set(sections) - set(SECTIONS)))})" if sections else "") + ".",
                        f"Use e.g. sections=[overhead]; the sections are {', '.join(SECTIONS)}.")
    from experiments.core.output_folders import check_can_create

    check_can_create(Path(str(cfg.output_dir)), "output_dir")  # before minutes of timing, not after
    suite = cfg[cfg.suite]
    if cfg.quick:
        suite = OmegaConf.merge(suite, cfg.quick_settings)
    allocator = suite.get("host_allocator", "system")
    if allocator not in ("reuse", "system"):
        raise UserError(f"{cfg.suite}.host_allocator", allocator, "is not an allocator setting.",
                        f"Use {cfg.suite}.host_allocator=reuse (as experiments.train) or system (the C library's).")
    for index, case in enumerate(suite.get("overhead") or []):
        _check_blocks(f"{cfg.suite}.overhead[{index}]", case)
    if "steps" in cfg.sections:  # checked now, not after the other sections have run for minutes
        from experiments.bench.steps import StepCase

        StepCase.from_cfg(suite.steps, key=f"{cfg.suite}.steps")
    return cfg, suite


def _check_blocks(key: str, case) -> None:
    """An overhead case's blocks must divide its steps and, when its window holds a logging step, be a
    multiple of the logging period: each block then holds one, and the median over blocks cannot drop
    the work done on those steps (the logger's write, the non-finite guard's read)."""
    from experiments.core.errors import UserError

    warmup, steps = int(case.get("warmup", 10)), int(case.get("steps", 50))
    block = int(case.get("block", 0) or steps)
    if block < 1 or steps % block:
        raise UserError(f"{key}.block", block, f"does not divide steps={steps}.",
                        "Use a block length that divides the case's steps (the logging period, 50, for a long case).")
    period = 50  # conf/trainer/*.yaml's log_every_n_steps, unless the case's overrides say otherwise
    for override in case.get("overrides") or []:
        if str(override).startswith("trainer.log_every_n_steps="):
            period = int(str(override).split("=", 1)[1])
    logging_steps = [g for g in range(warmup, warmup + steps) if (g + 1) % max(1, period) == 0]
    if logging_steps and block % period:
        raise UserError(f"{key}.block", block, f"splits the logging period ({period} steps): the window "
                        f"{warmup}..{warmup + steps - 1} holds logging step(s) {logging_steps}, which only some "
                        "blocks would hold, so the median over blocks would leave their work out.",
                        f"Use a block that is a multiple of {period} (and steps a multiple of the block), or a "
                        "window without a logging step.")


def run(cfg, suite, log=print) -> dict[str, Any]:
    """Run the chosen sections; returns the results dict that goes into the JSON."""
    from experiments.bench.training import Case, options, overhead

    gpu = cfg.suite == "gpu"
    sections = set(cfg.sections)
    results: dict[str, Any] = {"section_seconds": {}}
    clock = time.perf_counter()

    def lap(name: str) -> None:  # wall time per section: to keep the default run within ~5 minutes
        nonlocal clock
        now = time.perf_counter()
        results["section_seconds"][name] = round(now - clock, 1)
        clock = now

    if sections & {"overhead", "data"}:
        log("overhead" + (" + data path" if "data" in sections else ""))
        results["overhead"] = []
        for index, case_cfg in enumerate(suite.overhead):
            case = Case.from_cfg(case_cfg, gpu=gpu, clock=str(suite.get("clock") or "wall"))
            results["overhead"].append(overhead(
                case, int(suite.rounds), data_path="data" in sections and index == 0,
                data_steps=int(suite.data_steps), probe_window=int(suite.probe_window) if index == 0 else 0, log=log))
            lap(f"overhead/{case.name}")
    if "startup" in sections:
        from experiments.bench.startup import startup

        log("start-up")
        results["startup"] = startup(int(suite.startup.repeats), int(suite.startup.first_step_repeats),
                                     list(suite.startup.first_step_overrides), log=log)
        lap("startup")
    if "memory" in sections:
        log("memory")
        results["memory"] = memory_section(suite.memory, gpu)
        lap("memory")
    if "options" in sections:
        log("options")
        case = Case.from_cfg(suite.options.case, gpu=gpu)
        names = [n for n in suite.options.names if gpu or n != "fp16_autocast"]
        results["options"] = options(case, names, int(suite.options.rounds), log=log)
        lap("options")
    if "allocator" in sections and suite.get("allocator"):
        from experiments.bench.allocator import allocator_section

        log("allocator")
        results["allocator"] = allocator_section(suite.allocator, log=log)
        lap("allocator")
    if "steps" in sections:
        from experiments.bench.steps import StepCase, step_overhead

        log("steps")
        results["steps"] = step_overhead(StepCase.from_cfg(suite.steps, gpu=gpu), log=log)
        lap("steps")
    return results


def memory_section(settings, gpu: bool) -> list[dict[str, Any]]:
    """Accounting + measured peak (one subprocess each), accounting alone, and the GPU's largest batches."""
    import torch

    from experiments.bench.common import json_subprocess
    from experiments.bench.memory import account
    from experiments.core.compose import compose_train
    from experiments.core.locations import REPO_ROOT as REPO
    from experiments.training.build import build_model, input_shape_of

    out: list[dict[str, Any]] = []
    for item in settings.measure:
        args = ["--batch", str(item.batch_size), "--device", "cuda" if gpu else "cpu", *item.overrides]
        out.append({"name": item.name, **json_subprocess(["-m", "experiments.bench.memory", *args], REPO)})
    for item in settings.account_only:
        cfg = compose_train(list(item.overrides))
        with torch.device("meta"):
            model = build_model(cfg.model)
        out.append({"name": item.name, **account(model, input_shape_of(cfg), int(item.batch_size))})
    for item in settings.largest_batch:
        args = ["--largest-batch", "--batch", str(item.batch_size), *item.overrides]
        out.append({"name": item.name, **json_subprocess(["-m", "experiments.bench.memory", *args], REPO)})
    return out


def main(argv: list[str] | None = None) -> int:
    from experiments.core.errors import exits_cleanly_on_user_error

    return exits_cleanly_on_user_error(_main)(argv)


def _main(argv: list[str] | None = None) -> int:
    overrides = parse(sys.argv[1:] if argv is None else argv)
    cfg, suite = load_config(overrides)
    import torch

    if cfg.suite == "gpu" and not torch.cuda.is_available():
        print("benchmark: suite=gpu needs a CUDA GPU and this machine has none; run suite=cpu here.", file=sys.stderr)
        return 2
    if suite.get("threads"):
        torch.set_num_threads(int(suite.threads))
    from experiments.training import host_allocator

    host_allocator.apply(str(suite.get("host_allocator", "system")))  # both contenders share this process
    from omegaconf import OmegaConf

    from experiments.bench.common import machine_facts
    from experiments.bench.report import print_steps, print_table, ratios, step_figures, write_json

    started = time.time()
    machine = machine_facts()
    results = run(cfg, suite)
    payload = {"suite": cfg.suite, "quick": bool(cfg.quick), "command": " ".join(["python -m experiments.benchmark",
               *overrides]), "machine": machine, "seconds": round(time.time() - started, 1),
               "ratios": ratios(results), "step_figures": step_figures(results), "results": results,
               "settings": OmegaConf.to_container(suite, resolve=True)}
    print_table(results, machine)
    if "steps" in results:
        print_steps(results["steps"])
    path = write_json(Path(cfg.output_dir), payload)
    print(f"written: {path}  ({payload['seconds']:.0f} s)")
    return 0
