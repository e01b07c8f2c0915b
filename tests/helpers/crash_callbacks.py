"""Callbacks that simulate failures, importable by the CLI subprocesses the tests start."""

import os

import pytorch_lightning as pl


class DieAtEpochStart(pl.Callback):
    """Kill the process abruptly (no cleanup, like SIGKILL) when epoch ``epoch`` begins.

    Only while the environment variable CNN_TEST_DIE is set, so the same command line can run
    uninterrupted, crash, and be resumed.
    """

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if os.environ.get("CNN_TEST_DIE") and trainer.current_epoch == self.epoch:
            os._exit(17)


class TraceBatches(pl.Callback):
    """Print step, batch index, a label fingerprint and the RNG state's hash at every training batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        import hashlib

        import torch

        rng = hashlib.md5(torch.get_rng_state().numpy().tobytes()).hexdigest()[:8]
        labels = "".join(str(int(v)) for v in batch[1][:6])
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        print(f"TRACE step={trainer.global_step} idx={batch_idx} labels={labels} rng={rng} lr={lr:.6f}", flush=True)


class SignalAtStep(pl.Callback):
    """Send this process a real signal (SIGTERM, SIGINT, SIGKILL) after training step ``step`` (only with
    CNN_TEST_DIE set): a kill that lands at a known step, not after a guessed sleep."""

    def __init__(self, step: int, signal: str = "SIGTERM") -> None:
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        import signal

        if os.environ.get("CNN_TEST_DIE") and trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))


def interrupted_datamodule(**_settings):
    """A ``data._target_`` that is Ctrl-C pressed while the data loads (before training starts)."""
    raise KeyboardInterrupt


class SaveWeightsPerRank(pl.Callback):
    """At the end of fit, every rank saves its model's weights to ``<folder>/weights-rank<R>.pt``: a test
    compares them (data parallelism keeps the replicas identical)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module):
        import torch

        os.makedirs(self.folder, exist_ok=True)
        torch.save(pl_module.model.state_dict(), os.path.join(self.folder, f"weights-rank{trainer.global_rank}.pt"))
