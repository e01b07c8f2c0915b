"""``python -m experiments.eval run=<run folder or .ckpt> [ckpt=best|last] [eval.crops=...] [eval.runs=[...]] [key=value ...]``

Evaluates a trained run on its test set with the run's OWN saved config (``<run>/config.yaml``), not
today's defaults; ``key=value`` arguments override that config (e.g. ``data.root=/elsewhere``).
Prints the metrics and saves them to ``<run>/eval/<time>.json``; it never touches the run's other files.

Test-time averaging, as the papers' tables report it (:mod:`experiments.evaluation.ensemble`):

* ``eval.crops=1|10|144`` or a list ``eval.crops=[1,10,144]``: softmax probabilities averaged over the
  single view, AlexNet's 10 crops or GoogLeNet's 144 crops; one table row per scheme, top-1 and top-5
  error. ``eval.resize_ratio`` (default 256/224) sets the 10-crop's shorter side over the crop size.
* ``eval.runs=[runA,runB,...]`` (run folders or .ckpt files; ``run=`` may then be left out, or is the
  first member): the runs' probabilities averaged too, each run's errors beside the ensemble's, written
  to ``<first run>/eval/ensemble-<time>.json``.
* ``eval.dense=true`` (:mod:`experiments.evaluation.dense`): VGG's dense evaluation, one more ``dense``
  row per run: the network made fully convolutional (ResNets and other global-pooling nets are so
  already) slides over the test image enlarged to ``eval.dense_scale`` times the training size (default
  256/224) or to a shorter side of ``eval.dense_size`` pixels, its class score map averaged, and the
  soft-max averaged with the mirrored image's (``eval.dense_flip=false`` to skip the mirror). Setting
  ``eval.dense_scale`` or ``eval.dense_size`` turns it on.

Without ``eval.*`` keys the run is tested by its own Trainer exactly as at the end of training.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

from experiments.core.errors import UserError, exits_cleanly_on_user_error

USAGE = ("usage: python -m experiments.eval run=<run folder or checkpoint> [ckpt=best|last|<path>] "
         "[eval.crops=1|10|144|[1,10,144]] [eval.runs=[<run>,<run>,...]] [eval.resize_ratio=256/224] "
         "[eval.dense=true] [eval.dense_scale=256/224 | eval.dense_size=<pixels>] [eval.dense_flip=true] "
         "[key=value ...]")
EVAL_KEYS = ("eval.crops", "eval.runs", "eval.resize_ratio", "eval.dense", "eval.dense_scale", "eval.dense_size",
             "eval.dense_flip")
CROPS_FIX = "Use eval.crops=1, 10 or 144, or a list such as eval.crops=[1,10,144]."


@dataclass
class EvalArguments:
    """The command line, read: what to test and how; ``overrides`` are keys of the run's own config."""

    run: str | None = None
    ckpt: str = "best"
    overrides: list[str] = field(default_factory=list)
    crops: list[int] | None = None  # None: the plain Trainer test, as before multi-crop testing existed
    runs: list[str] = field(default_factory=list)
    resize_ratio: float | None = None
    dense: bool | None = None  # None: not asked; eval.dense_scale/size alone turn it on
    dense_scale: float | None = None
    dense_size: int | None = None
    dense_flip: bool = True

    @property
    def targets(self) -> list[tuple[str, str]]:
        """(key, run) of every member: ``run=`` first when given, then ``eval.runs`` in order."""
        return ([("run", self.run)] if self.run else []) + [("eval.runs", r) for r in self.runs]

    @property
    def averaged(self) -> bool:
        return self.crops is not None or bool(self.runs) or self.resize_ratio is not None or self.dense_on

    @property
    def dense_on(self) -> bool:
        return bool(self.dense) or (self.dense is None and (self.dense_scale is not None or self.dense_size is not None))


def list_value(value: str) -> list[str]:
    """``[a,b,c]`` (or a single ``a``) as strings; quotes around items are dropped."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        return [item.strip().strip("'\"") for item in text[1:-1].split(",") if item.strip()]
    return [text] if text else []


def parse_crops(value: str) -> list[int]:
    from experiments.evaluation.multicrop import SCHEMES

    items = list_value(value)
    if not items:
        raise UserError("eval.crops", value, "is empty.", CROPS_FIX)
    schemes = []
    for item in items:
        if not item.isdigit() or int(item) not in SCHEMES:
            raise UserError("eval.crops", value, f"has {item!r}, which is not a crop scheme: 1 (single view), 10 "
                            "(corners + centre and their mirrors) or 144 (GoogLeNet: 4 scales x 3 squares x 6 "
                            "crops x 2 mirrors).", CROPS_FIX)
        schemes.append(int(item))
    return list(dict.fromkeys(schemes))


MAX_RATIO = 4.0  # the papers use 256/224 (10-crop) to 352/224 (144-crop)


def parse_ratio(value: str, key: str = "eval.resize_ratio",
                meaning: str = "the 10-crop's shorter side over the crop size (data.image_size)",
                example: str = "the papers' eval.resize_ratio=256/224 (the default)") -> float:
    """A number >= 1, written as a decimal or a fraction such as 256/224."""
    try:
        top, _, bottom = value.partition("/")
        ratio = float(top) / float(bottom) if bottom else float(top)
    except (ValueError, ZeroDivisionError):
        ratio = math.nan
    if not math.isfinite(ratio) or ratio < 1:
        raise UserError(key, value, f"must be a number >= 1: {meaning}.", f"Use {example}.")
    if ratio > MAX_RATIO:  # the images grow by its square: 1000 asked for 208 GB
        raise UserError(key, value, f"is past {MAX_RATIO:g}: {meaning}; the test images would grow "
                        f"{ratio ** 2:,.0f}-fold in pixels and a crop would see under 1/{MAX_RATIO ** 2:g} of one.",
                        f"Use {example}.")
    return ratio


def parse_bool(key: str, value: str) -> bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise UserError(key, value, "is not a boolean.", f"Use {key}=true or {key}=false.")


def parse_dense_size(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise UserError("eval.dense_size", value, "must be a whole number of pixels: the shorter side of the "
                        "enlarged test image.", "Use e.g. eval.dense_size=64 (at least data.image_size).")
    return int(value)


def check_dense(args: EvalArguments) -> None:
    """The ``eval.dense*`` keys agree with each other (sizes are checked against the run when it loads)."""
    if args.dense is False and (args.dense_scale is not None or args.dense_size is not None):
        key = "eval.dense_scale" if args.dense_scale is not None else "eval.dense_size"
        raise UserError(key, args.dense_scale or args.dense_size, "sizes dense evaluation, which eval.dense=false "
                        "turns off.", f"Drop eval.dense=false, or drop {key}.")
    if args.dense_scale is not None and args.dense_size is not None:
        raise UserError("eval.dense_size", args.dense_size, f"and eval.dense_scale={args.dense_scale:g} both size the "
                        "dense test image.", "Give one of them: a scale of the training size, or a side in pixels.")


def parse_arguments(argv: list[str]) -> EvalArguments:
    args = EvalArguments()
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__.strip())
            print(USAGE)
            sys.exit(0)
        if "=" not in arg:
            raise UserError("argument", arg, "is not of the form key=value.", USAGE)
        key, value = arg.split("=", 1)
        if key == "run":
            args.run = value
        elif key == "ckpt":
            args.ckpt = value
        elif key == "eval.crops":
            args.crops = parse_crops(value)
        elif key == "eval.runs":
            args.runs = list_value(value)
            if not args.runs:
                raise UserError("eval.runs", value, "is empty.", "List the runs to ensemble, e.g. "
                                "eval.runs=[outputs/train/<date>/<runA>,outputs/train/<date>/<runB>].")
        elif key == "eval.resize_ratio":
            args.resize_ratio = parse_ratio(value)
        elif key == "eval.dense":
            args.dense = parse_bool(key, value)
        elif key == "eval.dense_scale":
            args.dense_scale = parse_ratio(value, key, "the dense test image's shorter side over the training size "
                                           "(data.image_size)", "eval.dense_scale=256/224 (VGG's Q = 256 for "
                                           "224-pixel training crops) or eval.dense_scale=2")
        elif key == "eval.dense_size":
            args.dense_size = parse_dense_size(value)
        elif key == "eval.dense_flip":
            args.dense_flip = parse_bool(key, value)
        elif key.startswith("eval."):
            raise UserError(key, value, "is not an option of experiments.eval.", f"Use one of {', '.join(EVAL_KEYS)}.")
        else:
            args.overrides.append(arg)
    if not args.run and not args.runs:
        raise UserError("run", None, "is required (or eval.runs=[...]).", USAGE)
    check_dense(args)
    return args


def evaluate(run: str, ckpt: str = "best", overrides: list[str] | None = None, quiet: bool = False) -> dict[str, float]:
    from experiments.core import runs
    from experiments.evaluation.ensemble import eval_trainer, time_stamp
    from experiments.evaluation.trained import load_trained

    trained = load_trained(run, ckpt, overrides)
    run_dir, cfg, checkpoint_path, module, datamodule = (trained.run_dir, trained.cfg, trained.checkpoint_path,
                                                         trained.module, trained.datamodule)
    results = eval_trainer(cfg, run_dir).test(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in results[0].items()}
    record = {"run_dir": str(run_dir), "checkpoint": str(checkpoint_path), "overrides": overrides or [],
              "metrics": metrics, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    runs.write_json_atomic(run_dir / "eval" / f"{time_stamp()}.json", record)
    if not quiet:
        print(f"checkpoint: {checkpoint_path}")
        print("  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))
        if "test/acc" in metrics:
            print(f"test accuracy: {metrics['test/acc']:.2f}%  (test error {metrics['test/err']:.2f}%)")
    return metrics


@exits_cleanly_on_user_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if not args.averaged:
        return evaluate(args.run, args.ckpt, args.overrides)
    from experiments.evaluation.dense import DenseSettings, DenseView
    from experiments.evaluation.ensemble import evaluate_crops
    from experiments.evaluation.multicrop import DEFAULT_RESIZE_RATIO

    extra = [DenseView(DenseSettings(args.dense_scale, args.dense_size, args.dense_flip))] if args.dense_on else []
    record = evaluate_crops(args.targets, args.ckpt, args.overrides, args.crops or [1],
                            args.resize_ratio or DEFAULT_RESIZE_RATIO, extra=extra)
    for member in record.get("dense", {}).get("members", []):
        print(f"dense: {member['conversion']}, test images at {member['side']} px, "
              f"{'x'.join(map(str, member['score_map']))} score map averaged"
              f"{' with the mirror image' if args.dense_flip else ''} ({member['run_dir']})")
    return record
