"""Per-step overhead (issue 19): the exclusive-time profiler adds up by hand, the trainer skips only hooks
that do nothing, and a diagnostics run reads no device value on the host between its logging steps.

No timing is asserted (the machine is shared): the benchmark's figures are checked for shape in
test_benchmark.py; here the mechanisms are checked against known answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from experiments.bench.breakdown import CATEGORIES, StepBreakdown, categorize
from experiments.training.lean_trainer import NoProfiler, streamline


class FakeClock:
    """A clock that advances only when told: every duration below is known exactly."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breakdown_charges_each_action_only_its_own_time():
    clock = FakeClock()
    profiler = StepBreakdown(clock)
    profiler.cost = 0.0  # the fake clock does not move during calibration: nothing to take out
    profiler.arm()
    for _ in range(2):  # two steps: outer 10 s, of which inner 3 s; 1 s outside every action
        profiler.start("run_training_batch")
        clock.now += 4
        profiler.start("[Strategy]SingleDeviceStrategy.backward")
        clock.now += 3
        profiler.stop("[Strategy]SingleDeviceStrategy.backward")
        clock.now += 3
        profiler.stop("run_training_batch")
        clock.now += 1
    profiler.disarm(steps=2)
    per_step = profiler.per_step_us()
    assert per_step == {"run_training_batch": 7e6, "[Strategy]SingleDeviceStrategy.backward": 3e6}
    assert profiler.step_us() == 11e6
    categories = categorize(per_step, [], profiler.step_us())
    assert categories["backward"] == 3e6
    assert categories["Lightning loop (closure, progress, dispatch)"] == 8e6  # 7 in the closure + 1 outside
    assert categories["step"] == 11e6 and set(categories) == {*CATEGORIES, "step"}


def test_breakdown_records_nothing_outside_its_window():
    clock = FakeClock()
    profiler = StepBreakdown(clock)
    profiler.start("[Callback]X.on_train_batch_end")
    clock.now += 5
    profiler.stop("[Callback]X.on_train_batch_end")
    assert not profiler.exclusive and profiler.window_steps == 0


def test_breakdown_takes_out_the_calibrated_cost_half_from_the_action_half_from_its_parent():
    clock = FakeClock()
    profiler = StepBreakdown(clock)
    profiler.cost = 2.0
    profiler.arm()
    profiler.start("parent")
    clock.now += 10
    profiler.start("child")
    clock.now += 4
    profiler.stop("child")
    clock.now += 10
    profiler.stop("parent")
    profiler.disarm(steps=1)
    # child: 4 - 1 (half its own pair); parent: 20 - 1 (its pair) - 1 (the child's outer half); step: 24 - 2 pairs
    assert profiler.per_step_us() == {"parent": 18e6, "child": 3e6}
    assert profiler.step_us() == 20e6


class Counting(pl.Callback):
    def __init__(self) -> None:
        self.batch_ends = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batch_ends += 1


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path: Path, callbacks: list, **kwargs) -> pl.Trainer:
    from pytorch_lightning.loggers import CSVLogger

    settings = {"max_steps": 5, "accelerator": "cpu", "logger": CSVLogger(tmp_path), "enable_progress_bar": False,
                "enable_model_summary": False, "default_root_dir": tmp_path, "callbacks": callbacks}
    return pl.Trainer(**{**settings, **kwargs})


def _loader():
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(40, 4)), batch_size=4)


def test_streamline_skips_only_hooks_that_do_nothing(tmp_path):
    counting, idle = Counting(), pl.Callback()
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None)
    every_step = ModelCheckpoint(dirpath=tmp_path / "steps", every_n_train_steps=2, save_top_k=-1)
    per_epoch_lr, per_step_lr = LearningRateMonitor(logging_interval="epoch"), LearningRateMonitor("step")
    trainer = _trainer(tmp_path, [counting, idle, last, every_step, per_epoch_lr, per_step_lr])
    streamline(trainer)

    assert isinstance(trainer.profiler, NoProfiler)
    assert idle.on_train_batch_end is None and idle.on_before_backward is None and counting.on_before_backward is None
    assert counting.on_train_batch_end is not None  # overridden: kept
    assert last.on_train_batch_end is None  # neither every_n_train_steps nor a time interval: a no-op
    assert every_step.on_train_batch_end is not None  # it saves every 2 steps: kept
    assert per_epoch_lr.on_train_batch_start is None and per_step_lr.on_train_batch_start is not None
    assert idle.on_train_epoch_end is not None  # only per-step hooks are touched
    trainer.fit(Tiny(), _loader())
    assert counting.batch_ends == 5
    assert sorted(p.name for p in (tmp_path / "steps").glob("*.ckpt")) == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"]


def test_a_profiler_asked_for_sees_every_hook(tmp_path):
    idle = pl.Callback()
    trainer = _trainer(tmp_path, [idle], profiler="simple")
    streamline(trainer)
    assert idle.on_train_batch_end is not None and type(trainer.profiler).__name__ == "SimpleProfiler"


def test_the_pipeline_trainer_is_streamlined(compose, tmp_path):
    from experiments.training.build import build_trainer

    cfg = compose(["callbacks=default", "data=synthetic", f"paths.run_dir={tmp_path}"])
    trainer = build_trainer(cfg)
    assert isinstance(trainer.profiler, NoProfiler)
    hooks = [(type(c).__name__, h) for c in trainer.callbacks for h in ("on_train_batch_start", "on_train_batch_end",
                                                                      "on_before_optimizer_step")
             if getattr(c, h) is not None]
    assert hooks == []  # callbacks=default has nothing to do per step


def test_lightning_sets_the_hook_name_the_fast_way_too():
    """The module stores ``_current_fx_name`` directly (Lightning sets it ~40 times a step); reading it back
    and nn.Module's own bookkeeping are unchanged."""
    from experiments.training.module import ClassificationModule

    module = ClassificationModule(torch.nn.Linear(3, 2), 2, optimizer={"_target_": "torch.optim.SGD", "lr": 0.1})
    module._current_fx_name = "training_step"
    assert module._current_fx_name == "training_step" and "_current_fx_name" in module.__dict__
    module.extra = torch.nn.Linear(2, 2)  # still registered as a submodule
    assert "extra" in dict(module.named_children())


@pytest.fixture(scope="module")
def probe_report():
    """Host reads per step of a real diagnostics run (the pipeline's module, callbacks and Trainer) over steps
    10..69, which include the logging step 49 (log_every_n_steps=50)."""
    from experiments.bench.steps import Contenders, StepCase, probe

    case = StepCase(overrides=["model=linear", "data=synthetic", "data.native_size=8"], callbacks=["diagnostics"],
                    batch_size=16, short_steps=2, long_steps=4, rounds=1, breakdown_steps=0, probe_window=60)
    return probe(Contenders(case), "callbacks=diagnostics", case.probe_window, log=lambda _: None)


def test_diagnostics_read_nothing_on_the_host_between_logging_steps(probe_report):
    report = probe_report
    assert report["steps"] == 60 and report["first_step"] == 10 and report["scheduled_steps"] == [49]
    assert report["reads_per_step_outside_scheduled"] == 0, report["by_step"]
    assert set(report["by_step"]) == {"49"}
    # On the logging step: Lightning's logger reads train/loss_step; the non-finite guard's flag and the
    # gradient-flow sample come up together in one read.
    assert report["by_method"] == {"item": 1, "tolist": 1}, report["top_sites"]
    assert any("gradient_flow.py" in site for site in report["top_sites"])


def test_the_probe_sees_a_read_per_step(tmp_path):
    """The probe itself is not blind: a callback that reads the loss every step is counted every step."""
    from experiments.bench.callbacks import SyncProbe

    class ReadsEveryStep(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            float(outputs["loss"])

    probe = SyncProbe(start_step=2, window=6, every_n_steps=50)
    trainer = _trainer(tmp_path, [probe, ReadsEveryStep()], max_steps=9, enable_checkpointing=False)
    trainer.fit(Tiny(), _loader())
    report = probe.report()
    assert report["steps"] == 6 and report["by_step"] == {str(s): 1 for s in range(2, 8)}
    assert report["reads_per_step_outside_scheduled"] == 1 and report["by_method"] == {"__float__": 1 * 6}


def test_the_progress_bar_is_redrawn_by_time_not_per_batch(tmp_path):
    from experiments.training.lean_trainer import ThrottledRichProgressBar

    bar = ThrottledRichProgressBar(interval=3600)
    drawn = []
    original = bar._update_metrics
    bar._update_metrics = lambda trainer, module: (drawn.append(trainer.global_step), original(trainer, module))
    trainer = _trainer(tmp_path, [bar], enable_progress_bar=True, max_steps=-1, max_epochs=2, limit_train_batches=5,
                       enable_checkpointing=False)
    trainer.fit(Tiny(), _loader())
    # The run's first batch (nothing drawn for an hour before) and every epoch's last batch (the bar ends
    # complete); on_train_epoch_end draws the metrics once more, as in Lightning's bar.
    assert drawn == [1, 5, 5, 10, 10]
