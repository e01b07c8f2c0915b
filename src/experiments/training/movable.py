"""A run folder is movable: checkpoint paths saved inside ``last.ckpt`` are resolved against the folder.

Lightning's ``ModelCheckpoint`` stores absolute paths in its state (``dirpath``, ``best_model_path``,
``best_k_models``, ...) and restores ``best_model_path`` even when the folder moved ("Only
``best_model_path`` will be reloaded"), so a copied run resumed from its new place would test, and
compare against, the best checkpoint of the ORIGINAL folder. Lightning has no option for this; this
callback rewrites those paths onto the folder the run is in now, before the checkpoint callbacks load
their state (every callback's ``on_load_checkpoint`` runs before any ``load_state_dict``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

_PATH_KEYS = ("dirpath", "best_model_path", "kth_best_model_path", "last_model_path")


def relocate(state: dict[str, Any], new_dir: Path) -> dict[str, Any]:
    """``state`` of a checkpoint callback with every path under its old ``dirpath`` moved to ``new_dir``."""
    old_dir = state.get("dirpath")
    if not old_dir or Path(old_dir) == new_dir:
        return state

    def moved(path: Any) -> Any:
        if not isinstance(path, str) or not path:
            return path
        try:
            return str(new_dir / Path(path).relative_to(old_dir))
        except ValueError:
            return path  # not inside the old folder: leave it as it is

    out = {**state, **{key: moved(state[key]) for key in _PATH_KEYS if key in state}}
    if isinstance(state.get("best_k_models"), dict):
        out["best_k_models"] = {moved(path): score for path, score in state["best_k_models"].items()}
    return out


class ResolveCheckpointPathsInRunFolder(pl.Callback):
    """On resume, point the checkpoint callbacks' saved paths at ``checkpoint_dir`` (this run's own)."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        for key, state in (checkpoint.get("callbacks") or {}).items():
            if isinstance(state, dict) and "dirpath" in state:
                checkpoint["callbacks"][key] = relocate(state, self.checkpoint_dir)
