"""Multi-crop testing and ensembles: average softmax probabilities over crops, then over runs.

The papers' best numbers are averages: AlexNet's 10 crops, GoogLeNet's 144 crops and 7 models. This
module computes, for every run and every crop scheme (:mod:`experiments.evaluation.multicrop`), the mean softmax
probability of each test image over its crops; an ensemble is the plain mean of its members' averaged
probabilities (each member with equal weight, as in the papers). Top-1 and top-k errors (k =
``min(5, classes)``) are in percent, like the training module's ``test/err`` and ``test/err5``.

Where the crops come from:

* In-memory datasets (:class:`data.base.InMemoryDataModule`): the test loader's uint8 images at their
  native size, cropped BEFORE the run's resize/pad and normalisation (``datamodule.pipeline``), so a
  10-crop is cut from a sharper, larger image and not from the model's already-resized input. With
  ``resize_mode: pad`` (small digits centred in a larger field) the padded field is what gets enlarged
  and cropped. 1 crop is exactly the run's own view (``fit_size`` then normalise), in the loader's
  batches, so it reproduces the run's ``test/err`` bit for bit.
* Image folders (:class:`data.imagefolder.ImageFolderDataModule`): the loader's tensors are already
  resized, centre-cropped and normalised, too late to crop. Each test image is decoded a second time in
  the same worker, unresized, and cropped from that; 1 crop is the datamodule's own evaluation tensor.
* Any other datamodule: 1 crop through its own ``test_dataloader`` and ``transform_batch``; 10 or 144
  crops are a :class:`~experiments.core.errors.UserError` (there is no unresized image to crop).

Memory stays bounded: the test set goes through in the loader's batches, and each batch in chunks of
at most ``data.eval_batch_size`` crop images per forward pass (144 crops of one image at a time for
GoogLeNet's scheme and a batch size below 288). Probabilities are accumulated in float64 on the CPU.
torch is imported where it is used, so a missing run or a mismatched ensemble is reported instantly.
"""

from __future__ import annotations

import copy
import datetime
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from omegaconf import DictConfig, OmegaConf

from experiments.core import runs
from experiments.core.errors import UserError
from experiments.evaluation.multicrop import DEFAULT_RESIZE_RATIO, crops_of

if TYPE_CHECKING:
    import torch

# Config keys every member of an ensemble must share with the first (same test images, same classes).
SHARED_KEYS = ("data._target_", "data.num_classes", "data.image_size")


def eval_trainer(cfg: DictConfig, run_dir: Path):
    """A one-device Trainer with the run's accelerator and precision, writing nothing."""
    import pytorch_lightning as pl

    return pl.Trainer(accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                      precision=cfg.trainer.get("precision", "32-true"), default_root_dir=str(run_dir))


def time_stamp() -> str:
    """A file-name time stamp to the microsecond, zero-padded so that names sort in time order."""
    return datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")


# --- errors from probabilities -----------------------------------------------------------------------
def top_k_of(num_classes: int) -> int:
    return min(5, int(num_classes))


def errors_of(probs: torch.Tensor, labels: torch.Tensor, top_k: int = 5) -> dict[str, float]:
    """Top-1 and top-k error in percent of averaged probabilities ``[N, classes]``."""
    top_k = min(top_k, probs.shape[1])
    labels = labels.to(probs.device)
    top1 = probs.argmax(dim=1) != labels
    topk = ~(probs.topk(top_k, dim=1).indices == labels[:, None]).any(dim=1)
    return {"top1_err": 100 * float(top1.double().mean()), "top5_err": 100 * float(topk.double().mean())}


# --- where the crops come from -----------------------------------------------------------------------
class PipelineViews:
    """In-memory datamodules: crop the native uint8 test images, then the pipeline's mean/std."""

    def __init__(self, datamodule) -> None:
        self.datamodule, self.pipeline = datamodule, datamodule.pipeline
        self.size = int(self.pipeline.image_size)

    def loader(self):
        return self.datamodule.test_dataloader()

    def crops(self, images: torch.Tensor, scheme: int, resize_ratio: float, per_call: int) -> Iterator[torch.Tensor]:
        """Normalised crops ``[n_crops, m, C, S, S]`` of consecutive chunks of ``per_call`` images."""
        import torch

        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        # pad mode: the model saw native digits centred in an S x S field; that field is what is scaled.
        base = x if scheme == 1 or self.pipeline.resize_mode == "resize" else self.pipeline.fit_size(x)
        mean, std = self.pipeline.mean.to(x.device), self.pipeline.std.to(x.device)
        for start in range(0, len(x), per_call):
            chunk = crops_of(base[start : start + per_call], self.size, scheme, resize_ratio,
                             single_view=self.pipeline.fit_size)
            yield (chunk - mean) / std  # the pipeline's own normalisation, op for op


class _ViewAndRaw:
    """Folder transform: the datamodule's evaluation tensor and the decoded, unresized uint8 image."""

    def __init__(self, view) -> None:
        self.view = view

    def __call__(self, image):
        from torchvision.transforms.v2 import functional as TF

        return self.view(image), TF.pil_to_tensor(image)


def _collate_view_and_raw(samples):
    import torch

    views = torch.stack([view for (view, _), _ in samples])
    raws = [raw for (_, raw), _ in samples]  # sizes differ from image to image
    return (views, raws), torch.tensor([label for _, label in samples])


class FolderViews:
    """Image folders: crops of each decoded image at its own size; 1 crop is the datamodule's tensor."""

    def __init__(self, datamodule) -> None:
        import torch

        self.datamodule, self.size = datamodule, int(datamodule.image_size)
        self.mean = torch.tensor(list(datamodule.mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(datamodule.std), dtype=torch.float32).view(1, -1, 1, 1)

    def loader(self):
        from torch.utils.data import DataLoader, Subset

        dm = self.datamodule
        test = dm.test_set
        folder = copy.copy(test.dataset if isinstance(test, Subset) else test)
        folder.transform = _ViewAndRaw(dm.transforms(train=False))
        dataset = Subset(folder, test.indices) if isinstance(test, Subset) else folder
        return DataLoader(dataset, batch_size=dm.eval_batch_size, shuffle=False, num_workers=dm.num_workers,
                          collate_fn=_collate_view_and_raw)

    def crops(self, inputs, scheme: int, resize_ratio: float, per_call: int) -> Iterator[torch.Tensor]:
        import torch

        views, raws = inputs
        for start in range(0, len(raws), per_call):
            if scheme == 1:
                yield views[start : start + per_call].unsqueeze(0)
                continue
            chunk = torch.cat([crops_of(raw.float().div(255).unsqueeze(0), self.size, scheme, resize_ratio)
                               for raw in raws[start : start + per_call]], dim=1)
            yield (chunk - self.mean.to(chunk.device)) / self.std.to(chunk.device)


class LoaderViews:
    """Any other datamodule, 1 crop only: its test loader through its own ``transform_batch``."""

    def __init__(self, datamodule) -> None:
        self.datamodule = datamodule

    def loader(self):
        return self.datamodule.test_dataloader()

    def crops(self, images, scheme: int, resize_ratio: float, per_call: int) -> Iterator[torch.Tensor]:
        x = self.datamodule.transform_batch(images, train=False)
        for start in range(0, len(x), per_call):
            yield x[start : start + per_call].unsqueeze(0)


def views_for(datamodule, run: str, schemes: Sequence[int]):
    """How this datamodule's test images are cropped (see the module docstring)."""
    if getattr(datamodule, "pipeline", None) is not None:
        return PipelineViews(datamodule)
    from data.imagefolder import ImageFolderDataModule

    if isinstance(datamodule, ImageFolderDataModule):
        return FolderViews(datamodule)
    if list(schemes) == [1]:
        return LoaderViews(datamodule)
    raise UserError("eval.crops", list(schemes), f"needs the unresized test images of {run}, and its "
                    f"{type(datamodule).__name__} hands over finished model inputs only.",
                    "Use eval.crops=1 for it, or a dataset held in memory (data.base.InMemoryDataModule) "
                    "or an image folder (data=imagefolder).")


# --- one run's probabilities -------------------------------------------------------------------------
def _crop_predictor(module, views, schemes: Sequence[int], resize_ratio: float, budget: int):
    import pytorch_lightning as pl
    import torch

    class CropPredictor(pl.LightningModule):
        """Wraps the trained module so the Trainer supplies the run's device and precision."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def predict_step(self, batch, batch_idx: int) -> dict[Any, torch.Tensor]:
            inputs, labels = batch
            dtype = next(self.inner.parameters()).dtype
            layout = getattr(self.inner, "_layout", lambda x: x)
            out: dict[Any, torch.Tensor] = {"labels": labels.cpu()}
            for scheme in schemes:
                parts = []
                chunks = views.crops(inputs, scheme, resize_ratio, max(1, budget // scheme))
                while True:
                    # Cropping and normalising outside autocast, as the datamodule's batch transform
                    # runs outside it during Trainer.test: 1 crop then sees the very same input.
                    with torch.autocast(self.device.type, enabled=False):
                        crops = next(chunks, None)
                    if crops is None:
                        break
                    n, m = crops.shape[:2]
                    logits = self.inner(layout(crops.reshape(n * m, *crops.shape[2:]).to(dtype)))
                    probs = logits.double().softmax(dim=1).view(n, m, -1).mean(dim=0)
                    parts.append(probs.cpu())
                out[scheme] = torch.cat(parts)
            return out

    return CropPredictor()


def crop_probabilities(trained, schemes: Sequence[int], resize_ratio: float = DEFAULT_RESIZE_RATIO,
                       run: str = "") -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """(labels, {scheme: crop-averaged probabilities [N, classes]}) of a loaded run on its test set."""
    import torch

    views = views_for(trained.datamodule, run or str(trained.run_dir), schemes)
    budget = int(getattr(trained.datamodule, "eval_batch_size", 256))
    predictor = _crop_predictor(trained.module, views, schemes, resize_ratio, budget)
    outputs = eval_trainer(trained.cfg, trained.run_dir).predict(predictor, dataloaders=views.loader())
    labels = torch.cat([o["labels"] for o in outputs])
    return labels, {s: torch.cat([o[s] for o in outputs]) for s in schemes}


# --- members and the whole evaluation ----------------------------------------------------------------
@dataclass
class Member:
    """One run to evaluate, read cheaply (config, checkpoint path) before any weights are loaded."""

    target: str
    key: str  # the command-line key that named it, for error messages
    run_dir: Path
    checkpoint: Path
    cfg: DictConfig
    errors: dict[int | str, dict[str, float]] = field(default_factory=dict)  # crop scheme or extra view

    @property
    def name(self) -> str:
        return f"{self.run_dir.name} [{self.checkpoint.stem}]"


def resolve_members(targets: Sequence[tuple[str, str]], ckpt: str, overrides: list[str]) -> list[Member]:
    """Every (key, run folder or .ckpt) checked and read, and the members checked against the first.

    Cheap on purpose: a missing run or a mismatched dataset is reported before hours of 144-crop testing.
    """
    from experiments.evaluation.trained import apply_overrides

    members: list[Member] = []
    for key, target in targets:
        folder, explicit = runs.RunFolder.of(target, key=key)
        folder.refuse_if_in_use("experiments.eval")  # the record is written into the first run's folder
        cfg = folder.config()
        if overrides:
            cfg = apply_overrides(cfg, list(overrides))
        checkpoint = explicit or folder.checkpoint(ckpt)
        if not checkpoint.is_file():
            raise UserError("ckpt", str(checkpoint), f"does not exist (for {key}={target}).",
                            "Use ckpt=best, ckpt=last or a .ckpt path.")
        if any(m.checkpoint.resolve() == checkpoint.resolve() for m in members):
            print(f"note: {key}={target} is already a member ({checkpoint.name}): counted once.", file=sys.stderr)
            continue  # the same network twice would weigh double in the average
        members.append(Member(target=target, key=key, run_dir=folder.path, checkpoint=checkpoint, cfg=cfg))
    first = members[0]
    for member in members[1:]:
        for name in SHARED_KEYS:
            ours, theirs = (OmegaConf.select(m.cfg, name, default=None) for m in (member, first))
            if ours != theirs:
                _mismatch(member, first, f"{name}={ours},", f"{theirs}")
    return members


def _mismatch(member: Member, first: Member, what: str, first_value: str | None = None) -> None:
    """The one-paragraph error for an ensemble member that does not match the first member."""
    than = (f"than the first run ({first.run_dir})" if first_value is None
            else f"but the first run ({first.run_dir}) has {first_value}")
    raise UserError(member.key, member.target, f"has {what} {than}: an ensemble averages the class probabilities of models tested on the "
                    "same images with the same classes.", "Ensemble only runs of the same dataset, class count, "
                    "image size and test set.")


class ExtraView(Protocol):
    """A test-time view beside the crop schemes (dense evaluation, :class:`.dense.DenseView`): one more row
    per run, named ``name`` in the crops column, averaged into an ensemble like a scheme."""

    name: str

    def probabilities(self, trained: Any, run: str) -> tuple[torch.Tensor, torch.Tensor]: ...

    def record(self) -> dict[str, Any]: ...


def evaluate_crops(targets: Sequence[tuple[str, str]], ckpt: str = "best", overrides: list[str] | None = None,
                   schemes: Sequence[int] = (1,), resize_ratio: float = DEFAULT_RESIZE_RATIO,
                   quiet: bool = False, extra: Sequence[ExtraView] = ()) -> dict[str, Any]:
    """Multi-crop errors of one run, or of several runs and their ensemble; writes and returns the record."""
    overrides = list(overrides or [])
    members = resolve_members(targets, ckpt, overrides)  # before torch is even imported

    import torch

    from experiments.evaluation.trained import load_trained

    schemes = list(dict.fromkeys(schemes))
    labels: torch.Tensor | None = None
    sums: dict[int | str, torch.Tensor] = {}
    num_test = num_classes = 0
    for member in members:  # one model in memory at a time
        trained = load_trained(str(member.checkpoint), ckpt, overrides)
        size, classes = len(trained.datamodule.test_set), int(trained.datamodule.num_classes)
        if labels is not None and (size, classes) != (num_test, num_classes):
            _mismatch(member, members[0], f"{size} test images of {classes} classes,",
                          f"{num_test} of {num_classes}")
        # The extra views first: a network they refuse (dense: not convertible) stops before the crop pass.
        extras = {view.name: view.probabilities(trained, member.target) for view in extra}
        got, probs = crop_probabilities(trained, schemes, resize_ratio, run=member.target)
        if labels is not None and not torch.equal(got, labels):
            _mismatch(member, members[0], "other test labels (another data seed, split or subset)")
        for name, (extra_labels, extra_probs) in extras.items():
            assert torch.equal(extra_labels, got), f"{name} saw the test set in another order"
            probs[name] = extra_probs
        labels, num_test, num_classes = got, size, classes
        k = top_k_of(probs[schemes[0]].shape[1])
        for scheme in [*schemes, *extras]:
            member.errors[scheme] = errors_of(probs[scheme], got, k)
            sums[scheme] = probs[scheme] if scheme not in sums else sums[scheme] + probs[scheme]
        del trained, probs
    assert labels is not None
    top_k = top_k_of(sums[schemes[0]].shape[1])
    views = [*schemes, *(view.name for view in extra)]
    ensemble = {s: errors_of(sums[s] / len(members), labels, top_k) for s in views} if len(members) > 1 else {}
    rows = []
    for scheme in views:
        rows += [{"name": m.name, "run_dir": str(m.run_dir), "models": 1, "crops": scheme, **m.errors[scheme]}
                 for m in members]
        if ensemble:
            rows.append({"name": f"ensemble of {len(members)}", "models": len(members), "crops": scheme,
                         **ensemble[scheme]})
    record = {
        "kind": "ensemble" if ensemble else "multicrop",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "crops": schemes,
        "resize_ratio": resize_ratio,
        "top_k": top_k,
        "num_test": num_test,
        "overrides": overrides,
        "members": [{"run_dir": str(m.run_dir), "checkpoint": str(m.checkpoint), "name": m.name,
                     "errors": {str(s): e for s, e in m.errors.items()}} for m in members],
        "rows": rows,
    }
    record.update({view.name: view.record() for view in extra})
    if ensemble:
        record["ensemble"] = {str(s): e for s, e in ensemble.items()}
    prefix = "ensemble-" if ensemble else ""
    path = members[0].run_dir / "eval" / f"{prefix}{time_stamp()}.json"
    record["path"] = str(path)
    runs.write_json_atomic(path, record)
    if not quiet:
        print(format_table(rows, top_k))
        print(f"record: {path}")
    return record


def format_table(rows: Sequence[dict[str, Any]], top_k: int = 5) -> str:
    """``model/run x crops -> top-1 err, top-k err``, one row per (run or ensemble, crop scheme)."""
    header = ("model / run", "models", "crops", "top-1 err", f"top-{top_k} err")
    cells = [(r["name"], str(r["models"]), str(r["crops"]), f"{r['top1_err']:.2f}%", f"{r['top5_err']:.2f}%")
             for r in rows]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    lines = []
    for row in [header, *cells]:
        lines.append("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                               for i, cell in enumerate(row)))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
