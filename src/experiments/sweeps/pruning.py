"""The Lightning callback that reports a trial's objective to Optuna every validation epoch and stops
the training when the study's pruner says so.

It is put into a trial's config by :func:`experiments.sweeps.trial.run_trial` only when the sweep
has a pruner (``hydra/sweeper/pruner=median|sha|hyperband``), and finds its Optuna trial through the
environment (:mod:`experiments.sweeps.trial_link`); without that environment (a trial's
``config.yaml`` trained again by hand) it does nothing.

* step = the number of epochs done (1, 2, ...), value = ``optimized_metric`` after that epoch's
  validation (the sanity check before training is skipped, and so is a missing or non-finite value);
* only global rank 0 talks to Optuna; its decision is broadcast, so every DDP process stops at the
  same epoch;
* a pruned trial stops cleanly (``trainer.should_stop``): the pipeline finishes the run as usual,
  and ``pruned.json`` (see :mod:`experiments.sweeps.pruned`) tells the sweep side what happened;
* Optuna being unreachable turns pruning off for that trial with a warning; it never fails a trial.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from experiments.sweeps import pruned, trial_link

log = logging.getLogger(__name__)


class PruneTrial(pl.Callback):
    """Report ``metric`` per validation epoch to the sweep's Optuna trial; stop when it is pruned."""

    def __init__(self, metric: str = "val/err_best", run_dir: str | None = None) -> None:
        self.metric = metric
        self.run_dir = Path(run_dir) if run_dir else None
        self.link = trial_link.from_env()
        self._trial: Any = None
        self._disabled = False  # rank 0 only: Optuna could not be reached

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Every rank takes the same path up to the broadcast (the link comes from the inherited environment).
        if self.link is None or trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        decision = self._report(trainer, epoch) if trainer.is_global_zero and not self._disabled else None
        if trainer.world_size > 1:
            decision = trainer.strategy.broadcast(decision, src=0)
        if decision is None:
            return
        trainer.should_stop = True
        if trainer.is_global_zero and self.run_dir is not None:
            pruned.write_record(self.run_dir, decision)
        log.info(f"Trial {self.link.number} pruned: {pruned.describe(decision)}")

    def _report(self, trainer: pl.Trainer, epoch: int) -> dict[str, Any] | None:
        """Report this epoch's value; the pruning record when the pruner stops the trial, else None."""
        value = pruned.finite_or_none(trainer.callback_metrics.get(self.metric))
        if value is None:
            return None
        trial = self._open()
        if trial is None:
            return None
        try:
            trial.report(value, step=epoch)
            if not trial.should_prune():
                return None
        except Exception as error:  # a busy or lost database: train on without pruning
            self._give_up(error)
            return None
        return {"epoch": epoch, "step": trainer.global_step, "metric": self.metric, "value": value,
                "trial": self.link.number, "pruner": type(trial.study.pruner).__name__}

    def _open(self) -> Any:
        if self._trial is None:
            try:
                self._trial = trial_link.open_trial(self.link, _configured_pruner())
            except Exception as error:
                self._give_up(error)
        return self._trial

    def _give_up(self, error: BaseException) -> None:
        self._disabled = True
        log.warning(f"Pruning is off for trial {self.link.number}: {type(error).__name__}: {error}")


def _configured_pruner() -> Any:
    """The sweep's pruner, built from this job's Hydra config (``hydra.sweeper.pruner``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    node = OmegaConf.select(HydraConfig.get(), "sweeper.pruner", default=None)
    return instantiate(node) if node is not None else None


