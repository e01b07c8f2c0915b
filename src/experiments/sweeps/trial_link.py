"""How a trial's job finds the Optuna trial the sweeper created for it (to report and be pruned).

The sweeper puts the trial's identity into the job's environment through Hydra's
``hydra.job.env_set`` (one override per variable, re-applied by every launcher: the basic one in this
process, joblib's worker processes, submitit's jobs on other machines), so the job needs nothing but
its environment, and Lightning's DDP processes inherit it. The job then re-opens the study from its
storage; a study kept in memory is found in this process's :data:`IN_MEMORY` registry instead, which
only works when the job runs in the sweeper's own process (the basic launcher), so the sweeper
refuses pruning with an in-memory study and any other launcher.

Free of torch, Lightning and Optuna at import: every job of ``experiments.train`` imports it, and a
single run works without the ``sweeps`` extra.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

ENV_STUDY = "CNN_SWEEP_STUDY"
ENV_STORAGE = "CNN_SWEEP_STORAGE"
ENV_TRIAL_ID = "CNN_SWEEP_TRIAL_ID"
ENV_TRIAL_NUMBER = "CNN_SWEEP_TRIAL"
EMPTY = "''"  # an empty value, as override text

# Studies kept in memory by a sweeper in this process, by name.
IN_MEMORY: dict[str, optuna.Study] = {}


@dataclass(frozen=True)
class TrialLink:
    """One Optuna trial, as a job sees it: the study, its storage (None: in memory) and the trial."""

    study: str
    storage: str | None
    trial_id: int
    number: int

    def env_overrides(self) -> list[str]:
        """The overrides that hand this link to the job (Hydra sets them as environment variables)."""
        from experiments.sweeps.identity import quote

        values = {ENV_STUDY: self.study, ENV_STORAGE: self.storage or "", ENV_TRIAL_ID: str(self.trial_id),
                  ENV_TRIAL_NUMBER: str(self.number)}
        return [f"++hydra.job.env_set.{key}={quote(value) if value else EMPTY}" for key, value in values.items()]


def from_env() -> TrialLink | None:
    """The link of the trial this process runs, or None outside a pruning sweep."""
    if not os.environ.get(ENV_TRIAL_ID) or not os.environ.get(ENV_STUDY):
        return None
    return TrialLink(study=os.environ[ENV_STUDY], storage=os.environ.get(ENV_STORAGE) or None,
                     trial_id=int(os.environ[ENV_TRIAL_ID]), number=int(os.environ.get(ENV_TRIAL_NUMBER, "-1")))


def open_trial(link: TrialLink, pruner: optuna.pruners.BasePruner | None) -> optuna.Trial:
    """The live trial: reports go to the study's storage and ``should_prune`` asks ``pruner``."""
    if link.storage is None:
        study = IN_MEMORY.get(link.study)
        if study is None:
            raise RuntimeError(f"study {link.study!r} is kept in memory by another process")
    else:
        from experiments.sweeps.storage import load_study

        study = load_study(link.study, link.storage, pruner=pruner)
    import optuna

    return optuna.Trial(study, link.trial_id)
