"""Hydra's Optuna sweeper, made resumable: ``hydra.sweeper._target_`` of the Optuna presets.

The plugin (hydra-optuna-sweeper 1.3) already stores trials in an Optuna storage, but on its own a
restarted sweep does not resume: it runs ``n_trials`` *more* trials, numbers its jobs from 0 again (so
``<sweep dir>/0_<model>-<data>/`` would be reused), needs the SQLite file's folder to exist before any
job made it, and crashes at the end when every trial failed. This subclass fixes exactly that:

* ``study_name: null`` becomes ``<model>-<data>-<preset>-<hash>`` where the hash covers the command
  line (task overrides, search space, direction, but not ``n_trials`` or the launcher), so running the
  same command again reaches the same study and the same sweep folder, and a different command
  starts a fresh one;
* ``storage: sweep_dir`` means ``sqlite:///<sweep dir>/optuna.db`` (the folder is created first);
* ``n_trials`` is the study's total: trials already recorded are not run again, and job numbers
  continue from the number of recorded trials, so ``hydra.job.num`` equals the Optuna trial number and
  each trial keeps its own run folder;
* a trial left RUNNING by a killed sweep is marked FAIL on restart (one process per study: sharing one
  storage between concurrently running sweeps is not supported by this class);
* when no trial completed, the sweep ends with an error message instead of Optuna's traceback.

The sweep folder and study name are resolved once, in the sweeper's process, and pinned for the jobs
(through ``hydra.overrides.hydra``, which every launcher re-applies when it composes a job's config):
interpolations in them could otherwise resolve differently inside each job.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import optuna
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)

STORAGE_IN_SWEEP_DIR = "sweep_dir"
DB_FILE = "optuna.db"
# Hydra overrides that change what a study optimises, so they belong to its identity.
_IDENTITY_HYDRA_PREFIXES = ("hydra.sweeper.params", "+hydra.sweeper.params", "~hydra.sweeper.params",
                            "hydra.sweeper.direction", "hydra/sweeper")


def default_study_name(config: DictConfig) -> str:
    """``<model>-<data>-<preset>-<6 hex digits of the command line>``: same command, same study."""
    choices = config.hydra.runtime.choices
    hydra_overrides = [o for o in config.hydra.overrides.hydra if o.startswith(_IDENTITY_HYDRA_PREFIXES)]
    identity = "\n".join(sorted(config.hydra.overrides.task) + ["--"] + sorted(hydra_overrides))
    digest = hashlib.sha256(identity.encode()).hexdigest()[:6]
    parts = [choices.get("model"), choices.get("data"), choices.get("hparams_search") or "optuna", digest]
    return "-".join(str(p) for p in parts if p)


def _pin_for_jobs(config: DictConfig, key: str, value: str) -> None:
    """Set ``key`` in the sweeper's config and make every job's config use the same literal value."""
    with read_write(config), open_dict(config):
        OmegaConf.update(config, key, value, merge=False)
        pinned = [o for o in config.hydra.overrides.hydra if not o.startswith(f"{key}=")]
        quoted = value if all(c not in value for c in " ,'\"()[]{}=") else "'" + value.replace("'", "\\'") + "'"
        config.hydra.overrides.hydra = [*pinned, f"{key}={quoted}"]


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    """See the module docstring; everything else is the plugin's own behaviour."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        if not self.study_name:
            self.study_name = default_study_name(config)
        _pin_for_jobs(config, "hydra.sweeper.study_name", self.study_name)
        sweep_dir = str(config.hydra.sweep.dir)  # resolved now, with the study name in place
        _pin_for_jobs(config, "hydra.sweep.dir", sweep_dir)
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        if self.storage == STORAGE_IN_SWEEP_DIR:
            self.storage = f"sqlite:///{Path(sweep_dir) / DB_FILE}"
        metric = str(config.get("optimized_metric", ""))
        directions = self._get_directions()
        if metric.endswith(("acc", "acc5")) and directions == ["minimize"]:
            log.warning(f"optimized_metric={metric} is minimised: add hydra.sweeper.direction=maximize "
                        "unless that is what you want.")
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        recorded = self._recorded_trials()
        self.job_idx = recorded
        remaining = max(0, self.n_trials - recorded)
        log.info(f"Study {self.study_name}: {recorded} trial(s) recorded, {remaining} to run "
                 f"(n_trials={self.n_trials} in total)")
        if recorded and remaining and hasattr(self.sampler, "reseed_rng"):
            self.sampler.reseed_rng()  # a seeded sampler would otherwise draw the recorded trials' values again
        if remaining == 0:
            self._write_results()
            return
        self.n_trials = remaining
        try:
            super().sweep(arguments)
        except ValueError as error:
            if "No trials are completed yet" not in str(error):
                raise
            log.error(f"No trial of study {self.study_name} completed; the reasons are in each trial's "
                      f"failure.json: python -m experiments.sweep_report {self.sweep_dir}")
            self._write_results()

    def _recorded_trials(self) -> int:
        """How many trials the storage holds for this study; stale RUNNING ones are marked FAIL."""
        if self.storage is None:
            return 0
        try:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
        except KeyError:
            return 0
        storage = study._storage
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            storage.set_trial_user_attr(trial._trial_id, "failure", "interrupted: still running when the sweep "
                                        "was restarted")
            storage.set_trial_state(trial._trial_id, optuna.trial.TrialState.FAIL)
            log.warning(f"Trial {trial.number} was left running by an interrupted sweep: marked failed")
        return len(study.trials)

    def _write_results(self) -> None:
        """``optimization_results.yaml`` as the plugin writes it, or with ``best_value: null``."""
        results: dict[str, Any] = {"name": "optuna", "study_name": self.study_name, "best_params": {},
                                   "best_value": None}
        if self.storage is not None:
            try:
                study = optuna.load_study(study_name=self.study_name, storage=self.storage)
                results.update(best_params=dict(study.best_trial.params), best_value=study.best_trial.value)
            except (KeyError, ValueError):
                pass
        OmegaConf.save(OmegaConf.create(results), Path(self.sweep_dir) / "optimization_results.yaml")


class ResumableOptunaSweeper(OptunaSweeper):
    """``hydra.sweeper._target_`` for the Optuna presets: the plugin's sweeper with resume (see above)."""

    def __init__(self, sampler: Any, direction: Any, storage: Any, study_name: str | None, n_trials: int,
                 n_jobs: int, max_failure_rate: float, search_space: DictConfig | None,
                 custom_search_space: str | None, params: DictConfig | None) -> None:
        self.sweeper = ResumableOptunaSweeperImpl(sampler, direction, storage, study_name, n_trials, n_jobs,
                                                  max_failure_rate, search_space, custom_search_space, params)
