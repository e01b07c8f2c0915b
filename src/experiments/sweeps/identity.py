"""Which study a sweep command belongs to, and where it is stored.

The same command line must reach the same study (that is how a sweep resumes, and how several
workers share one), and a different command must start a fresh one. So:

* ``study_name: null`` becomes ``<model>-<data>-<preset>-<hash>``, the hash covering the task overrides
  and the Hydra overrides that change what is optimised (search space, direction, sampler or pruner
  choice), but not ``n_trials`` or the launcher;
* ``storage: sweep_dir`` means ``sqlite:///<sweep dir>/optuna.db``; ``null`` keeps the study in memory;
  anything else is an Optuna storage URL (``postgresql://...``, ``mysql+pymysql://...``);
* both are resolved once, in the sweeper's process, and pinned for the jobs through
  ``hydra.overrides.hydra`` (which every launcher re-applies when it composes a job's config), since
  interpolations in them could resolve differently inside each job.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

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


def storage_url(storage: str | None, sweep_dir: Path) -> str | None:
    """The Optuna storage URL a ``storage`` setting means (None: in memory)."""
    if storage in (None, "", "null", "None"):
        return None
    if storage == STORAGE_IN_SWEEP_DIR:
        return f"sqlite:///{Path(sweep_dir).resolve() / DB_FILE}"
    return str(storage)


def sqlite_file(url: str | None) -> Path | None:
    """The database file of a ``sqlite:///`` URL, else None (in memory, or a database server)."""
    if not url or not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def quote(value: str) -> str:
    """``value`` as one override value, quoted when Hydra's grammar needs it."""
    if value and all(c not in value for c in " ,'\"()[]{}=\\$"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pin_for_jobs(config: DictConfig, key: str, value: str) -> None:
    """Set ``key`` in the sweeper's config and make every job's config use the same literal value."""
    with read_write(config), open_dict(config):
        OmegaConf.update(config, key, value, merge=False)
        pinned = [o for o in config.hydra.overrides.hydra if not o.startswith(f"{key}=")]
        config.hydra.overrides.hydra = [*pinned, f"{key}={quote(value)}"]
