"""The non-finite guard without a host sync per step (issue 19): the check and the undo happen on the
device, the host reads the flag every n steps, and a non-finite step still changes nothing.

Known answers: the parameters and every optimizer-state tensor at the end of a diverged run equal, bit
for bit, those held right before the first non-finite step (momentum and weight decay included, and
the finite steps between the bad one and the check are not applied either); a finite run is bit for
bit the run without the guard.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from callbacks.gradient_flow import GradientFlow
from experiments.training.module import ClassificationModule

from .conftest import module_for, tiny_data, trainer_for


def small_mlp() -> nn.Module:
    """No BatchNorm: every piece of state is a parameter or optimizer state (running stats are neither)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32), nn.ReLU(), nn.Linear(32, 4))


class NaNAt(ClassificationModule):
    """Returns a NaN loss at the optimizer steps in ``nan_steps`` only (finite before and after)."""

    def __init__(self, *args, nan_steps: tuple[int, ...], **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_steps = set(nan_steps)

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * math.nan if self.global_step in self.nan_steps else loss


class StateAt(pl.Callback):
    """Copies of the parameters and optimizer state at the start of optimizer step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.params: dict[str, torch.Tensor] = {}
        self.state: dict[str, dict[str, torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.params, self.state = snapshot(pl_module, trainer.optimizers[0])


def snapshot(module: pl.LightningModule, optimizer: torch.optim.Optimizer):
    names = {id(p): n for n, p in module.named_parameters()}
    params = {n: p.detach().clone() for n, p in module.named_parameters()}
    state = {names[id(p)]: {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
             for p, s in optimizer.state.items()}
    return params, state


def assert_same(got, expected) -> None:
    got_params, got_state = got
    params, state = expected
    assert params and got_params.keys() == params.keys()
    for name, value in params.items():
        assert torch.equal(got_params[name], value), name
    assert got_state.keys() == state.keys()
    for name, entries in state.items():
        assert got_state[name].keys() == entries.keys()
        for key, value in entries.items():
            assert torch.equal(got_state[name][key], value), (name, key)


def diverge(tmp_path: Path, nan_steps: tuple[int, ...], every: int, optimizer: str = "torch.optim.SGD", **args):
    base = module_for(small_mlp(), optimizer=optimizer, **args)
    module = NaNAt(base.model, num_classes=4, optimizer=base.optimizer_cfg, nan_steps=nan_steps)
    before = StateAt(min(nan_steps))
    flow = GradientFlow(every_n_steps=100)
    trainer = trainer_for(tmp_path, [flow, before], max_epochs=1, limit_train_batches=8, limit_val_batches=0,
                          log_every_n_steps=every)
    trainer.fit(module, datamodule=tiny_data())
    return trainer, module, flow, before


@pytest.mark.parametrize("optimizer, args", [
    ("torch.optim.SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
    ("torch.optim.Adam", {"weight_decay": 1e-4}),
    ("torch.optim.SGD", {"momentum": 0.9, "weight_decay": 5e-4, "fused": True}),  # the found_inf route
])
def test_a_nonfinite_step_and_the_steps_until_the_check_change_nothing(tmp_path, optimizer, args):
    trainer, module, flow, before = diverge(tmp_path, nan_steps=(2,), every=4, optimizer=optimizer, **args)

    # Read every 4 steps: the flag raised at step 2 is seen after step 3; steps 2 and 3 were undone.
    assert flow.guard.stopped_at == 2 and trainer.global_step == 4 and trainer.should_stop
    assert flow.guard.checks == 1
    assert "step 2 (detected at step 3" in flow.guard.message
    assert_same(snapshot(module, trainer.optimizers[0]), (before.params, before.state))
    assert before.state  # the optimizer had state (momentum / Adam moments) to protect
    assert (tmp_path / "diagnostics/nonfinite_stop.json").is_file()


@pytest.mark.parametrize("args", [{"momentum": 0.9}, {"momentum": 0.9, "fused": True}], ids=["for-loop", "fused"])
def test_a_nonfinite_first_step_leaves_no_optimizer_state(tmp_path, args):
    """At the first step the optimizer creates its state inside the step (no snapshot can hold it), so the
    guard reads the flag at once there, and drops the state made from bad gradients (or, for a fused
    kernel that skipped its update, the uninitialised buffers it allocated)."""
    trainer, module, flow, before = diverge(tmp_path, nan_steps=(0,), every=4, **args)
    assert flow.guard.stopped_at == 0 and trainer.global_step == 4
    assert_same(snapshot(module, trainer.optimizers[0]), (before.params, {}))


def test_a_finite_run_is_the_run_without_the_guard(tmp_path):
    runs = []
    for guard in (True, False):
        torch.manual_seed(0)
        module = module_for(small_mlp(), momentum=0.9, weight_decay=5e-4)
        flow = GradientFlow(every_n_steps=3, stop_on_nonfinite=guard)
        trainer = trainer_for(tmp_path / str(guard), [flow], max_epochs=2, limit_train_batches=5, limit_val_batches=0,
                              log_every_n_steps=4)
        trainer.fit(module, datamodule=tiny_data())
        runs.append((snapshot(module, trainer.optimizers[0]), flow))
    (with_guard, flow), (without_guard, _) = runs
    assert_same(with_guard, without_guard)
    assert flow.guard.stopped_at is None
    assert flow.guard.checks == 4  # after steps 3 and 7 (every 4), and at both epoch ends (steps 4 and 9)
    # The gradient-flow samples (steps 0, 3, 6, 9) were read at those points and logged with their own step.
    assert [s["step"] for s in flow.history] == [0, 3, 6, 9]


def test_a_fused_optimizer_resumed_from_a_non_fused_checkpoint_is_still_undone():
    """Loading a non-fused optimizer's state sets the groups' ``fused`` to None (torch takes the saved
    groups): the step then runs the for-loop kernels, which ignore ``found_inf``, so the guard must undo
    the step itself. Known answer: the parameters and momentum of before the bad step, bit for bit."""
    from callbacks.nonfinite import _StepMask

    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(5, 3)), nn.Parameter(torch.randn(3))]
    saved = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = torch.ones_like(p)
    saved.step()  # momentum buffers exist
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, fused=True)
    optimizer.load_state_dict(saved.state_dict())
    assert optimizer.defaults["fused"] and not optimizer.param_groups[0]["fused"]
    before = [p.detach().clone() for p in params], [optimizer.state[p]["momentum_buffer"].clone() for p in params]
    for p in params:
        p.grad = torch.full_like(p, math.nan)
    mask, flag = _StepMask(), torch.ones(1)
    mask.before_step(optimizer, params, flag)
    optimizer.step()
    mask.after_step(flag)
    assert all(torch.equal(p, b) for p, b in zip(params, before[0]))
    assert all(torch.equal(optimizer.state[p]["momentum_buffer"], b) for p, b in zip(params, before[1]))
