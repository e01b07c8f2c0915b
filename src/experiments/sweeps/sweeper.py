"""Hydra's Optuna sweeper, made resumable: the implementation behind the Optuna presets' sweeper
(``hydra_plugins.cnn_experiments_sweeper.resumable_optuna_sweeper.ResumableOptunaSweeper``; Hydra takes
sweeper classes only from the ``hydra_plugins`` package).

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
* a trial that returns NaN (see :mod:`experiments.sweeps.trial`) or raises is told to Optuna as FAIL, with its
  reason as a user attribute, and the sweep goes on (the plugin itself crashes on a NaN with Optuna
  2.10: see :meth:`ResumableOptunaSweeperImpl.sweep`);
* when no trial completed, the sweep ends with an error message instead of Optuna's traceback.

The sweep folder and study name are resolved once, in the sweeper's process, and pinned for the jobs
(through ``hydra.overrides.hydra``, which every launcher re-applies when it composes a job's config):
interpolations in them could otherwise resolve differently inside each job.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import sys
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from experiments.sweeps.trial import flatten

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
    identity = "\n".join([*sorted(config.hydra.overrides.task), "--", *sorted(hydra_overrides)])
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
        self._multirun_config = config
        if self.storage == STORAGE_IN_SWEEP_DIR:
            self.storage = f"sqlite:///{Path(sweep_dir) / DB_FILE}"
        metric = str(config.get("optimized_metric", ""))
        directions = self._get_directions()
        if metric.endswith(("acc", "acc5")) and directions == ["minimize"]:
            log.warning(f"optimized_metric={metric} is minimised: add hydra.sweeper.direction=maximize "
                        "unless that is what you want.")
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def _parse_sweeper_params_config(self) -> list[str]:
        """``key=value`` overrides from ``params``, nested keys joined with dots."""
        if not self.params:
            return []
        return [f"{key}={value}" for key, value in flatten(OmegaConf.to_container(self.params)).items()]

    def sweep(self, arguments: list[str]) -> None:
        """The plugin's sweep loop, resumed, and with a failed trial told to Optuna as FAIL.

        The plugin tells Optuna a NaN as a value; Optuna 2.10 refuses it with a ValueError, and the
        plugin's fallback ``tell(state=FAIL, values=[nan])`` raises again, which ends the whole sweep.
        Here a NaN, a non-number or a job that raised becomes one FAIL trial (its reason, from the run
        folder's ``failure.json``, stored as the trial's ``failure`` attribute) and the sweep goes on.
        """
        self._check_search_space(arguments)  # before anything is written: a bad range leaves no files
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        # As the basic sweeper does: for tools that read the sweep folder.
        OmegaConf.save(self._multirun_config, Path(self.sweep_dir) / "multirun.yaml")
        recorded = self._recorded_trials()
        # Job number = Optuna trial number; past any folder already there (an in-memory study run again).
        self.job_idx = max(recorded, _next_free_job_number(Path(self.sweep_dir)))
        study, distributions, fixed = self._create_study(arguments)  # a grid lowers n_trials to its size
        remaining = max(0, self.n_trials - recorded)
        log.info(f"Study {self.study_name}: {recorded} trial(s) recorded, {remaining} to run "
                 f"(n_trials={self.n_trials} in total)")
        if recorded and remaining and hasattr(study.sampler, "reseed_rng"):
            study.sampler.reseed_rng()  # a seeded sampler would otherwise draw the recorded trials' values again
        if remaining == 0:
            self._write_results(study)
            return
        launched = failed = 0
        while launched < remaining:
            trials = [study.ask() for _ in range(min(self.n_jobs, remaining - launched))]
            overrides = self._configure_trials(trials, distributions, fixed)
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            launched += len(returns)
            for trial, ret in zip(trials, returns):
                failed += not self._tell(study, trial, ret)
            if launched and failed / launched > self.max_failure_rate:
                log.error(f"{failed} of {launched} trials failed (more than max_failure_rate="
                          f"{self.max_failure_rate}): the sweep stops here.")
                break
        self._write_results(study)

    def _check_search_space(self, arguments: list[str]) -> None:
        """Each range must make an Optuna distribution; say which one does not, in one paragraph."""
        from experiments.core.errors import EXIT_USER_ERROR, UserError, report

        for override in self._parse_sweeper_params_config() + list(arguments):
            try:
                create_params_from_overrides([override])
            except ValueError as error:
                key, _, value = override.partition("=")
                report(UserError(f"hydra.sweeper.params.{key}", value, f"is not a valid search range ({error}).",
                                 "A log-scale range tag(log, interval(a, b)) needs 0 < a < b, e.g. "
                                 "interval(1e-5, 1e-1); a linear one needs a < b."))
                sys.exit(EXIT_USER_ERROR)

    def _create_study(self, arguments: list[str]) -> tuple[optuna.Study, dict[str, Any], dict[str, Any]]:
        """The plugin's search-space parsing (params, then command-line sweeps) and study creation."""
        self._process_searchspace_config()
        params_conf = self._parse_sweeper_params_config() + list(arguments)
        distributions, fixed = create_params_from_overrides(params_conf)
        if self.search_space_distributions:
            distributions = {**self.search_space_distributions, **distributions}
        if isinstance(self.sampler, functools.partial) and self.sampler.func == optuna.samplers.GridSampler:
            grid = {name: self._to_grid_sampler_choices(d) for name, d in distributions.items()}
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))
        for name in fixed:
            distributions.pop(name, None)
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                    directions=self._get_directions(), load_if_exists=True)
        log.info(f"Study {study.study_name} in {self.storage or 'memory'}, sampler "
                 f"{type(self.sampler).__name__}, directions {self._get_directions()}")
        return study, distributions, fixed

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, ret: JobReturn) -> bool:
        """Record one finished job in the study; False when the trial failed."""
        run_dir = str(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg is not None else None
        if run_dir:
            trial.set_user_attr("run_dir", run_dir)
        reason = None
        if ret.status != JobStatus.COMPLETED:
            reason = f"the job raised {type(ret._return_value).__name__}: {ret._return_value}"
        else:
            try:
                values = [float(v) for v in _as_list(ret.return_value)]
            except (TypeError, ValueError):
                values, reason = [], f"the job returned {ret.return_value!r}, not a number"
            if not reason and (len(values) != len(study.directions) or not all(map(math.isfinite, values))):
                reason = _recorded_failure(run_dir) or f"the job returned {ret.return_value!r}"
        if reason is None:
            _tell_ignoring_grid_stop(study, trial, values=values)
            return True
        trial.set_user_attr("failure", reason)
        _tell_ignoring_grid_stop(study, trial, state=optuna.trial.TrialState.FAIL)
        log.warning(f"Trial {trial.number} failed: {reason}")
        return False

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

    def _write_results(self, study: optuna.Study) -> None:
        """``optimization_results.yaml`` as the plugin writes it; ``best_value: null`` when none completed."""
        results: dict[str, Any] = {"name": "optuna", "study_name": self.study_name, "best_params": {},
                                   "best_value": None}
        try:
            best = study.best_trial
            results.update(best_params=dict(best.params), best_value=best.value, best_trial=best.number)
            log.info(f"Best trial {best.number}: {best.params}, value {best.value}")
        except ValueError:
            log.error(f"No trial of study {self.study_name} completed; their reasons: "
                      f"python -m experiments.sweep_report {self.sweep_dir}")
        OmegaConf.save(OmegaConf.create(results), Path(self.sweep_dir) / "optimization_results.yaml")


def _next_free_job_number(sweep_dir: Path) -> int:
    numbers = [int(p.name.split("_", 1)[0]) for p in sweep_dir.glob("*_*") if p.name.split("_", 1)[0].isdigit()]
    return max(numbers, default=-1) + 1


def _tell_ignoring_grid_stop(study: optuna.Study, trial: optuna.trial.Trial, **kwargs: Any) -> None:
    """``study.tell``; GridSampler calls ``study.stop()`` once the grid is done, which raises outside
    ``study.optimize`` after the trial was recorded (the sweep loop stops by its own count)."""
    try:
        study.tell(trial, **kwargs)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _recorded_failure(run_dir: str | None) -> str | None:
    """The reason a trial wrote into its run folder (see experiments.sweeps.trial), if any."""
    from experiments.sweeps.trial import read_failure

    failure = read_failure(Path(run_dir)) if run_dir else None
    return f"{failure.get('kind')}: {failure.get('reason')}" if failure else None
