"""The resumable Optuna sweeper and its config (``hydra/sweeper=resumable_optuna``), where Hydra looks.

Hydra takes sweeper classes only from the ``hydra_plugins`` package and imports every module there
when any app starts, so this one stays tiny: the implementation (and Optuna) is imported from
:mod:`experiments.sweeps.sweeper` only when a sweep is built.

The config extends the plugin's ``OptunaSweeperConf`` in two ways: ``params`` may be nested
(``params: {optimizer: {lr: ...}}``), so one range is overridable from the command line as
``hydra.sweeper.params.optimizer.lr=...`` (the plugin's flat ``optimizer.lr:`` keys cannot be
addressed by an override), and ``storage`` defaults to a SQLite file in the sweep folder.

No ``from __future__ import annotations`` here: Hydra executes a plugin module before it is in
``sys.modules``, and dataclasses cannot resolve string annotations there.
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

try:
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # the [sweeps] extra is not installed: nothing to register, and no warning per app start
    OptunaSweeper = None

if OptunaSweeper is not None:

    class ResumableOptunaSweeper(OptunaSweeper):
        """Optuna's sweeper plus resume, default study names and nested params (see experiments.sweeps.sweeper)."""

        def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: str | None, n_trials: int,
                     n_jobs: int, max_failure_rate: float, search_space: DictConfig | None,
                     custom_search_space: str | None, params: DictConfig | None) -> None:
            from experiments.sweeps.sweeper import ResumableOptunaSweeperImpl

            self.sweeper = ResumableOptunaSweeperImpl(sampler, direction, storage, study_name, n_trials, n_jobs,
                                                      max_failure_rate, search_space, custom_search_space, params)

    @dataclass
    class ResumableOptunaSweeperConf(OptunaSweeperConf):
        """The plugin's config with our target, storage in the sweep folder, nested params, and a failed
        trial that never stops the sweep (``max_failure_rate: 1.0``; 0.5 stops once half have failed)."""

        _target_: str = "hydra_plugins.cnn_experiments_sweeper.resumable_optuna_sweeper.ResumableOptunaSweeper"
        # "sweep_dir": sqlite:///<sweep dir>/optuna.db; null: in memory (no resume); or any Optuna storage URL.
        storage: Any | None = "sweep_dir"
        # null: <model>-<data>-<preset>-<hash of the command line>, so the same command resumes its study.
        study_name: str | None = None
        # Trials asked from Optuna at once; with hydra/launcher=joblib set it to hydra.launcher.n_jobs.
        n_jobs: int = 1
        # Search space, nested or flat: {optimizer: {lr: "tag(log, interval(1e-4, 1.0))"}}.
        params: dict[str, Any] | None = None
        max_failure_rate: float = 1.0

    ConfigStore.instance().store(group="hydra/sweeper", name="resumable_optuna", node=ResumableOptunaSweeperConf,
                                 provider="cnn-experiments")
