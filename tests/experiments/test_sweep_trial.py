"""How one sweep trial's failure is classified and written down (no training, no Hydra app)."""

from __future__ import annotations

import json
import math

import pytest

from experiments.core.errors import UserError
from experiments.sweeps.trial import bad_result, classify, divergence_in, flatten, run_trial


def _run_dir(tmp_path, rows: list[str], metrics: dict | None = None):
    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss,val/err_best\n" + "\n".join(rows) + "\n")
    if metrics is not None:
        (tmp_path / "summary.json").write_text(json.dumps({"status": "finished", "metrics": metrics}))
    return tmp_path


def test_classify_tells_user_errors_oom_and_other_exceptions_apart():
    assert classify(UserError("optimizer.lr", -1, "must be > 0.", "Use 0.1."))[0] == "user_error"
    kind, reason = classify(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert kind == "out_of_memory" and reason.startswith("RuntimeError: CUDA out of memory")
    assert classify(MemoryError())[0] == "out_of_memory"
    assert classify(ZeroDivisionError("division by zero")) == ("exception", "ZeroDivisionError: division by zero")


def test_a_non_finite_training_loss_is_a_divergence(tmp_path):
    run = _run_dir(tmp_path, ["0,3,2.3,80.0", "1,7,nan,80.0"], {"val/err_best": 80.0})
    assert divergence_in(run) == "train/loss = nan at epoch 1, step 7"
    assert bad_result(run, "val/err_best", 80.0)[0] == "diverged", "a finite best error does not hide it"


def test_finite_results_pass_and_missing_metrics_are_named(tmp_path):
    run = _run_dir(tmp_path, ["0,3,2.3,80.0"], {"val/err_best": 80.0, "val/acc": 20.0})
    assert bad_result(run, "val/err_best", 80.0) is None
    kind, reason = bad_result(run, "val/accuracy", math.nan)
    assert kind == "missing_metric" and "val/acc, val/err_best" in reason
    assert bad_result(run, "val/err_best", math.inf)[0] == "non_finite_objective"


def test_outside_hydra_a_failing_trial_returns_nan_and_writes_its_reason(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"paths": {"run_dir": str(tmp_path / "trial")}, "optimized_metric": "val/err_best"})

    def boom(_cfg):
        raise ValueError("bad value")

    assert math.isnan(run_trial(cfg, boom))
    failure = json.loads((tmp_path / "trial" / "failure.json").read_text())
    assert failure["kind"] == "exception" and failure["reason"] == "ValueError: bad value"
    assert "Traceback" in failure["traceback"]
    assert json.loads((tmp_path / "trial" / "summary.json").read_text())["status"] == "failed"


def test_keyboard_interrupt_still_stops_the_sweep(tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"paths": {"run_dir": str(tmp_path)}})

    def interrupted(_cfg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, interrupted)


def test_flatten_joins_nested_search_spaces():
    assert flatten({"optimizer": {"lr": "a", "weight_decay": "b"}, "model.width": "c"}) == \
        {"optimizer.lr": "a", "optimizer.weight_decay": "b", "model.width": "c"}
