"""The search presets: what they sample (statistically), what they compose to, and the narrowing rule.

No training here: the presets are composed with Hydra, the sweeper is built from the composed config
exactly as Hydra builds it, and values are drawn through Optuna with the sampler the preset selects.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from hydra.utils import instantiate
from optuna.distributions import FloatDistribution
from scipy import stats

from experiments.sweeps.coarse_to_fine import _sets_key, interval_override, narrow
from experiments.sweeps.sweeper import default_study_name

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space(cfg) -> tuple[object, dict]:
    """The sweeper Hydra would build from ``cfg``, and the Optuna distributions it searches."""
    sweeper = instantiate(cfg.hydra.sweeper)
    impl = sweeper.sweeper
    return impl, impl.search_space([]).distributions


def _draw(sampler, distributions: dict, n: int) -> dict[str, np.ndarray]:
    study = optuna.create_study(sampler=sampler)
    draws: dict[str, list[float]] = {name: [] for name in distributions}
    rng = np.random.default_rng(0)
    for _ in range(n):
        trial = study.ask(fixed_distributions=distributions)
        for name in distributions:
            draws[name].append(trial.params[name])
        study.tell(trial, float(rng.random()))
    return {name: np.asarray(values) for name, values in draws.items()}


@pytest.mark.parametrize("key", ["optimizer.lr", "optimizer.weight_decay"])
def test_random_log_samples_log_uniformly(compose, key):
    cfg = compose(["hparams_search=random_log", "hydra.sweeper.sampler.seed=0"])
    impl, distributions = _space(cfg)
    assert type(impl.sampler).__name__ == "RandomSampler"
    dist = distributions[key]
    assert isinstance(dist, FloatDistribution) and dist.log
    values = _draw(impl.sampler, distributions, 500)[key]
    assert values.min() >= dist.low and values.max() <= dist.high
    lo, hi = math.log10(dist.low), math.log10(dist.high)
    log_fit = stats.kstest(np.log10(values), "uniform", args=(lo, hi - lo))
    assert log_fit.pvalue > 0.01, f"log10 values are not uniform on [{lo}, {hi}]: {log_fit}"
    # The same test has the power to tell log-uniform from uniform: the raw values are far from uniform.
    linear_fit = stats.kstest(values, "uniform", args=(dist.low, dist.high - dist.low))
    assert linear_fit.pvalue < 1e-6
    # Each decade gets about the same share of the draws (for lr 1e-4..1: a quarter each).
    decades = np.histogram(np.log10(values), bins=round(hi - lo), range=(lo, hi))[0]
    assert decades.min() > 0.6 * len(values) / len(decades)


def test_tpe_preset_searches_the_same_log_space(compose):
    impl, distributions = _space(compose(["hparams_search=tpe"]))
    _, random_space = _space(compose(["hparams_search=random_log"]))
    assert type(impl.sampler).__name__ == "TPESampler"
    assert distributions == random_space
    assert all(isinstance(d, FloatDistribution) and d.log for d in distributions.values())


def test_grid_preset_is_log_spaced_with_the_basic_sweeper(compose):
    cfg = compose(["hparams_search=grid"])
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    for key in ("optimizer.lr", "optimizer.weight_decay"):
        values = [float(v) for v in str(cfg.hydra.sweeper.params[key]).split(",")]
        assert len(values) >= 3
        assert np.allclose(np.diff(np.log10(values)), 1.0)


def test_search_range_overridable_from_the_command_line(compose):
    cfg = compose(["hparams_search=random_log", "hydra.sweeper.params.optimizer.lr='tag(log, interval(1e-5, 1e-2))'",
                   "~hydra.sweeper.params.optimizer.weight_decay", "hydra.sweeper.direction=maximize",
                   "optimized_metric=val/acc"])
    impl, distributions = _space(cfg)
    assert distributions == {"optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True)}
    assert impl.directions == ["maximize"]
    assert cfg.optimized_metric == "val/acc"


def test_study_name_follows_the_command_not_the_trial_count(compose):
    base = ["hparams_search=random_log", "model=lenet5", "data=synthetic"]
    name = default_study_name(compose(base))
    assert name.startswith("lenet5-synthetic-random_log-")
    assert default_study_name(compose([*base, "hydra.sweeper.n_trials=99"])) == name
    assert default_study_name(compose([*base, "trainer.max_epochs=3"])) != name
    assert default_study_name(compose([*base, "hydra.sweeper.params.optimizer.lr='tag(log, interval(1e-5, 1e-2))'"])) != name


@pytest.mark.parametrize("log", [True, False])
def test_fine_range_inside_coarse_and_holds_the_best(log):
    rng = np.random.default_rng(1)
    coarse = (1e-4, 1.0) if log else (0.0, 1.0)
    for _ in range(200):
        raw = 10 ** rng.uniform(-4, 0, size=rng.integers(1, 6)) if log else rng.uniform(0, 1, size=rng.integers(1, 6))
        top = [float(v) for v in raw]
        lo, hi = narrow(top, coarse, log, widen=rng.uniform(0, 1), min_width=rng.uniform(0, 0.5))
        assert coarse[0] <= lo <= min(top) and max(top) <= hi <= coarse[1]


def test_narrow_widens_in_log_space_and_respects_a_minimum_width():
    lo, hi = narrow([1e-3, 1e-2], (1e-6, 1.0), log=True, widen=0.5, min_width=0.0)
    assert math.isclose(lo, 10**-3.5) and math.isclose(hi, 10**-1.5)
    lo, hi = narrow([1e-3], (1e-4, 1.0), log=True, widen=0.5, min_width=0.25)  # one decade around 1e-3
    assert math.isclose(math.log10(hi) - math.log10(lo), 1.0)
    lo, hi = narrow([0.9], (1e-4, 1.0), log=True, widen=0.5, min_width=0.25)  # clipped at the top
    assert hi == 1.0 and lo < 0.9


def test_fine_overrides_replace_the_searched_keys():
    assert interval_override("optimizer.lr", (1e-4, 1e-2), True) == \
        "hydra.sweeper.params.optimizer.lr='tag(log, interval(0.0001, 0.01))'"
    keys = {"optimizer.lr"}
    assert _sets_key("optimizer.lr=tag(log, interval(1e-5, 1))", keys)
    assert _sets_key("hydra.sweeper.params.optimizer.lr='interval(0.1, 1)'", keys)
    assert not _sets_key("optimizer.lr=0.1", keys) and not _sets_key("optimizer.momentum=0.8,0.9", keys)
