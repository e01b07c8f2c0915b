"""Training throughput: our full training path against a plain PyTorch loop, the data path, options.

"Ours" is the pipeline itself: the datamodule, the ClassificationModule and the Trainer (default
loggers and callbacks) come from :mod:`experiments.training.build` and :func:`experiments.training.build.build_trainer`.
"Plain" is the loop a user would write by hand around the same model, data, batch size, optimizer,
schedule and batched augmentation. The overhead section runs them in alternating blocks of steps inside
one of our runs (:class:`~experiments.bench.callbacks.PairedBlocks`): each of our blocks is compared
with the plain blocks just before and after it, so a machine whose speed drifts compares like with
like. Both are warmed up first; a block is timed from the end of the step before it to the end of its
last optimizer step, data fetching and augmentation included.
"""

from __future__ import annotations

import contextlib
import io
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from experiments.bench.common import (
    clock_function,
    interleave,
    median,
    quiet_lightning,
    ratio,
    ratio_of_medians,
)
from experiments.core.compose import compose_train


@dataclass
class Case:
    """One model/data/batch combination, as written in ``conf/benchmark.yaml``."""

    name: str
    overrides: list[str]
    batch_size: int = 128
    warmup: int = 10
    steps: int = 50
    block: int = 0  # steps per alternating block (0: the whole window is one block); divides steps
    bare_lightning: bool = False  # also pair a bare Lightning Trainer with the plain loop (Lightning's own floor)
    fallback: list[str] = field(default_factory=list)  # used when the dataset's files are missing
    precision: str = "32-true"
    channels_last: bool = False
    gpu: bool = False
    clock: str = "wall"  # wall, or process (CPU time: what a shared core's other jobs cannot inflate)

    @classmethod
    def from_cfg(cls, cfg: Any, gpu: bool = False, clock: str = "wall") -> Case:
        from omegaconf import OmegaConf

        plain = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
        return cls(**{"clock": clock, **plain, "gpu": gpu})

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps

    @property
    def block_steps(self) -> int:
        block = self.block or self.steps
        if block < 1 or self.steps % block:
            raise ValueError(f"benchmark case {self.name}: block={self.block} must divide steps={self.steps}")
        return block


# --- shared pieces --------------------------------------------------------------------------------
def to_channels_last(model: nn.Module) -> nn.Module:
    """Weights and every input in ``torch.channels_last`` (NHWC): what ``model.channels_last=true`` means.

    A forward pre-hook converts the input, so the datamodule and the LightningModule need no change.
    """
    model.to(memory_format=torch.channels_last)

    def convert(_module: nn.Module, args: tuple) -> tuple:
        if args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
            return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
        return args

    model.register_forward_pre_hook(convert)
    return model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare(case: Case) -> tuple[Any, Any, list[str]]:
    """Compose the case's config and build its datamodule once (shared by every round and contender).

    Returns (cfg, datamodule, overrides actually used): the fallback overrides replace the case's
    when its dataset's files are not on this machine, and the JSON says so.
    """
    from experiments.training.build import build_datamodule

    overrides = list(case.overrides)
    try:
        cfg = compose_train(_run_overrides(case, overrides))
        datamodule = build_datamodule(cfg)
        datamodule.setup("fit")
    except ValueError:  # DataConfigError: the files are missing here
        if not case.fallback:
            raise
        overrides = [*overrides, *case.fallback]
        cfg = compose_train(_run_overrides(case, overrides))
        datamodule = build_datamodule(cfg)
        datamodule.setup("fit")
    if len(datamodule.train_set) < (case.total_steps + 2) * case.batch_size:
        raise ValueError(f"benchmark case {case.name}: {len(datamodule.train_set)} training images are fewer than "
                         f"{case.total_steps + 2} batches of {case.batch_size}; raise data.num_train")
    return cfg, datamodule, overrides


def _run_overrides(case: Case, overrides: Sequence[str]) -> list[str]:
    extra = [f"data.batch_size={case.batch_size}", f"trainer.precision={case.precision}", "resume=false",
             f"trainer.max_steps={case.total_steps}"]  # the plain loop's schedule has the run's length too
    if case.gpu:
        extra += ["trainer=gpu", "data.device_resident=true"]
    joined = " ".join(overrides)
    if "data=synthetic" in joined and "data.num_train=" not in joined:
        extra.append(f"data.num_train={(case.total_steps + 4) * case.batch_size + 128}")
    return [*overrides, *extra]


# --- ours -----------------------------------------------------------------------------------------
def ours_once(case: Case, overrides: Sequence[str], datamodule, probe_window: int = 0,
              rival: PlainLoop | None = None) -> dict[str, Any]:
    """One fit of the real pipeline for ``case.total_steps`` steps; images/s over the timed window.

    With ``rival`` (a plain loop) the window is cut into blocks that alternate with the rival's
    (:class:`~experiments.bench.callbacks.PairedBlocks`): the result holds both sides' block times and
    the per-block ratios. With ``probe_window`` > 0 the run is not timed but probed: host reads of
    tensor values per step.
    """
    from experiments.bench.callbacks import PairedBlocks, StepTimer, SyncProbe
    from experiments.training.build import build_module, build_trainer

    run_dir = tempfile.mkdtemp(prefix="bench-run-")
    # A probed run has one step more than its window: the end-of-run work (epoch-end callbacks, the last
    # checkpoint) happens after the window, not in its last step.
    total = case.warmup + (probe_window + 1 if probe_window else case.steps)
    extra = [f"paths.run_dir={run_dir}", f"trainer.max_steps={total}", "quiet=false"]
    clock = [] if probe_window else [f"+callbacks.bench_timer.clock={case.clock}"]
    if probe_window:
        extra += ["+callbacks.bench_probe._target_=experiments.bench.callbacks.SyncProbe",
                  f"+callbacks.bench_probe.start_step={case.warmup}", f"+callbacks.bench_probe.window={probe_window}"]
    elif rival is None:  # (a paired run is timed by PairedBlocks alone: no per-step clock read or GPU sync)
        extra += ["+callbacks.bench_timer._target_=experiments.bench.callbacks.StepTimer",
                  f"+callbacks.bench_timer.start_step={case.warmup}", *clock]
    try:
        with quiet_lightning():
            cfg = compose_train([*_run_overrides(case, overrides), *extra])
            pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
            module = build_module(cfg)
            if case.channels_last:
                to_channels_last(module.model)
            # A StringIO stdout is no terminal: no progress bar, as in a log file or CI (quiet=false keeps
            # the per-epoch line; the Rich bar of an interactive terminal is a display, not the default).
            with contextlib.redirect_stdout(io.StringIO()):  # also keeps the model summary out of the table
                trainer = build_trainer(cfg)
                if rival is not None:
                    paired = PairedBlocks(case.warmup, case.block_steps, rival.timed_steps, warmup=case.warmup,
                                          clock=case.clock)
                    trainer.callbacks.append(paired)  # as a user's own callback object enters a Trainer
                trainer.fit(module, datamodule=datamodule)
        if rival is not None:
            return {"ours_block_seconds": paired.ours, "plain_block_seconds": paired.rivals,
                    "ratios": paired.ratios(), "block_steps": case.block_steps}
        if probe_window:
            probe = next(c for c in trainer.callbacks if isinstance(c, SyncProbe))
            return probe.report()
        timer = next(c for c in trainer.callbacks if isinstance(c, StepTimer))
        return {"images_per_s": timer.steps * case.batch_size / timer.seconds, "steps": timer.steps}
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


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


def bare_once(case: Case, cfg, datamodule, rival: PlainLoop) -> dict[str, Any]:
    """A bare Lightning Trainer (:class:`BareModule`, the loss alone: no logger, callbacks, checkpoints,
    progress bar; the steps section uses it too) paired with the plain loop like :func:`ours_once`: what
    Lightning's loop costs before anything of ours is added."""
    from experiments.bench.callbacks import PairedBlocks
    from experiments.training.build import build_model, input_shape_of

    torch.manual_seed(int(cfg.seed))
    module = BareModule(build_model(cfg.model, input_shape_of(cfg)), cfg)
    if case.channels_last:
        to_channels_last(module.model)
    paired = PairedBlocks(case.warmup, case.block_steps, rival.timed_steps, warmup=case.warmup, clock=case.clock)
    with quiet_lightning():
        trainer = pl.Trainer(accelerator="gpu" if case.gpu else "cpu", devices=1, precision=case.precision,
                             max_steps=case.total_steps, max_epochs=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=0, callbacks=[paired], default_root_dir=tempfile.gettempdir())
        trainer.fit(module, datamodule=datamodule)
    return {"ours_block_seconds": paired.ours, "plain_block_seconds": paired.rivals, "ratios": paired.ratios()}


# --- plain ----------------------------------------------------------------------------------------
@dataclass
class Options:
    """What a plain-loop contender changes against the baseline."""

    channels_last: bool = False
    autocast: str | None = None  # "bf16" or "fp16"
    deterministic: bool = False
    compile: bool = False


class PlainLoop:
    """The hand-written loop: same model, data, optimizer, schedule, loss and batched augmentation."""

    def __init__(self, cfg, datamodule, device: torch.device, options: Options | None = None,
                 clock: str = "wall") -> None:
        from experiments.training.build import build_model, input_shape_of
        from experiments.training.optim import build_optimizer, build_scheduler

        self.clock = clock_function(clock)
        self.options = options or Options()
        self.datamodule, self.device = datamodule, device
        datamodule.device_hint = device  # device_resident data goes where this loop trains, Trainer or not
        torch.manual_seed(int(cfg.seed))
        self.model = build_model(cfg.model, input_shape_of(cfg)).to(device).train()
        if self.options.channels_last:
            to_channels_last(self.model)
        self.optimizer = build_optimizer(cfg.optimizer, self.model)
        self.scheduler = None
        if cfg.get("scheduler") is not None and cfg.scheduler.get("_target_"):
            per_epoch = len(datamodule.train_dataloader())
            # The length Lightning gives the schedule (Trainer.estimated_stepping_batches): with another
            # length the two runs would train along different paths, and a step's time depends on the
            # path (LeNet-5's measured 7% apart when the plain loop's lr stayed high while ours decayed).
            total = per_epoch * int(cfg.trainer.max_epochs)
            max_steps = int(cfg.trainer.get("max_steps") or -1)
            total = min(total, max_steps) if max_steps > 0 else total
            spec = build_scheduler(cfg.scheduler, self.optimizer, total, per_epoch)
            if spec is not None and spec.get("interval") == "step":
                self.scheduler = spec["scheduler"]
        self.label_smoothing = float((cfg.get("module") or {}).get("label_smoothing", 0.0))
        self.scaler = torch.amp.GradScaler(device.type) if self.options.autocast == "fp16" else None
        self.compile_seconds: float | None = None
        self._stream = None  # the batches timed_steps continues from
        if self.options.compile:
            self.model.compile()

    def _batches(self):
        return cycle_batches(self.datamodule)

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.options.autocast or "")
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = self.model(images)
            logits = out[0] if isinstance(out, (tuple, list)) else out
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def timed_steps(self, steps: int) -> float:
        """Seconds (on the loop's clock) for ``steps`` more steps, continuing where the last call stopped."""
        if self._stream is None:
            self._stream = self._batches()
        _sync(self.device)
        started = self.clock()
        for _ in range(steps):
            images, labels = next(self._stream)
            images = self.datamodule.transform_batch(images.to(self.device, non_blocking=True), train=True)
            self._step(images, labels.to(self.device, non_blocking=True))
        _sync(self.device)
        return self.clock() - started

    def run(self, warmup: int, steps: int) -> float:
        """Images/s over ``steps`` steps after ``warmup`` untimed ones (the first compiled step is timed apart)."""
        with _deterministic(self.options.deterministic):
            batches = self._batches()
            started, count = 0.0, 0
            for index in range(warmup + steps):
                images, labels = next(batches)
                images = images.to(self.device, non_blocking=True)
                labels = labels.to(self.device, non_blocking=True)
                images = self.datamodule.transform_batch(images, train=True)
                if index == warmup:
                    _sync(self.device)
                    started = self.clock()
                first = self.options.compile and self.compile_seconds is None
                if first:
                    _sync(self.device)
                    begun = time.perf_counter()
                self._step(images, labels)
                if first:
                    _sync(self.device)
                    self.compile_seconds = time.perf_counter() - begun
                count += images.shape[0] if index >= warmup else 0
            _sync(self.device)
            return count / (self.clock() - started)


def cycle_batches(datamodule):
    """Training batches without end: a run may need more batches than one epoch holds."""
    while True:
        yield from datamodule.train_dataloader()


@contextlib.contextmanager
def _deterministic(enabled: bool):
    """``torch.use_deterministic_algorithms`` for the duration of one run, then the previous setting."""
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def data_path_once(datamodule, device: torch.device, warmup: int, steps: int, clock: str = "wall") -> float:
    """Images/s of the data path alone: loader + transfer + batched augmentation, no model."""
    now = clock_function(clock)
    batches = cycle_batches(datamodule)
    started, count = 0.0, 0
    for index in range(warmup + steps):
        if index == warmup:
            _sync(device)
            started = now()
        images, labels = next(batches)
        images = datamodule.transform_batch(images.to(device, non_blocking=True), train=True)
        labels = labels.to(device, non_blocking=True)
        count += images.shape[0] if index >= warmup else 0
    _sync(device)
    return count / (now() - started)


# --- sections -------------------------------------------------------------------------------------
def device_of(case: Case) -> torch.device:
    return torch.device("cuda" if case.gpu else "cpu")


def overhead(case: Case, rounds: int, data_path: bool = False, data_steps: int = 400,
             probe_window: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Section 1 (and 2 when ``data_path``): ours vs plain in alternating blocks, one of our runs per round.

    The figure is the median over every block of every round of (plain's neighbouring blocks / ours):
    ours's speed as a fraction of the plain loop's. A fresh run and a fresh plain loop each round.
    """
    cfg, datamodule, used = prepare(case)
    device = device_of(case)
    autocast = {"bf16-mixed": "bf16", "16-mixed": "fp16"}.get(case.precision)
    plain_options = Options(channels_last=case.channels_last, autocast=autocast)
    log(f"  {case.name}: {rounds} runs of ours, each with the plain loop in alternating blocks of "
        f"{case.block_steps} steps ({case.warmup}+{case.steps} steps, batch {case.batch_size})")
    paired_rounds: list[dict[str, Any]] = []
    bare_rounds: list[dict[str, Any]] = []
    data_samples: list[float] = []
    for _ in range(rounds):
        rival = PlainLoop(cfg, datamodule, device, plain_options, case.clock)
        paired_rounds.append(ours_once(case, used, datamodule, rival=rival))
        if case.bare_lightning:
            rival = PlainLoop(cfg, datamodule, device, plain_options, case.clock)
            bare_rounds.append(bare_once(case, cfg, datamodule, rival))
        if data_path:
            data_samples.append(data_path_once(datamodule, device, min(case.warmup, 5), data_steps, case.clock))
    ours = paired_summary(paired_rounds, "ours")
    images = case.block_steps * case.batch_size

    def images_per_s(key: str) -> list[float]:  # per round, over the timed blocks (the rival's all of them)
        out = []
        for item in paired_rounds:
            seconds = [t for t in item[key] if math.isfinite(t)]
            out.append(len(seconds) * images / sum(seconds) if seconds else float("nan"))
        return out

    samples = {"ours": images_per_s("ours_block_seconds"), "plain": images_per_s("plain_block_seconds")}
    result: dict[str, Any] = {
        "case": case.name, "overrides": used, "batch_size": case.batch_size, "warmup": case.warmup,
        "steps": case.steps, "block_steps": case.block_steps, "precision": case.precision,
        "channels_last": case.channels_last, "device": device.type, "rounds": rounds, "clock": case.clock,
        "method": "alternating blocks inside one run; per block of ours: mean of the plain blocks before and "
                  "after / ours; median over all blocks of all rounds",
        "ratio_ours_over_plain": ours.pop("ratio"), **ours,
        "samples_images_per_s": samples,
        "ours_images_per_s": median(samples["ours"]), "plain_images_per_s": median(samples["plain"]),
        "ratio_of_medians_ours_over_plain": ratio_of_medians(samples["ours"], samples["plain"]),
    }
    if bare_rounds:
        bare = paired_summary(bare_rounds, "lightning")
        result["lightning"] = {"ratio_over_plain": bare.pop("ratio"), **bare}
        result["ratio_ours_over_lightning"] = result["ratio_ours_over_plain"] / result["lightning"]["ratio_over_plain"]
    if data_path:
        result["data_images_per_s"] = median(data_samples)
        result["ratio_data_over_ours_training"] = ratio(data_samples, samples["ours"])
    if probe_window:
        result["sync_probe"] = ours_once(case, used, datamodule, probe_window=probe_window)
    return result


def paired_summary(rounds: list[dict[str, Any]], side: str) -> dict[str, Any]:
    """The figures of paired runs (:func:`ours_once` or :func:`bare_once`, one per round): the median over
    every block of every round, per-round medians, quartiles, and each block's seconds (``side`` names
    the contender's blocks beside the plain loop's)."""
    ratios = [r for item in rounds for r in item["ratios"]]
    return {"ratio": median(ratios), "block_ratios": ratios,
            "round_medians": [median(item["ratios"]) for item in rounds],
            "block_ratio_quartiles": quartiles(ratios),
            "block_seconds": [{side: item["ours_block_seconds"], "plain": item["plain_block_seconds"]}
                              for item in rounds]}


def quartiles(values: Sequence[float]) -> list[float]:
    """[25th, 75th] percentile: how far the blocks scatter around the median."""
    import statistics

    if len(values) < 2:
        return [float("nan"), float("nan")]
    cuts = statistics.quantiles(values, n=4)
    return [cuts[0], cuts[2]]


OPTION_SETS: dict[str, Options] = {
    "channels_last": Options(channels_last=True),
    "compile": Options(compile=True),
    "deterministic": Options(deterministic=True),
    "bf16_autocast": Options(autocast="bf16"),
    "fp16_autocast": Options(autocast="fp16"),
}


def options(case: Case, names: Sequence[str], rounds: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Section 5: each option against the fp32 NCHW baseline, plain loop, all contenders interleaved.

    Every contender keeps its model across rounds (a compiled model compiles once); its compile time
    is the first step's time, reported apart and never part of the throughput.
    """
    cfg, datamodule, used = prepare(case)
    device = device_of(case)
    loops = {"baseline": PlainLoop(cfg, datamodule, device)}
    for name in names:
        loops[name] = PlainLoop(cfg, datamodule, device, OPTION_SETS[name])
    log(f"  options on {case.name}: {rounds} rounds of {', '.join(loops)} ({case.warmup}+{case.steps} steps)")
    samples = interleave({name: (lambda loop=loop: loop.run(case.warmup, case.steps)) for name, loop in loops.items()},
                         rounds)
    rows = {}
    for name in names:
        rows[name] = {"images_per_s": median(samples[name]),
                      "ratio_over_baseline": ratio(samples[name], samples["baseline"])}
        if loops[name].compile_seconds is not None:
            rows[name]["compile_seconds"] = loops[name].compile_seconds
    return {"case": case.name, "overrides": used, "batch_size": case.batch_size, "device": device.type,
            "rounds": rounds, "baseline_images_per_s": median(samples["baseline"]), "options": rows,
            "samples_images_per_s": samples}


def finite_positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0
