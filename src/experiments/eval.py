"""``python -m experiments.eval run=<run folder or .ckpt> [ckpt=best|last] [key=value ...]``

Evaluates a trained run on its test set with the run's OWN saved config (``<run>/config.yaml``), not
today's defaults; ``key=value`` arguments override that config (e.g. ``data.root=/elsewhere``).
Prints the metrics and saves them to ``<run>/eval/<time>.json``; it never touches the run's other files.
"""

from __future__ import annotations

import sys
import time

from experiments.errors import UserError, exits_cleanly_on_user_error

USAGE = "usage: python -m experiments.eval run=<run folder or checkpoint> [ckpt=best|last|<path>] [key=value ...]"


def parse_arguments(argv: list[str]) -> tuple[str, str, list[str]]:
    run, ckpt, overrides = None, "best", []
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__.strip())
            print(USAGE)
            sys.exit(0)
        if "=" not in arg:
            raise UserError("argument", arg, "is not of the form key=value.", USAGE)
        key, value = arg.split("=", 1)
        if key == "run":
            run = value
        elif key == "ckpt":
            ckpt = value
        else:
            overrides.append(arg)
    if not run:
        raise UserError("run", None, "is required.", USAGE)
    return run, ckpt, overrides


def evaluate(run: str, ckpt: str = "best", overrides: list[str] | None = None, quiet: bool = False) -> dict[str, float]:
    import pytorch_lightning as pl

    from experiments import runs
    from experiments.trained import load_trained

    trained = load_trained(run, ckpt, overrides)
    run_dir, cfg, checkpoint_path, module, datamodule = (trained.run_dir, trained.cfg, trained.checkpoint_path,
                                                         trained.module, trained.datamodule)
    trainer = pl.Trainer(accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         precision=cfg.trainer.get("precision", "32-true"), default_root_dir=str(run_dir))
    results = trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in results[0].items()}
    record = {"run_dir": str(run_dir), "checkpoint": str(checkpoint_path), "overrides": overrides or [],
              "metrics": metrics, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    runs.write_json_atomic(run_dir / "eval" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}-{time.time_ns() % 10**6}.json",
                           record)
    if not quiet:
        print(f"checkpoint: {checkpoint_path}")
        print("  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))
        if "test/acc" in metrics:
            print(f"test accuracy: {metrics['test/acc']:.2f}%  (test error {metrics['test/err']:.2f}%)")
    return metrics


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> dict[str, float]:
    run, ckpt, overrides = parse_arguments(sys.argv[1:] if argv is None else argv)
    return evaluate(run, ckpt, overrides)


if __name__ == "__main__":
    main()
