"""The project's Hydra sweeper on Optuna: a resumable study that several workers can share.

Hydra takes sweeper classes only from the ``hydra_plugins`` package, so the class Hydra builds
(``hydra_plugins.cnn_experiments_sweeper.resumable_optuna_sweeper.ResumableOptunaSweeper``, config
``hydra/sweeper=resumable_optuna``) is a thin shell around :class:`StudySweeper`, here.

One sweep, step by step:

1. **Refuse before writing** (one paragraph, exit 2, no sweep folder): ``n_trials < 1`` and the other
   settings, a range Optuna cannot draw from, a grid over a continuous range, a trial whose overrides
   do not compose, pruning that the trial processes could not report to.
2. **Find the study** (:mod:`~experiments.sweeps.identity`): its name (default: from the command
   line), the sweep folder, the storage (default ``sqlite:///<sweep dir>/optuna.db``); ``load_if_exists``,
   so rerunning the command resumes.
3. **Ask, launch, tell, until the study holds n_trials trials.** Asking happens under a lock with
   orphaned trials failed first (:mod:`~experiments.sweeps.workers`), so any number of workers share
   the study and together run exactly ``n_trials``; job number = Optuna trial number, so every trial
   keeps its own run folder ``<num>_<model>-<data>/``. A launch is ``n_jobs`` trials at once (one per
   process with ``hydra/launcher=joblib``). Each job's result becomes COMPLETE, PRUNED or FAIL with its
   reason (:mod:`~experiments.sweeps.outcome`); a failed trial never stops the sweep unless more than
   ``max_failure_rate`` of them failed.
4. **End:** ``optimization_results.yaml`` in the sweep folder; when every trial of the study failed,
   a short summary of why and exit status 1.

Pruning: with ``hydra/sweeper/pruner=median|sha|hyperband`` each job gets its trial's identity in its
environment (:mod:`~experiments.sweeps.trial_link`) and reports its objective every validation epoch
(:mod:`~experiments.sweeps.pruning`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from experiments.core.errors import EXIT_USER_ERROR, UserError, report
from experiments.sweeps import identity, outcome, space, trial_link, workers
from experiments.sweeps.identity import default_study_name  # the study-name rule, re-exported
from experiments.sweeps.storage import open_storage
from experiments.sweeps.trial import flatten

log = logging.getLogger(__name__)

EXIT_ALL_FAILED = 1
RESULTS_FILE = "optimization_results.yaml"
SWEEP_CONFIG = "multirun.yaml"
_DIRECTIONS = ("minimize", "maximize")


@contextlib.contextmanager
def _refusal_exits() -> Iterator[None]:
    """A UserError in the sweeper's process: one paragraph on stderr, exit status 2."""
    try:
        yield
    except UserError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        report(error)
        sys.exit(EXIT_USER_ERROR)


class StudySweeper:
    """See the module docstring. ``sampler`` and ``pruner`` come instantiated by Hydra (the grid sampler
    as a partial, completed with the search space here)."""

    def __init__(self, sampler: Any, pruner: Any, direction: Any, storage: str | None, study_name: str | None,
                 n_trials: int, n_jobs: int, max_failure_rate: float, params: DictConfig | None,
                 heartbeat_interval: float, heartbeat_grace: float) -> None:
        self.sampler, self.pruner = sampler, pruner or optuna.pruners.NopPruner()
        self.directions = [str(d) for d in (direction if isinstance(direction, (list, tuple)) or
                                            OmegaConf.is_list(direction) else [direction])]
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = params
        self.heartbeat_interval, self.heartbeat_grace = heartbeat_interval, heartbeat_grace
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None
        self.sweep_dir = Path(".")
        self.storage_url: str | None = None

    # ------------------------------------------------------------------------------------------ setup

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        with _refusal_exits():
            self.check_settings()
        self.config, self.hydra_context = config, hydra_context
        self.study_name = self.study_name or default_study_name(config)
        identity.pin_for_jobs(config, "hydra.sweeper.study_name", self.study_name)
        sweep_dir = str(config.hydra.sweep.dir)  # resolved now, with the study name in place
        identity.pin_for_jobs(config, "hydra.sweep.dir", sweep_dir)
        self.sweep_dir = Path(sweep_dir)
        self.storage_url = identity.storage_url(self.storage, self.sweep_dir)
        with _refusal_exits():
            _check_storage_url(self.storage_url)
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                               task_function=task_function)
        metric = str(config.get("optimized_metric", ""))
        if metric.endswith(("acc", "acc5")) and self.directions == ["minimize"]:
            log.warning(f"optimized_metric={metric} is minimised: add hydra.sweeper.direction=maximize "
                        "unless that is what you want.")

    def check_settings(self) -> None:
        """The sweeper's own numbers and words, each refused in one paragraph."""
        if not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise UserError("hydra.sweeper.n_trials", self.n_trials, "must be at least 1: it is how many trials "
                            "the study holds when the sweep ends, those already recorded included.",
                            "Set hydra.sweeper.n_trials=20 (or any N >= 1); running the command again with a "
                            "larger N adds only the missing trials.")
        if not isinstance(self.n_jobs, int) or self.n_jobs < 1:
            raise UserError("hydra.sweeper.n_jobs", self.n_jobs, "must be at least 1 (trials launched at once).",
                            "Use 1, or hydra.launcher.n_jobs with hydra/launcher=joblib.")
        bad = [d for d in self.directions if d not in _DIRECTIONS]
        if bad or not self.directions:
            raise UserError("hydra.sweeper.direction", bad or self.directions, "must be minimize or maximize "
                            "(or a list of them, one per objective).", "E.g. hydra.sweeper.direction=maximize.")
        if not 0.0 <= float(self.max_failure_rate) <= 1.0:
            raise UserError("hydra.sweeper.max_failure_rate", self.max_failure_rate, "must lie in [0, 1].",
                            "1.0 (the default) never stops the sweep for failed trials; 0.5 stops once half failed.")
        if not float(self.heartbeat_interval) > 0 or not float(self.heartbeat_grace) > float(self.heartbeat_interval):
            raise UserError("hydra.sweeper.heartbeat_grace", self.heartbeat_grace, "must exceed "
                            f"heartbeat_interval ({self.heartbeat_interval}) and both must be > 0.",
                            "E.g. heartbeat_interval=30 heartbeat_grace=120 (seconds).")

    # -------------------------------------------------------------------------------------- the plan

    @property
    def pruning(self) -> bool:
        return not isinstance(self.pruner, optuna.pruners.NopPruner)

    def search_space(self, arguments: list[str]) -> space.SearchSpace:
        """``hydra.sweeper.params`` (nested or dotted keys), then the command line's sweeps and values."""
        params = flatten(OmegaConf.to_container(self.params, resolve=True)) if self.params else {}
        return space.parse([f"{key}={value}" for key, value in params.items()] + list(arguments))

    def _sampler_for(self, search: space.SearchSpace) -> tuple[optuna.samplers.BaseSampler, int]:
        """The sampler (a grid gets its values now) and the number of trials it can give."""
        sampler = self.sampler
        if isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler:
            grid = search.grid()
            size = search.grid_size()
            if size < self.n_trials:
                log.info(f"The grid has {size} points: n_trials lowered from {self.n_trials} to {size}")
            return sampler(grid), min(self.n_trials, size)
        return sampler, self.n_trials

    def _check_pruning(self) -> None:
        if not self.pruning:
            return
        if len(self.directions) > 1:
            raise UserError("hydra/sweeper/pruner", type(self.pruner).__name__, "cannot prune a study with "
                            f"{len(self.directions)} objectives (Optuna prunes single-objective studies only).",
                            "Use hydra/sweeper/pruner=none, or optimise one objective.")
        launcher = str(OmegaConf.select(self.config, "hydra.launcher._target_", default=""))
        if self.storage_url is None and not launcher.endswith("BasicLauncher"):
            raise UserError("hydra.sweeper.storage", None, f"keeps the study in this process's memory, but "
                            f"{launcher.rsplit('.', 1)[-1]} runs each trial in another process, which then cannot "
                            "report to it for pruning.", "Keep the default hydra.sweeper.storage=sweep_dir (or any "
                            "database URL), or use hydra/sweeper/pruner=none.")

    def _check_composes(self, search: space.SearchSpace) -> None:
        """One trial's overrides (each range's first value) must compose into a config, before anything runs."""
        from hydra.errors import HydraException

        example = {key: _first_value(d) for key, d in search.distributions.items()}
        overrides = search.overrides_for(example)
        try:
            self.hydra_context.config_loader.load_sweep_config(master_config=self.config, sweep_overrides=overrides)
        except HydraException as error:
            raise UserError("hydra.sweeper.params", " ".join(overrides), "do not compose into a trial's config: "
                            f"{' '.join(str(error).split()).rstrip('.')}.", "Check the searched keys' names (python -m "
                            "experiments.train --cfg job lists them); a key the config lacks needs a '+' in "
                            "front.") from None

    # ---------------------------------------------------------------------------------------- the sweep

    def sweep(self, arguments: list[str]) -> None:
        with _refusal_exits():
            search = self.search_space(arguments)
            if not search.distributions:
                raise UserError("hydra.sweeper.params", {}, "searches nothing: every trial "
                                "would train the same configuration.", "Give at least one range, e.g. "
                                "\"hydra.sweeper.params.optimizer.lr='tag(log, interval(1e-4, 1e-1))'\" (or a "
                                "hparams_search preset); for one run, drop -m.")
            sampler, n_trials = self._sampler_for(search)
            self._check_pruning()
            self._check_composes(search)
            lock = self._lock_file()
            with workers.asking_lock(lock):
                study = self._open_study(sampler)
        self._save_sweep_config()
        with workers.asking_lock(lock):
            workers.recover_orphans(study, self.heartbeat_grace)
            recorded = len(study.get_trials(deepcopy=False))
        remaining = max(0, n_trials - recorded)
        log.info(f"Study {self.study_name}: {recorded} trial(s) recorded, {remaining} to run "
                 f"(n_trials={n_trials} in total)")
        log.info(f"Storage {self.storage_url or 'in memory'}, sampler {type(sampler).__name__}, pruner "
                 f"{type(self.pruner).__name__}, directions {self.directions}")
        if recorded and remaining and hasattr(study.sampler, "reseed_rng"):
            study.sampler.reseed_rng()  # a seeded sampler would otherwise draw the recorded trials' values again
        # Job number = trial number; a study in memory run again in the same folder numbers its folders on.
        offset = _next_free_job_number(self.sweep_dir) if self.storage_url is None else 0
        with workers.Heartbeat(study, self.heartbeat_interval) as heartbeat:
            self._run(study, search, n_trials, lock, heartbeat, offset)
        self._finish(study)

    def _run(self, study: optuna.Study, search: space.SearchSpace, n_trials: int, lock: Path | None,
             heartbeat: workers.Heartbeat, offset: int) -> None:
        launched = failed = 0
        while True:
            with workers.asking_lock(lock):
                workers.recover_orphans(study, self.heartbeat_grace)
                batch = min(self.n_jobs, n_trials - len(study.get_trials(deepcopy=False)))
                if batch <= 0:
                    return
                trials = [study.ask(search.distributions) for _ in range(batch)]
                for trial in trials:
                    workers.claim(study, trial._trial_id)
            heartbeat.track([t._trial_id for t in trials])
            jobs = [(offset + t.number, [*search.overrides_for(t.params), *self._link_overrides(t)]) for t in trials]
            returns = self._launch(jobs)
            heartbeat.track([])
            for trial, ret in zip(trials, returns):
                failed += not self._tell(study, trial, ret)
            launched += len(returns)
            if failed / launched > self.max_failure_rate:
                log.error(f"{failed} of {launched} trials failed (more than max_failure_rate="
                          f"{self.max_failure_rate}): the sweep stops here.")
                return

    def _link_overrides(self, trial: optuna.Trial) -> list[str]:
        if not self.pruning:
            return []
        link = trial_link.TrialLink(self.study_name, self.storage_url, trial._trial_id, trial.number)
        return link.env_overrides()

    def _launch(self, jobs: list[tuple[int, list[str]]]) -> list[JobReturn]:
        """Launch jobs numbered ``job_num``; consecutive numbers go out together (one launch call)."""
        returns: list[JobReturn] = []
        start = 0
        while start < len(jobs):
            end = start + 1
            while end < len(jobs) and jobs[end][0] == jobs[end - 1][0] + 1:
                end += 1
            returns += self.launcher.launch([overrides for _, overrides in jobs[start:end]],
                                            initial_job_idx=jobs[start][0])
            start = end
        return returns

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> bool:
        """Record one finished job in the study; False when the trial failed."""
        verdict = outcome.judge(ret, len(self.directions))
        attrs = dict(verdict.attrs)
        if verdict.state == TrialState.FAIL:
            attrs[workers.FAILURE_ATTR] = verdict.reason
        try:
            for key, value in attrs.items():
                study._storage.set_trial_user_attr(trial._trial_id, key, value)
            study.tell(trial, values=verdict.values, state=verdict.state, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning(f"Trial {trial.number} had already been marked finished (by another worker)")
        except RuntimeError as error:
            # GridSampler calls study.stop() once the grid is done, which raises outside study.optimize
            # after the trial was recorded; the loop stops by its own count.
            if "Study.stop" not in str(error):
                raise
        if verdict.state == TrialState.FAIL:
            log.warning(f"Trial {trial.number} failed: {verdict.reason}")
        elif verdict.state == TrialState.PRUNED:
            log.info(f"Trial {trial.number} {verdict.reason}")
        return verdict.state != TrialState.FAIL

    # ------------------------------------------------------------------------------ storage and files

    def _lock_file(self) -> Path | None:
        """Beside a SQLite file; in the sweep folder for a database server; none for a study in memory."""
        if self.storage_url is None:
            return None
        db_file = identity.sqlite_file(self.storage_url)
        return db_file.with_name(db_file.name + ".lock") if db_file else self.sweep_dir / workers.LOCK_FILE

    def _open_study(self, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        db_file = identity.sqlite_file(self.storage_url)
        if db_file is not None:
            db_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            study = optuna.create_study(study_name=self.study_name, storage=open_storage(self.storage_url),
                                        sampler=sampler, pruner=self.pruner, directions=self.directions,
                                        load_if_exists=True)
        except ValueError as error:
            raise UserError("hydra.sweeper.study_name", self.study_name, f"names a study that cannot be resumed "
                            f"with these settings ({error}).", "Give the sweep a new study name, or the "
                            "study's own direction.") from None
        if self.storage_url is None:
            trial_link.IN_MEMORY[self.study_name] = study
        if len(self.directions) == 1 and not study.metric_names:
            with contextlib.suppress(Exception), warnings.catch_warnings():  # a label for the dashboard
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([str(self.config.get("optimized_metric", "objective"))])
        return study

    def _save_sweep_config(self) -> None:
        """``multirun.yaml``, as Hydra's basic sweeper writes it (sweep_report reads it); atomic, since
        every worker of the study writes the same file."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.sweep_dir / SWEEP_CONFIG, OmegaConf.to_yaml(self.config))

    def _finish(self, study: optuna.Study) -> None:
        results: dict[str, Any] = {"name": "optuna", "study_name": self.study_name, "best_params": {},
                                   "best_value": None}
        if len(self.directions) == 1:
            with contextlib.suppress(ValueError):  # no COMPLETE trial
                best = study.best_trial
                results.update(best_params=dict(best.params), best_value=best.value, best_trial=best.number)
                log.info(f"Best trial {best.number}: {best.params}, value {best.value}")
        else:
            results["solutions"] = [{"trial": t.number, "params": dict(t.params), "values": list(t.values)}
                                    for t in study.best_trials]
        _write_atomic(self.sweep_dir / RESULTS_FILE, OmegaConf.to_yaml(OmegaConf.create(results)))
        if outcome.all_failed(study):
            count = len(study.get_trials(deepcopy=False))
            print(f"Error: every trial of study {self.study_name} failed ({count} of {count}), so it has no "
                  f"result:\n{outcome.failure_summary(study)}\nEach trial's folder holds its reason: "
                  f"python -m experiments.sweep_report {self.sweep_dir}", file=sys.stderr, flush=True)
            sys.exit(EXIT_ALL_FAILED)


def _first_value(distribution: Any) -> Any:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return distribution.choices[0]
    return distribution.low


def _next_free_job_number(sweep_dir: Path) -> int:
    if not sweep_dir.is_dir():
        return 0
    numbers = [int(p.name.split("_", 1)[0]) for p in sweep_dir.glob("*_*") if p.name.split("_", 1)[0].isdigit()]
    return max(numbers, default=-1) + 1


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _check_storage_url(url: str | None) -> None:
    """A storage URL SQLAlchemy can read, refused before the sweep folder or a lock file is made (its
    driver is checked when the study opens)."""
    if url is None:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as error:
        raise UserError("hydra.sweeper.storage", url, f"is not a database URL SQLAlchemy knows "
                        f"({' '.join(str(error).split())[:160]}).", "Keep the default (sweep_dir: a SQLite file in "
                        "the sweep folder), or give e.g. sqlite:////abs/path/optuna.db or "
                        "postgresql://user@host/db.") from None
