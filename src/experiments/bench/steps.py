"""Per-step overhead: microseconds a training step costs beyond the model, for each training path.

A model with almost no compute (``model=linear`` on 8x8 images) makes a step's time nearly all
framework. Each contender trains ``short_steps`` and ``long_steps`` steps from scratch (model,
optimizer, Trainer and all); the difference of the two times divided by the difference of the step
counts is the cost of one step, with everything done once per run (building, imports already paid,
the first step's allocations, checkpoints at the end) cancelled out. Contenders alternate within a
round and the order reverses every other round; every figure is the median over rounds and the JSON
keeps each round's value, so the spread can be judged.

Contenders: ``plain`` (the hand-written loop of :mod:`experiments.bench.training`), ``lightning``
(a bare ``Trainer``: no logger, callbacks, progress bar, checkpointing or model summary, around a
LightningModule whose ``training_step`` is the loss alone), and ``callbacks=<set>`` for each named
set: the pipeline's own module, datamodule, loggers and Trainer (:func:`experiments.training.build.build_trainer`).
All share one datamodule (so the same batches and augmentation) and one optimizer/schedule config.

The clock is the process's CPU time on a CPU (a shared core's waits are not the framework's cost;
with one thread the two agree on an idle machine) and the wall clock with a CUDA sync on a GPU.
"""

from __future__ import annotations

import contextlib
import gc
import io
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from experiments.bench.breakdown import categorize
from experiments.bench.common import compose_train, median, quiet_lightning

PLAIN, LIGHTNING = "plain", "lightning"
WARMUP = 10  # steps before the profiled or probed window


@dataclass
class StepCase:
    """The near-zero-compute case of ``conf/benchmark.yaml`` (``<suite>.steps``)."""

    overrides: list[str]
    callbacks: list[str] = field(default_factory=lambda: ["none", "default", "diagnostics"])
    batch_size: int = 128
    short_steps: int = 200
    long_steps: int = 1200
    rounds: int = 5
    breakdown_steps: int = 300   # steps profiled per contender and round (0: no breakdown)
    breakdown_rounds: int = 3    # profiled runs per contender (medians)
    probe_window: int = 60       # steps probed for host reads with callbacks=diagnostics (0: none)
    clock: str = "process"       # process (CPU time) or wall
    gpu: bool = False

    @classmethod
    def from_cfg(cls, cfg: Any, gpu: bool = False) -> StepCase:
        from omegaconf import OmegaConf

        plain = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
        return cls(**{**plain, "gpu": gpu})

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.gpu else "cpu")

    @property
    def most_steps(self) -> int:
        """The longest run: timed, profiled (after ``WARMUP`` steps) or probed."""
        return max(self.long_steps, WARMUP + self.breakdown_steps + 1, WARMUP + self.probe_window + 1)

    def run_overrides(self, steps: int) -> list[str]:
        """The training config of a run of ``steps`` steps, all inside one epoch (no validation)."""
        extra = [f"data.batch_size={self.batch_size}", f"data.num_train={(self.most_steps + 4) * self.batch_size + 128}",
                 "data.val_size=128", "resume=false", f"trainer.max_steps={steps}", "trainer.max_epochs=1"]
        if self.gpu:
            extra += ["trainer=gpu", "data.device_resident=true"]
        return [*self.overrides, *extra]


# --- the clock ------------------------------------------------------------------------------------
def clock_of(case: StepCase) -> Callable[[], float]:
    if case.clock == "process":
        return time.process_time
    if case.clock != "wall":
        raise ValueError(f"steps.clock={case.clock!r}: use process or wall")
    if case.gpu:
        def wall() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()
        return wall
    return time.perf_counter


def timed(run: Callable[[], None], clock: Callable[[], float]) -> float:
    gc.collect()  # a collection owed by the previous run must not land in this one
    started = clock()
    run()
    return clock() - started


# --- contenders -----------------------------------------------------------------------------------
class BareModule(pl.LightningModule):
    """What a user writes for a bare Trainer: the loss, the optimizer and its schedule, nothing else."""

    def __init__(self, model: torch.nn.Module, cfg) -> None:
        super().__init__()
        self.model, self.cfg = model, cfg

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(self.model(images), labels)

    def configure_optimizers(self):
        from experiments.training.optim import build_optimizer, build_scheduler

        optimizer = build_optimizer(self.cfg.optimizer, self.model)
        scheduler = None
        if self.cfg.get("scheduler") is not None and self.cfg.scheduler.get("_target_"):
            scheduler = build_scheduler(self.cfg.scheduler, optimizer, int(self.trainer.estimated_stepping_batches),
                                        int(self.trainer.num_training_batches))
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}


def bare_trainer(case: StepCase, steps: int, callbacks: Sequence[pl.Callback] = (), profiler=None) -> pl.Trainer:
    return pl.Trainer(accelerator="gpu" if case.gpu else "cpu", devices=1, max_steps=steps, max_epochs=1,
                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, callbacks=list(callbacks),
                      profiler=profiler, default_root_dir=tempfile.gettempdir())


class Contenders:
    """Builds and runs each contender on one shared datamodule; configs are composed up front."""

    def __init__(self, case: StepCase) -> None:
        from experiments.training.build import build_datamodule

        self.case = case
        self._configs: dict[int, Any] = {}
        self.datamodule = build_datamodule(self.config(case.long_steps))
        self.datamodule.setup("fit")

    def config(self, steps: int):
        """The composed training config of a ``steps``-step run (plain and bare Lightning read it)."""
        if steps not in self._configs:
            self._configs[steps] = compose_train(self.case.run_overrides(steps))
        return self._configs[steps]

    def names(self) -> list[str]:
        return [PLAIN, LIGHTNING, *(f"callbacks={name}" for name in self.case.callbacks)]

    def run(self, name: str, steps: int) -> Callable[[], None]:
        """A callable that trains ``steps`` steps as contender ``name`` (what the clock times)."""
        if name == PLAIN:
            self.config(steps)
            return lambda: self._plain(steps)
        if name == LIGHTNING:
            self.config(steps)
            return lambda: self._bare(steps)
        callbacks = name.split("=", 1)[1]
        cfg = compose_train([*self.case.run_overrides(steps), f"callbacks={callbacks}", "quiet=false"])
        return lambda: self._ours(cfg)

    def _plain(self, steps: int) -> None:
        from experiments.bench.training import PlainLoop

        PlainLoop(self.config(steps), self.datamodule, self.case.device).run(0, steps)

    def _bare(self, steps: int, callbacks: Sequence[pl.Callback] = (), profiler=None) -> pl.Trainer:
        from experiments.training.build import build_model, input_shape_of

        cfg = self.config(steps)
        torch.manual_seed(int(cfg.seed))
        module = BareModule(build_model(cfg.model, input_shape_of(cfg)), cfg)
        with quiet_lightning():
            trainer = bare_trainer(self.case, steps, callbacks, profiler)
            if profiler is not None:
                from experiments.bench.breakdown import instrument

                instrument(trainer, module, module.model)
            trainer.fit(module, datamodule=self.datamodule)
        return trainer

    def _ours(self, cfg, prepare: Callable[[Any, Any], None] | None = None) -> pl.Trainer:
        from experiments.training.build import build_module, build_trainer

        with tempfile.TemporaryDirectory(prefix="bench-steps-") as run_dir, quiet_lightning():
            cfg.paths.run_dir = run_dir
            pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
            module = build_module(cfg)
            # A StringIO stdout is no terminal: no progress bar, as in a log file or CI.
            with contextlib.redirect_stdout(io.StringIO()):
                trainer = build_trainer(cfg)
                if prepare is not None:
                    prepare(trainer, module)
                trainer.fit(module, datamodule=self.datamodule)
        return trainer


# --- the section ----------------------------------------------------------------------------------
def step_overhead(case: StepCase, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Microseconds per step of each contender, their differences, the breakdown and the host-read probe."""
    contenders = Contenders(case)
    names = contenders.names()
    clock = clock_of(case)
    short, long = case.short_steps, case.long_steps
    log(f"  steps: {case.rounds} rounds of {', '.join(names)} ({long} - {short} steps, batch {case.batch_size}, "
        f"{case.clock} clock)")
    for name in names:  # one untimed run each: first-call costs (imports, allocator) are not a step's
        contenders.run(name, min(short, 5))()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(case.rounds):
        for name in names if index % 2 == 0 else list(reversed(names)):
            runs = {steps: contenders.run(name, steps) for steps in (short, long)}
            order = (short, long) if index % 2 == 0 else (long, short)
            seconds = {steps: timed(runs[steps], clock) for steps in order}
            samples[name].append((seconds[long] - seconds[short]) / (long - short) * 1e6)
    result: dict[str, Any] = {
        "overrides": case.overrides, "batch_size": case.batch_size, "short_steps": short, "long_steps": long,
        "rounds": case.rounds, "clock": case.clock, "device": case.device.type,
        "samples_us_per_step": samples,
        "us_per_step": {name: median(values) for name, values in samples.items()},
        "spread_us_per_step": {name: [min(values), max(values)] for name, values in samples.items()},
        "over_lightning_us": {}, "over_plain_us": {},
    }
    for name in names[2:]:
        result["over_lightning_us"][name] = _paired(samples[name], samples[LIGHTNING])
        result["over_plain_us"][name] = _paired(samples[name], samples[PLAIN])
    result["over_plain_us"][LIGHTNING] = _paired(samples[LIGHTNING], samples[PLAIN])
    if case.breakdown_steps:
        result["breakdown"] = breakdown(contenders, names[1:], log=log)
    if case.probe_window and "diagnostics" in case.callbacks:
        result["sync_probe"] = probe(contenders, "callbacks=diagnostics", case.probe_window, log=log)
    return result


def _paired(values: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """Median and range of the per-round differences (each pair ran in the same round)."""
    differences = [a - b for a, b in zip(values, baseline)]
    return {"median": median(differences), "min": min(differences), "max": max(differences)}


def breakdown(contenders: Contenders, names: Sequence[str], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Profiled runs, ``breakdown_rounds`` interleaved rounds of each contender: microseconds per step by
    category (median over rounds per action), and ours minus bare Lightning per category."""
    case = contenders.case
    rounds = max(1, case.breakdown_rounds)
    log(f"  breakdown: {rounds} rounds of {case.breakdown_steps} profiled steps each of {', '.join(names)}")
    runs: dict[str, list[tuple[dict[str, float], float, list]]] = {name: [] for name in names}
    cost = 0.0
    for index in range(rounds):
        for name in names if index % 2 == 0 else list(reversed(names)):
            actions, step_us, callbacks, cost = _profiled_run(contenders, name)
            runs[name].append((actions, step_us, callbacks))
    out: dict[str, Any] = {"steps": case.breakdown_steps, "rounds": rounds, "profiler_cost_us_per_call": cost * 1e6,
                           "categories": {}, "actions_us_per_step": {}, "profiled_us_per_step": {}}
    for name, samples in runs.items():
        keys = {key for actions, _, _ in samples for key in actions}
        actions = {key: median([a.get(key, 0.0) for a, _, _ in samples]) for key in keys}
        actions = dict(sorted(actions.items(), key=lambda item: -item[1]))
        categories = categorize(actions, samples[0][2], median([step for _, step, _ in samples]))
        out["profiled_us_per_step"][name] = categories.pop("step")
        out["actions_us_per_step"][name] = {k: round(v, 2) for k, v in actions.items()}
        out["categories"][name] = categories
    base = out["categories"].get(LIGHTNING)
    if base is not None:
        out["over_lightning_us"] = {name: {k: v - base[k] for k, v in cats.items()}
                                    for name, cats in out["categories"].items() if name != LIGHTNING}
    return out


def _profiled_run(contenders: Contenders, name: str) -> tuple[dict[str, float], float, list, float]:
    """One run of ``name`` under :class:`~experiments.bench.breakdown.StepBreakdown`: (microseconds per
    step by action, per step in all, the trainer's callbacks, the profiler's cost per action)."""
    from experiments.bench.breakdown import BreakdownWindow, StepBreakdown, instrument

    case = contenders.case
    total = WARMUP + case.breakdown_steps + 1
    clock = time.process_time if case.clock == "process" else time.perf_counter
    profiler = StepBreakdown(clock)
    window = BreakdownWindow(WARMUP, case.breakdown_steps)
    if name == LIGHTNING:
        trainer = contenders._bare(total, [window], profiler)
    else:
        cfg = compose_train([*case.run_overrides(total), f"callbacks={name.split('=', 1)[1]}", "quiet=false"])

        def prepare(trainer: pl.Trainer, module) -> None:
            trainer.profiler = profiler  # after build_trainer: a profiler object cannot live in a config
            trainer.callbacks.insert(0, window)
            instrument(trainer, module, module.model)

        trainer = contenders._ours(cfg, prepare)
    return profiler.per_step_us(), profiler.step_us(), list(trainer.callbacks), profiler.cost


def probe(contenders: Contenders, name: str, window: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Host reads of tensor values per step over ``window`` steps that include a logging step."""
    from experiments.bench.callbacks import SyncProbe

    case = contenders.case
    start = WARMUP
    cfg = compose_train([*case.run_overrides(start + window + 1), f"callbacks={name.split('=', 1)[1]}",
                         "quiet=false"])
    every = int(cfg.trainer.log_every_n_steps)
    sync_probe = SyncProbe(start_step=start, window=window, every_n_steps=every)
    log(f"  sync probe: {name}, steps {start}..{start + window - 1} (log_every_n_steps={every})")
    contenders._ours(cfg, lambda trainer, module: trainer.callbacks.insert(0, sync_probe))
    return sync_probe.report()
