"""The training job behind ``experiments.train``: config -> objects -> Trainer -> run folder.

Order matters for the user: everything that can be wrong with the config is checked (and the data,
model and input size built) before the run folder gets anything beyond Hydra's own record, and a
run that fails that early leaves no folder behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.core import output_folders, provenance, runs
from experiments.core.errors import UserError
from experiments.training.validation import validate


def _is_launcher_process() -> bool:
    """False in the extra processes that Lightning's DDP launcher starts (they re-run this job), and in
    every process but global rank 0 under torchrun (each node runs the job; RANK tells them apart)."""
    return all(os.environ.get(name, "0") == "0" for name in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def _resume_target(cfg: DictConfig, fresh_dir: Path) -> Path | None:
    resume = cfg.get("resume", False)
    if resume is False or resume == "false":
        return None
    if resume is True or resume == "true":
        from hydra.core.hydra_config import HydraConfig

        return runs.find_resumable(Path(cfg.paths.output_root), list(HydraConfig.get().overrides.task), fresh_dir)
    folder, _ = runs.RunFolder.of(resume, key="resume")
    if folder.is_finished():
        raise UserError("resume", str(resume), "is a finished run, and a finished run is never changed.",
                        "Start a new run (drop resume=), or fine-tune from it with finetune.from=<run folder>.")
    if folder.status() == "diverged":
        raise UserError("resume", str(resume), "diverged (its loss went non-finite: diagnostics/nonfinite_stop.json "
                        "names the step), and a resume replays exactly the same steps from its last good "
                        "checkpoint, so it would diverge again; the run is kept as it ended.",
                        "Start a new run with a lower optimizer.lr or trainer.gradient_clip_val=1.0, or fine-tune "
                        "from its last good weights with finetune.from=<run folder>.")
    return folder.path


def train(cfg: DictConfig) -> float:
    from experiments.core.console import silence_harmless_warnings

    silence_harmless_warnings()
    started = time.time()
    fresh_dir = Path(cfg.paths.run_dir)
    with contextlib.ExitStack() as holding:
        try:
            validate(cfg)
            resume_dir = _resume_target(cfg, fresh_dir)
            adopting = resume_dir is not None and _is_launcher_process() and resume_dir.resolve() != fresh_dir.resolve()
            saved = runs.load_run_config(resume_dir) if adopting else None
            extra_epochs = _resume_overrides(cfg, saved) if adopting else None
            if _is_launcher_process():  # the run folder is this command's until it ends (DDP ranks share it)
                key = "run" if resume_dir is None else "resume"
                holding.enter_context(runs.RunFolder(resume_dir or fresh_dir, key=key).locked())
            if adopting:
                _adopt_resumed_config(cfg, resume_dir, saved, extra_epochs)
            prepared = _prepare(cfg, resume_dir)
        except KeyboardInterrupt:  # Ctrl-C before training started: nothing worth keeping was made
            if _is_launcher_process():
                output_folders.remove_unused_run_folder(fresh_dir, Path(cfg.paths.output_root))
            print("\nInterrupted before training started; no run folder was kept.", file=sys.stderr, flush=True)
            raise SystemExit(130) from None
        except Exception:
            if _is_launcher_process():
                output_folders.remove_unused_run_folder(fresh_dir, Path(cfg.paths.output_root))
            raise
        if adopting:  # the run goes on in its own folder: the one Hydra made for this call is not needed
            output_folders.remove_unused_run_folder(fresh_dir, Path(cfg.paths.output_root))
        return _fit_and_test(cfg, started, **prepared)


def _adopt_resumed_config(cfg: DictConfig, resume_dir: Path, saved: DictConfig, extra_epochs: int | None) -> None:
    """Resume with the run's own config (its paths point at its folder), keeping this call's quiet flag
    (and ``trainer.max_epochs`` when this call asked for more)."""
    quiet = cfg.get("quiet", False)
    for key in list(cfg.keys()):
        if key in saved:
            cfg[key] = saved[key]
    cfg.resume = str(resume_dir)
    cfg.quiet = quiet
    cfg.paths.run_dir = str(resume_dir)
    if extra_epochs is not None:
        print(f"resume: trainer.max_epochs={extra_epochs} (the run was configured for "
              f"{saved.trainer.max_epochs}); every other setting is the run's own.", flush=True)
        cfg.trainer.max_epochs = extra_epochs


# Keys a resume may set on the command line besides resume= itself: they change nothing of what was trained.
_RESUME_KEYS = ("resume", "quiet", "host_allocator")  # what a resumed run may set anew (nothing it trains)


def _resume_overrides(cfg: DictConfig, saved: DictConfig) -> int | None:
    """A resume continues the run's own config: an override that would change it is refused, except
    ``trainer.max_epochs`` set higher than the run's (train on), which is applied; returns that value."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or cfg.get("resume") in (True, "true"):
        return None  # resume=true finds the run by this very command line
    extra_epochs = None
    for override in HydraConfig.get().overrides.task:
        key = override.lstrip("+~").split("=", 1)[0]
        if key in _RESUME_KEYS or key.startswith("hydra."):
            continue
        if key == "trainer.max_epochs":
            epochs = OmegaConf.select(cfg, "trainer.max_epochs")
            before = OmegaConf.select(saved, "trainer.max_epochs")
            if isinstance(epochs, int) and isinstance(before, int) and epochs >= before:
                extra_epochs = epochs
                continue
            raise UserError("trainer.max_epochs", epochs, f"cannot shorten a resumed run (it was configured for "
                            f"{before} epochs): its schedule was made for that length.",
                            f"Resume with trainer.max_epochs >= {before}, or start a new run.")
        raise UserError(key, override.split("=", 1)[1] if "=" in override else None,
                        "cannot change a resumed run: resume continues the run with its own config.yaml, so "
                        f"`{override}` would not apply.", "Resume without it (only trainer.max_epochs may "
                        "grow), or start a new run with the changed settings.")
    return extra_epochs


def _prepare(cfg: DictConfig, resume_dir: Path | None) -> dict[str, Any]:
    """Data, network and its starting weights, module, checks; nothing is written yet."""
    import pytorch_lightning as pl

    from experiments.training import host_allocator
    from experiments.training.build import build_datamodule, build_module, build_network, profile_of

    host_allocator.apply(str(cfg.get("host_allocator", "reuse")))  # before the data and the model allocate
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.setup(None)  # read every split now: a missing or corrupt file fails before the run starts
    # A fresh run starts from the configured source weights (fine-tuning); a resumed run from its last.ckpt.
    network = build_network(cfg, load_source=resume_dir is None)
    module = build_module(cfg, network)
    transferred = network.transferred
    _check_optimization(cfg, module, datamodule)
    _check_batch_statistics(cfg, module, datamodule)
    profile = profile_of(cfg)
    run_dir = Path(cfg.paths.run_dir)
    ckpt_path = None
    keep_through_epoch = None
    if resume_dir is not None:
        last = runs.RunFolder(resume_dir).last_checkpoint
        if not last.is_file():
            raise UserError("resume", str(resume_dir), f"has no {runs.CHECKPOINT_DIR}/{runs.LAST_CHECKPOINT} "
                            "(it stopped before its first epoch ended).", "Start a fresh run instead.")
        checkpoint = runs.load_checkpoint(last)
        runs.load_model_weights(module, checkpoint, last)  # a clear error if the architecture changed
        ckpt_path, keep_through_epoch = str(last), int(checkpoint.get("epoch", 0))
    if _is_launcher_process():
        output_folders.check_writable(run_dir)
    return {"datamodule": datamodule, "module": module, "ckpt_path": ckpt_path,
            "keep_through_epoch": keep_through_epoch, "profile": profile, "transferred": transferred}


def _check_optimization(cfg: DictConfig, module, datamodule) -> None:
    """Build the optimizer and schedule once on the side, so their mistakes surface before training."""
    from experiments.training.optim import build_optimizer, build_scheduler

    batches = math.ceil(len(datamodule.train_dataloader()) / max(1, int(cfg.trainer.get("accumulate_grad_batches") or 1)))
    epochs = int(cfg.trainer.get("max_epochs") or 1)
    max_steps = int(cfg.trainer.get("max_steps") or -1)
    total = max_steps if max_steps > 0 else max(1, epochs) * batches
    optimizer = build_optimizer(cfg.optimizer, module.model, module.lr_scales)  # thrown away: Lightning builds its own
    if cfg.get("scheduler") is not None and cfg.scheduler.get("_target_"):
        build_scheduler(cfg.scheduler, optimizer, total, batches)


def _check_batch_statistics(cfg: DictConfig, module, datamodule) -> None:
    """A training batch of one image cannot pass a BatchNorm that sees one value per channel (PyTorch
    stops mid-epoch with "Expected more than 1 value per channel"): refuse it before anything is written.
    An epoch's last batch of one is dropped by the loader (:func:`data.base.last_batch_is_one_image`);
    this catches ``data.batch_size=1`` and a training set of one image."""
    from experiments.training.build import input_shape_of, one_value_norms

    images = len(datamodule.train_set)
    if min(int(datamodule.batch_size), images) > 1:
        return
    norms = one_value_norms(module.model, input_shape_of(cfg))
    if not norms:
        return
    if datamodule.batch_size == 1:
        key, value = "data.batch_size", 1
    else:  # a training set of one image: name the setting that made it so
        key = "data.subset" if cfg.data.get("subset") else "data.num_train" if "num_train" in cfg.data else "data.val_size"
        value = OmegaConf.select(cfg, key)
    where = ", ".join(norms[:3]) + (f" and {len(norms) - 3} more" if len(norms) > 3 else "")
    raise UserError(key, value, f"gives training batches of one image, but the model's BatchNorm layer(s) {where} "
                    "see one value per channel per image at this input size (a 1x1 map or a pooled vector), "
                    "and batch statistics need at least two.",
                    "Use data.batch_size >= 2 (and at least 2 training images), or a larger data.image_size.")


def _fit_and_test(cfg: DictConfig, started: float, datamodule, module, ckpt_path, keep_through_epoch,
                  profile: dict, transferred: dict | None = None) -> float:
    from pytorch_lightning.utilities import rank_zero_info

    from experiments.training.build import build_trainer, count_parameters, input_shape_of

    run_dir = Path(cfg.paths.run_dir)
    trainer = build_trainer(cfg, keep_through_epoch)
    if trainer.is_global_zero and _is_launcher_process():
        runs.RunFolder(run_dir).config_file.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        _write_summary(cfg, run_dir, status="running", started=started, metrics={},
                       params=count_parameters(module.model), input_shape=input_shape_of(cfg), profile=profile,
                       transferred=transferred)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
    except BaseException as error:
        _report_interruption(cfg, run_dir, trainer, module, started, error)
        raise
    interrupted = trainer.interrupted
    fit_metrics = _scalars(trainer.callback_metrics)
    test_metrics: dict[str, float] = {}
    if not interrupted and not trainer.fast_dev_run:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        test_metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    elif trainer.fast_dev_run:
        results = trainer.test(module, datamodule=datamodule, verbose=False)
        test_metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    metrics = {**fit_metrics, **test_metrics}
    diverged = (run_dir / "diagnostics" / "nonfinite_stop.json").is_file()
    if trainer.is_global_zero:
        status = "interrupted" if interrupted else "diverged" if diverged else "finished"
        _write_summary(cfg, run_dir, status=status, started=started, metrics=metrics,
                       params=count_parameters(module.model), input_shape=input_shape_of(cfg),
                       epochs=trainer.current_epoch, steps=trainer.global_step)
        if not cfg.get("quiet"):
            _print_result(cfg, run_dir, metrics, status)
        else:
            rank_zero_info(f"run folder: {run_dir}")
    _finish_wandb(trainer)
    if diverged:
        return math.nan  # a sweep must not rank a diverged trial by the epochs before it blew up
    value = metrics.get(str(cfg.get("optimized_metric", "val/err_best")), math.nan)
    return float(value)


def _finish_wandb(trainer) -> None:
    """Close the W&B run so the next job of a multirun starts its own (W&B keeps one per process)."""
    from pytorch_lightning.loggers import WandbLogger

    if any(isinstance(logger, WandbLogger) for logger in trainer.loggers):
        import wandb

        wandb.finish()


def _report_interruption(cfg: DictConfig, run_dir: Path, trainer, module, started: float,
                         error: BaseException) -> None:
    """After Ctrl-C or SIGTERM: record the run as interrupted, say how to resume, exit 130/143."""
    from experiments.training.build import count_parameters, input_shape_of
    from experiments.training.interrupts import SaveOnInterrupt

    saver = next((c for c in trainer.callbacks if isinstance(c, SaveOnInterrupt)), None)
    if saver is None or saver.signal_name is None:
        return  # a real error: let it propagate
    if trainer.is_global_zero and _is_launcher_process():
        _write_summary(cfg, run_dir, status="interrupted", started=started,
                       metrics=_scalars(trainer.callback_metrics), params=count_parameters(module.model),
                       input_shape=input_shape_of(cfg), epochs=trainer.current_epoch, steps=trainer.global_step)
        saved = saver.checkpoint_path if saver.checkpoint_path.is_file() else None
        print(f"\nInterrupted by {saver.signal_name} at epoch {trainer.current_epoch}, step {trainer.global_step}; "
              + (f"state saved to {saved}." if saved else "nothing to save yet.")
              + f"\nContinue with: python -m experiments.train resume={run_dir}", file=sys.stderr, flush=True)
    raise SystemExit(130 if saver.signal_name == "SIGINT" else 143) from None


def _scalars(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _write_summary(cfg: DictConfig, run_dir: Path, status: str, started: float, metrics: dict[str, float],
                   params: int, input_shape: tuple[int, int, int], epochs: int | None = None,
                   steps: int | None = None, profile: dict | None = None, transferred: dict | None = None) -> None:
    from hydra.core.hydra_config import HydraConfig

    folder = runs.RunFolder(run_dir)
    previous = folder.summary()
    transferred = transferred or previous.get("finetune")
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    wall = time.time() - started + (previous.get("wall_time_s", 0.0) if previous.get("status") != "running" else 0.0)
    summary = {
        **previous,
        "status": status,
        "run_dir": str(run_dir),
        "model": OmegaConf.select(cfg, "model._target_"),
        # A fine-tuned run has its source run's architecture, whatever the `model` option said.
        "model_name": (transferred or {}).get("source_model") or _choice("model"),
        "data": _choice("data"),
        "params": params,
        "macs": (profile or {}).get("macs", previous.get("macs")),
        "paper_comparison": (profile or {}).get("paper", previous.get("paper_comparison")),
        "input_shape": list(input_shape),
        "seed": int(cfg.seed),
        "metrics": metrics,
        "best_val_err": metrics.get("val/err_best", previous.get("best_val_err")),
        "test_acc": metrics.get("test/acc", previous.get("test_acc")),
        "test_err": metrics.get("test/err", previous.get("test_err")),
        "epochs": epochs,
        "steps": steps,
        "wall_time_s": round(wall, 2),
        "git_commit": provenance.git_commit(),
        "versions": dict(provenance.package_versions()),
        "command": " ".join(["python -m experiments.train", *overrides]),
    }
    if transferred:
        summary["finetune"] = transferred
    runs.write_json_atomic(folder.summary_file, summary)


def _choice(group: str) -> str | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def _print_result(cfg: DictConfig, run_dir: Path, metrics: dict[str, float], status: str) -> None:
    lines = []
    if "test/acc" in metrics:
        lines.append(f"test accuracy: {metrics['test/acc']:.2f}%  (test error {metrics['test/err']:.2f}%, "
                     f"best val error {metrics.get('val/err_best', math.nan):.2f}%)")
    if status == "diverged":
        lines.append(f"the loss became non-finite: see {run_dir / 'diagnostics' / 'nonfinite_stop.json'}")
    if status == "interrupted":
        lines.append(f"interrupted; continue with: python -m experiments.train resume={run_dir}")
    lines.append(f"run folder: {run_dir}")
    loggers = set((cfg.get("logger") or {}).keys())
    if "tensorboard" in loggers:
        lines.append(f"dashboard: tensorboard --logdir {run_dir / 'tensorboard'}")
    if "wandb" in loggers:
        lines.append(f"W&B: see {run_dir / 'wandb'} (offline runs: wandb sync {run_dir}/wandb/offline-run-*)")
    print("\n".join(lines), flush=True)
