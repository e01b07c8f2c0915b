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
from experiments.bench.common import median, quiet_lightning
from experiments.bench.training import BareModule, PlainLoop
from experiments.core.compose import compose_train

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
    count_steps: int = 50        # steps in which Python calls and torch operators are counted (0: none)
    clock: str = "process"       # process (CPU time) or wall
    gpu: bool = False

    @classmethod
    def from_cfg(cls, cfg: Any, gpu: bool = False, key: str = "steps") -> StepCase:
        """The case of a config node, every setting checked (a mistake names ``key.<setting>``)."""
        import dataclasses

        from omegaconf import OmegaConf

        from experiments.core.errors import UserError

        plain = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
        known = {f.name for f in dataclasses.fields(cls)} - {"gpu"}
        for name in plain:
            if name not in known:
                raise UserError(f"{key}.{name}", plain[name], "is not a setting of the steps section.",
                                f"Use {', '.join(sorted(known))}.")
        case = cls(**{**plain, "gpu": gpu})
        case.check(key)
        return case

    def check(self, key: str = "steps") -> None:
        from experiments.core.errors import UserError

        if self.clock not in ("process", "wall"):
            raise UserError(f"{key}.clock", self.clock, "is not a clock.", "Use process (CPU time) or wall.")
        for name in ("batch_size", "short_steps", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{key}.{name}", value, "must be a positive integer.", f"Set e.g. {key}.{name}=5.")
        if isinstance(self.long_steps, bool) or not isinstance(self.long_steps, int) or self.long_steps <= self.short_steps:
            raise UserError(f"{key}.long_steps", self.long_steps, f"must be an integer above short_steps "
                            f"({self.short_steps}): the difference is what is timed.",
                            f"Set e.g. {key}.long_steps={self.short_steps * 6}.")
        for name in ("breakdown_steps", "breakdown_rounds", "probe_window", "count_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UserError(f"{key}.{name}", value, "must be an integer >= 0 (0 turns it off).",
                                f"Set e.g. {key}.{name}=0.")
        from experiments.core.locations import CONF_DIR

        unknown = [c for c in self.callbacks if not (CONF_DIR / "callbacks" / f"{c}.yaml").is_file()]
        if not self.callbacks or unknown:
            raise UserError(f"{key}.callbacks", self.callbacks, f"names no callback set{'' if self.callbacks else 's'}"
                            f"{': ' + ', '.join(unknown) if unknown else ''} (conf/callbacks/).",
                            "Use e.g. [none,default,diagnostics].")

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if self.gpu else "cpu")

    @property
    def most_steps(self) -> int:
        """The longest run: timed, profiled (after ``WARMUP`` steps) or probed."""
        return max(self.long_steps, WARMUP + self.breakdown_steps + 1, WARMUP + self.probe_window + 1,
                   WARMUP + self.count_steps + 1)

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
        result["breakdown"] = breakdown(contenders, names, log=log)
    if case.count_steps:
        result["counts"] = counts(contenders, names, log=log)
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
                                    for name, cats in out["categories"].items() if name not in (PLAIN, LIGHTNING)}
    plain = out["categories"].get(PLAIN)
    if plain is not None and base is not None:
        out["lightning_over_plain_us"] = {k: v - plain[k] for k, v in base.items()}
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
    if name == PLAIN:
        _plain_profiled(contenders, profiler, total)
        return profiler.per_step_us(), profiler.step_us(), [], profiler.cost
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


def counts(contenders: Contenders, names: Sequence[str], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Python calls and torch operator calls per step of each contender (exact counts, see
    :mod:`experiments.bench.counts`), over ``count_steps`` steps after the warm-up."""
    from experiments.bench.breakdown import BreakdownWindow
    from experiments.bench.counts import CallCounter

    case = contenders.case
    steps, total = case.count_steps, WARMUP + case.count_steps + 1
    log(f"  counts: Python calls and torch operators in {steps} steps of each contender")
    out: dict[str, Any] = {"steps": steps, "python_calls_per_step": {}, "torch_ops_per_step": {}}
    for name in names:
        for what in ("python", "torch"):
            counter = CallCounter(what)
            window = BreakdownWindow(WARMUP, steps, target=counter)
            if name == PLAIN:
                _plain_counted(contenders, counter, total, steps)
            elif name == LIGHTNING:
                contenders._bare(total, [window])
            else:
                cfg = compose_train([*case.run_overrides(total), f"callbacks={name.split('=', 1)[1]}", "quiet=false"])
                contenders._ours(cfg, lambda trainer, module, window=window: trainer.callbacks.insert(0, window))
            out[f"{what}_calls_per_step" if what == "python" else "torch_ops_per_step"][name] = counter.per_step()
    return out


def _plain_counted(contenders: Contenders, counter, total: int, steps: int) -> None:
    """:class:`~experiments.bench.training.PlainLoop`'s own loop (as it is timed), counted for ``steps`` steps."""
    from experiments.bench.training import PlainLoop, cycle_batches

    case, datamodule = contenders.case, contenders.datamodule
    loop = PlainLoop(contenders.config(total), datamodule, case.device)
    batches = cycle_batches(datamodule)
    for index in range(total):
        if index == WARMUP:
            counter.arm()
        elif index == WARMUP + steps:
            counter.disarm(steps)
        images, labels = next(batches)
        images = images.to(case.device, non_blocking=True)
        labels = labels.to(case.device, non_blocking=True)
        loop._step(datamodule.transform_batch(images, train=True), labels)


def _plain_profiled(contenders: Contenders, profiler, total: int) -> None:
    """The plain loop of :class:`~experiments.bench.training.PlainLoop`, each piece under the profiler with
    the name of the Lightning action doing the same work (so both land in the same categories)."""
    from experiments.bench.breakdown import instrument_forward
    from experiments.bench.training import PlainLoop, cycle_batches

    case = contenders.case
    steps = case.breakdown_steps
    loop = PlainLoop(contenders.config(total), contenders.datamodule, case.device)
    instrument_forward(profiler, loop.model)
    batches = cycle_batches(contenders.datamodule)
    for index in range(total):
        if index == WARMUP:
            profiler.arm()
        elif index == WARMUP + steps:
            profiler.disarm(steps)
        with profiler.profile("[plain]train_dataloader_next"):
            images, labels = next(batches)
        with profiler.profile("[plain]loop.on_after_batch_transfer"):
            images = images.to(case.device, non_blocking=True)
            labels = labels.to(case.device, non_blocking=True)
            images = contenders.datamodule.transform_batch(images, train=True)
        with profiler.profile("[plain]loop.training_step"):
            loss = F.cross_entropy(loop.model(images), labels)
        with profiler.profile("[plain]loop.optimizer_zero_grad"):
            loop.optimizer.zero_grad(set_to_none=True)
        with profiler.profile("[plain]loop.backward"):
            loss.backward()
        with profiler.profile("[plain]loop.optimizer_step"):
            loop.optimizer.step()
            if loop.scheduler is not None:
                loop.scheduler.step()


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
