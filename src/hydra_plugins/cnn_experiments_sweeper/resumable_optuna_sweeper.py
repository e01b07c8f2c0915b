"""The project's Optuna sweeper and its configs, where Hydra looks for them.

Hydra takes sweeper classes only from the ``hydra_plugins`` package and imports every module there
when any app starts, so this one stays tiny and imports neither Optuna nor the implementation
(:mod:`experiments.sweeps.sweeper`) until a sweep is built. It registers with Hydra's ConfigStore:

* ``hydra/sweeper=resumable_optuna``: the sweeper (storage in the sweep folder, study name from the
  command line, nested ``params`` so a range is overridable as ``hydra.sweeper.params.optimizer.lr=...``);
* ``hydra/sweeper/sampler=random|tpe|grid``: Optuna's samplers, each with its settings;
* ``hydra/sweeper/pruner=none|median|sha|hyperband``: Optuna's pruners, each with its settings, the
  step being the number of epochs trained (``none``, the default, reports nothing).

No ``from __future__ import annotations`` here: Hydra executes a plugin module before it is in
``sys.modules``, and dataclasses cannot resolve string annotations there.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import MISSING, DictConfig


class ResumableOptunaSweeper(Sweeper):
    """Hydra's handle on :class:`experiments.sweeps.sweeper.StudySweeper`, which does the work."""

    def __init__(self, sampler: Any, pruner: Any, direction: Any, storage: Any, study_name: str | None,
                 n_trials: int, n_jobs: int, max_failure_rate: float, params: DictConfig | None,
                 heartbeat_interval: float, heartbeat_grace: float) -> None:
        from experiments.sweeps.sweeper import StudySweeper

        self.sweeper = StudySweeper(sampler=sampler, pruner=pruner, direction=direction, storage=storage,
                                    study_name=study_name, n_trials=n_trials, n_jobs=n_jobs,
                                    max_failure_rate=max_failure_rate, params=params,
                                    heartbeat_interval=heartbeat_interval, heartbeat_grace=heartbeat_grace)

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)


# ------------------------------------------------------------------------------------------ samplers


@dataclass
class RandomSamplerConf:
    """Independent uniform draws (log-uniform for tag(log, ...)): the lectures' random search."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class TPESamplerConf:
    """Tree-structured Parzen estimator: random for ``n_startup_trials``, then where results were good.
    ``constant_liar`` keeps parallel workers from all trying the same point."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    group: bool = False
    constant_liar: bool = True


@dataclass
class GridSamplerConf:
    """Every combination of choice(...)/range(...) values once; the values come from the search space."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: int | None = None


# ------------------------------------------------------------------------------------------- pruners


@dataclass
class NoPrunerConf:
    """Every trial trains to the end; trials report nothing (the default)."""

    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    """Stop a trial whose best value so far is worse than the median of earlier trials at the same epoch."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5   # trials that always finish, so the median means something
    n_warmup_steps: int = 0     # epochs a trial always trains before it may be pruned
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConf:
    """Asynchronous successive halving: at epochs r, r*eta, r*eta^2... keep the best 1/eta."""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = 1       # epochs before the first rung ("auto": estimated from the first trials)
    reduction_factor: int = 3
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConf:
    """Several successive-halving brackets with different first rungs (Li et al. 2018)."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "${trainer.max_epochs}"   # the full training, in epochs
    reduction_factor: int = 3
    bootstrap_count: int = 0


# ------------------------------------------------------------------------------------------- sweeper


@dataclass
class ResumableOptunaSweeperConf:
    """The sweeper's settings; ``python -m experiments.train -m hparams_search=random_log --cfg hydra``
    shows them composed."""

    _target_: str = "hydra_plugins.cnn_experiments_sweeper.resumable_optuna_sweeper.ResumableOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    sampler: Any = MISSING   # from hydra/sweeper/sampler (MISSING: the chosen option fills it)
    pruner: Any = MISSING    # from hydra/sweeper/pruner
    # minimize or maximize (a list for several objectives: the job then returns one value per objective).
    direction: Any = "minimize"
    # "sweep_dir": sqlite:///<sweep dir>/optuna.db; null: in memory (no resume); or any Optuna storage URL.
    storage: Any | None = "sweep_dir"
    # null: <model>-<data>-<preset>-<hash of the command line>, so the same command resumes its study.
    study_name: str | None = None
    # Trials in the study when the sweep ends, those already recorded (by any worker) included.
    n_trials: int = 20
    # Trials asked from Optuna at once; with hydra/launcher=joblib set it to hydra.launcher.n_jobs.
    n_jobs: int = 1
    # Stop once more than this fraction of the launched trials failed (1.0: never).
    max_failure_rate: float = 1.0
    # Search space, nested or flat: {optimizer: {lr: "tag(log, interval(1e-4, 1.0))"}}.
    params: Any | None = None
    # Seconds between a worker's heartbeats for its running trials, and the silence after which a
    # worker on another host counts as dead (its trials are marked failed; on this host a dead pid does).
    heartbeat_interval: float = 30.0
    heartbeat_grace: float = 120.0


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="resumable_optuna", node=ResumableOptunaSweeperConf,
             provider="cnn-experiments")
for _name, _node in {"random": RandomSamplerConf, "tpe": TPESamplerConf, "grid": GridSamplerConf}.items():
    _store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="cnn-experiments")
for _name, _node in {"none": NoPrunerConf, "median": MedianPrunerConf, "sha": SuccessiveHalvingPrunerConf,
                     "hyperband": HyperbandPrunerConf}.items():
    _store.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="cnn-experiments")
