"""Opening a study's storage, the same way in the sweeper and in a trial that reports to it.

SQLite is shared by several processes here (workers of one study, trials reporting intermediate
values, the dashboard), so its connections wait up to a minute for a lock instead of SQLite's default
five seconds. A database written by an older Optuna is refused with the command that upgrades it.
"""

from __future__ import annotations

from typing import Any

import optuna

from experiments.core.errors import UserError

SQLITE_BUSY_TIMEOUT_S = 60


def open_storage(url: str | None) -> optuna.storages.BaseStorage | None:
    """An Optuna storage for ``url`` (None: the study lives in this process's memory)."""
    if url is None:
        return None
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    try:
        return optuna.storages.RDBStorage(url, **kwargs)
    except RuntimeError as error:
        if "optuna storage upgrade" not in str(error):
            raise
        raise UserError("hydra.sweeper.storage", url, "holds a study written by an older Optuna, whose table "
                        "schema this Optuna cannot use as it is.",
                        f"Upgrade it once with `optuna storage upgrade --storage {url}` (back the file up "
                        "first), or start a fresh study with hydra.sweeper.study_name=<new name>.") from None
    except ImportError as error:
        raise UserError("hydra.sweeper.storage", url, f"needs a database driver that is not installed ({error}).",
                        "Install it (e.g. pip install psycopg2-binary for postgresql://, pymysql for "
                        "mysql+pymysql://), or use storage=sweep_dir.") from None


def load_study(name: str, url: str | None, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """An existing study, read back from its storage (by a trial process or a tool)."""
    return optuna.load_study(study_name=name, storage=open_storage(url), pruner=pruner,
                             sampler=optuna.samplers.RandomSampler())
