"""One base DataModule for every dataset that fits in memory as a uint8 tensor.

A subclass only says how to read its files (:meth:`InMemoryDataModule.load_split`). The base does the
rest the same way for all: seeded hold-out validation split, batches cut straight from the tensors (no
per-image Python), and the batched augment/normalise pipeline on the batch's device. ``classes`` keeps
some labels only, relabelled 0..k-1 in the listed order, the same way in every split (transfer learning
from one half of a dataset's classes to the other).

The GPU data path (``device_resident``): a dataset that fits is copied to the training device once and
every batch is cut (``index_select``) and augmented there, so nothing crosses the bus per step but the
batch's indices (from pinned memory, asynchronously). ``auto`` (the default) does so when the Trainer
trains on a CUDA device and the split takes at most :data:`RESIDENT_SHARE` of that device's free
memory; ``true`` forces it (onto the current CUDA device, from ``setup`` on), ``false`` never. Data
left on the host is read into pinned memory and copied with ``non_blocking=True`` (Lightning's
transfer does that for pinned batches).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from data.augment import BatchPipeline
from data.errors import DataConfigError

log = logging.getLogger(__name__)


def trains_batchnorm(trainer: Any) -> bool:
    """Whether the model the attached Trainer trains has a BatchNorm layer (no Trainer: no model to
    protect, so a loop without one, like the benchmark's plain loop, sees every batch)."""
    module = getattr(trainer, "lightning_module", None) if trainer is not None else None
    return module is not None and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


def last_batch_is_one_image(images: int, batch_size: int, trainer: Any = None) -> bool:
    """Whether an epoch's last training batch would hold a single image (on each rank under DDP, whose
    sampler gives every rank ``ceil(images / world_size)``): then the training loader drops it.

    BatchNorm cannot take batch statistics of one image where a map is 1x1 (a CIFAR ResNet-18's last
    stage, any BN after global pooling): PyTorch stops the run mid-epoch with "Expected more than 1 value
    per channel". For a model with BatchNorm (:func:`trains_batchnorm`), dropping that batch loses one
    image of a reshuffled epoch (a different one each epoch), as long as a full batch remains; Lightning
    counts the epoch's batches from the loader, so schedules and progress agree.
    """
    world = int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1
    per_rank = -(-images // world)
    dropped = per_rank > batch_size and per_rank % batch_size == 1
    if dropped:
        log.info("data: the last training batch would hold 1 image (%d per rank, batch %d): dropped each epoch, "
                 "as BatchNorm cannot train on one image", per_rank, batch_size)
    return dropped

# With device_resident=auto a split goes to the GPU when it takes at most this share of the device's free
# memory at the time its loader is made (the rest is for the weights, activations and the allocator's
# workspace; the splits that come later see what the earlier ones left). A quarter keeps e.g. all of
# CIFAR-10 (150 MB as uint8) resident on any GPU of 2 GB or more.
RESIDENT_SHARE = 0.25


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA ``device`` (None for any other device)."""
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def resident_decision(setting: bool | str, dataset_bytes: int, device: torch.device | None,
                      free_bytes: int | None, share: float = RESIDENT_SHARE) -> tuple[bool, str]:
    """Whether a split of ``dataset_bytes`` goes to ``device`` under ``data.device_resident=setting``, and why.

    ``device`` is where the Trainer trains (None: no Trainer yet); ``free_bytes`` the device's free memory
    (``torch.cuda.mem_get_info``), None when unknown. Pure: the tests pass made-up memory figures.
    """
    if setting is False:
        return False, "data.device_resident=false"
    if device is None or device.type != "cuda":
        return False, "not training on a CUDA device"
    if setting is True:
        return True, "data.device_resident=true"
    if free_bytes is None:
        return False, "the device's free memory is unknown"
    limit = share * free_bytes
    if dataset_bytes <= limit:
        return True, f"{dataset_bytes / 2**20:.0f} MiB <= {share:.0%} of the {free_bytes / 2**30:.1f} GiB free"
    return False, f"{dataset_bytes / 2**20:.0f} MiB > {share:.0%} of the {free_bytes / 2**30:.1f} GiB free"


class TensorBatches(torch.utils.data.Dataset):
    """Images and labels as tensors; ``__getitems__`` returns a whole batch by one ``index_select``.

    The rows are gathered from a flat (N, C*H*W) view: on CPU, indexing the 4-D uint8 tensor with
    ``images[index]`` costs milliseconds a batch (measured 8-13 ms for 128 Fashion-MNIST images on two
    busy cores, slower than LeNet-5's training step), the 2-D ``index_select`` microseconds.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images.contiguous(), labels

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size() + self.labels.numel() * self.labels.element_size()

    def to(self, device: torch.device) -> TensorBatches:
        """The same data on ``device`` (one copy of the whole split)."""
        return TensorBatches(self.images.to(device), self.labels.to(device))

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.labels.device.type == "cuda":
            # From pinned memory without waiting: a blocking host-to-device copy would wait for every
            # kernel queued before it, i.e. sync the GPU once per batch.
            index = index.pin_memory().to(self.labels.device, non_blocking=True)
        else:
            index = index.to(self.labels.device)
        rows = self.images.reshape(len(self.images), -1)  # a view: the images are contiguous
        images = rows.index_select(0, index).view(len(index), *self.images.shape[1:])
        return images, self.labels.index_select(0, index)


class EpochSeededSampler(RandomSampler):
    """A random order that is a function of (seed, epoch) only.

    Lightning calls ``set_epoch`` before every epoch, so a run resumed at an epoch boundary sees the
    same order as one that never stopped. Under DDP, Lightning swaps it for its DistributedSampler,
    which works the same way.
    """

    def __init__(self, data_source, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed, self.epoch = int(seed), 0
        self._skip: tuple[int, int] | None = None  # (epoch, indices already trained on in it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip_on_resume(self, epoch: int, count: int) -> None:
        """Leave out the first ``count`` indices of ``epoch``'s order: a run resumed mid-epoch saw them."""
        self._skip = (int(epoch), int(count))

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = super().__iter__()
        if self._skip is not None and self._skip[0] == self.epoch:
            order = itertools.islice(order, self._skip[1], None)
        self._skip = None
        return order


def already_batched(batch):
    """Collate function for :class:`TensorBatches`: the dataset already returns a batch."""
    images, labels = batch
    if labels.ndim != 1:  # a loader rebuilt without batching would hand over single samples
        raise RuntimeError("TensorBatches must be read in batches (DataLoader with batch_size set)")
    return images, labels


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) on the [0, 1] scale, in float64."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64) / 255
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (squares / count - mean * mean).sqrt()
    return mean.tolist(), std.tolist()


def _positive_int(key: str, value: Any, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DataConfigError(key, value, "must be a positive integer.", f"Set data.{key}={example}.")
    return value


def _label_subset(classes: Any, num_classes: int) -> list[int] | None:
    """``data.classes`` checked: distinct labels >= 0, as many as ``data.num_classes``."""
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in classes):
        raise DataConfigError("classes", classes, "must be a non-empty list of the dataset's labels (integers >= 0).",
                              "Use e.g. data.classes=[5,6,7,8,9] data.num_classes=5, or null for all classes.")
    classes = list(classes)
    if len(set(classes)) != len(classes):
        raise DataConfigError("classes", classes, "lists a label twice.", "List each label once.")
    if len(classes) != num_classes:
        raise DataConfigError("num_classes", num_classes, f"but data.classes keeps {len(classes)} classes "
                              f"({classes}), relabelled 0..{len(classes) - 1}.",
                              f"Set data.num_classes={len(classes)}.")
    return classes


def check_mean_std(mean: Sequence[float], std: Sequence[float], in_channels: int) -> None:
    """One mean and one positive std per channel; a count that disagrees names ``in_channels``."""
    mean, std = list(mean), list(std)
    if len(mean) != len(std):
        raise DataConfigError("mean/std", (mean, std), f"have {len(mean)} and {len(std)} values.",
                              "Give one value per channel in each (python -m data.stats recomputes them).")
    if len(mean) != in_channels:
        raise DataConfigError("in_channels", in_channels, f"but data.mean and data.std have {len(mean)} values "
                              "(one per channel).", f"Set data.in_channels={len(mean)}, or give {in_channels} "
                              "mean/std values (python -m data.stats recomputes them).")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in mean + std) or min(std) <= 0:
        raise DataConfigError("mean/std", (mean, std), "must be numbers, with every std positive.",
                              "Recompute them with python -m data.stats.")


class InMemoryDataModule(pl.LightningDataModule):
    """Base for datasets held in memory. Subclasses set ``name`` and implement ``load_split``."""

    name = "dataset"
    classes: list[str] | None = None  # class names for plots; None means "0", "1", ...

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        native_size: int,
        image_size: int | None = None,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        root: str = "data",
        download: bool = True,
        resize_mode: str = "resize",
        val_size: int | float = 5000,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: Mapping[str, Any] | None = None,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        subset: int | None = None,
        test_subset: int | None = None,
        device_resident: bool | Literal["auto"] = "auto",
        classes: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels, "3")
        self.num_classes = _positive_int("num_classes", num_classes, "10")
        self.label_subset = _label_subset(classes, self.num_classes)
        if self.label_subset is not None:
            names = type(self).classes
            self.classes = [names[c] if names and c < len(names) else str(c) for c in self.label_subset]
        self.native_size = _positive_int("native_size", native_size, "32")
        self.image_size = _positive_int("image_size", native_size if image_size is None else image_size, "32")
        self.batch_size = _positive_int("batch_size", batch_size, "128")
        self.eval_batch_size = _positive_int(
            "eval_batch_size", batch_size if eval_batch_size is None else eval_batch_size, "256")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise DataConfigError("num_workers", num_workers, "must be an integer >= 0.", "Use 0 for in-memory data.")
        for key, value in (("subset", subset), ("test_subset", test_subset)):
            if value is not None:
                _positive_int(key, value, "10000 (or null for all)")
        for key, value in (("split_seed", split_seed), ("shuffle_seed", shuffle_seed)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise DataConfigError(key, value, "must be an integer.", f"Set data.{key}=0.")
        check_mean_std(mean, std, in_channels)
        if (isinstance(val_size, bool) or not isinstance(val_size, (int, float)) or val_size < 0
                or (isinstance(val_size, float) and not val_size < 1)):
            raise DataConfigError("val_size", val_size, "must be a count >= 0 (an integer) or a fraction in "
                                  "[0, 1).", "Use e.g. 5000 or 0.1.")
        self.root, self.download, self.val_size = str(root), bool(download), val_size
        self.num_workers, self.split_seed, self.shuffle_seed = num_workers, split_seed, shuffle_seed
        if device_resident not in (True, False, "auto"):
            raise DataConfigError("device_resident", device_resident, "must be auto, true or false.",
                                  "Use auto (on the GPU when it fits), true (always) or false (never).")
        self.subset, self.test_subset, self.device_resident = subset, test_subset, device_resident
        self._placed: dict[int, TensorBatches] = {}  # id(host split) -> its copy on the training device
        self.mean, self.std = list(mean), list(std)
        augment = dict(augment or {})
        keys = ("crop_padding", "hflip", "color_jitter", "rotation", "translate", "color_cast")
        unknown = set(augment) - set(keys)
        if unknown:
            raise DataConfigError("augment", sorted(unknown), "has unknown keys.", f"Valid keys are {', '.join(keys)}.")
        self.pipeline = BatchPipeline(self.mean, self.std, self.image_size, self.native_size, resize_mode,
                                      **augment)
        self.train_set: TensorBatches | None = None
        self.val_set: TensorBatches | None = None
        self.test_set: TensorBatches | None = None

    # --- what a subclass provides -------------------------------------------------------------
    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (uint8 images N x C x H x W, int64 labels N) of the training or the test split."""
        raise NotImplementedError

    # --- Lightning hooks ------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = self._checked(*self.load_split(train=True), "train")
            images, labels = self._take(images, labels, self.subset, seed=self.split_seed + 1)
            train_idx, val_idx = self._split_indices(len(labels))
            self.train_set = self._dataset(images[train_idx], labels[train_idx])
            self.val_set = self._dataset(images[val_idx], labels[val_idx])
        if stage in (None, "test", "predict") and self.test_set is None:
            images, labels = self._checked(*self.load_split(train=False), "test")
            images, labels = self._take(images, labels, self.test_subset, seed=self.split_seed + 2)
            self.test_set = self._dataset(images, labels)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, torch.Tensor):  # the module's example_input_array (model summary): a model input
            return batch
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        resume = getattr(self, "_resume_state", None)
        if training and resume:
            torch.set_rng_state(resume["rng"])  # the resumed mid-epoch run's first batch
            self._resume_state = None
        return self.pipeline(images, train=training), labels

    def transform_batch(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """The same pipeline for code outside a Trainer (benchmarks, analyses)."""
        return self.pipeline(images, train=train)

    # --- helpers --------------------------------------------------------------------------------
    def _split_indices(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        n_val = round(self.val_size * n) if isinstance(self.val_size, float) else int(self.val_size)
        if n_val >= n:
            raise DataConfigError("val_size", self.val_size, f"leaves no training images (the training split "
                                  f"has {n}).", f"Use fewer than {n} images for validation, e.g. {n // 10}.")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        return order[n_val:], order[:n_val]

    @staticmethod
    def _take(images, labels, count: int | None, seed: int):
        if count is None or count >= len(labels):
            return images, labels
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:count]
        return images[keep], labels[keep]

    @property
    def source_num_classes(self) -> int:
        """Classes in the dataset's own labels (before ``classes`` keeps some of them)."""
        if self.label_subset is None:
            return self.num_classes
        return max(self.num_classes, max(self.label_subset) + 1)

    def _keep_classes(self, images: torch.Tensor, labels: torch.Tensor, split: str):
        """Only the images of ``data.classes``, relabelled 0..k-1 in the listed order."""
        if self.label_subset is None:
            return images, labels
        labels = labels.long()
        top = int(labels.max())
        missing = [c for c in self.label_subset if c > top]
        if missing and split == "train":
            raise DataConfigError("classes", list(self.label_subset), f"lists {missing[0]}, but the {self.name} "
                                  f"{split} labels range over {int(labels.min())}..{top}.",
                                  f"List labels of the dataset, each in 0..{top}.")
        lookup = torch.full((max(top, max(self.label_subset)) + 1,), -1, dtype=torch.long)
        lookup[torch.tensor(self.label_subset)] = torch.arange(len(self.label_subset))
        new = lookup[labels.clamp(min=0)]
        keep = (new >= 0) & (labels >= 0)
        if split == "train" and not bool(keep.any()):
            raise DataConfigError("classes", list(self.label_subset), f"keeps no image of the {self.name} {split} "
                                  "split.", "List labels that occur in the dataset.")
        return images[keep], new[keep]

    def _checked(self, images: torch.Tensor, labels: torch.Tensor, split: str):
        if images.ndim == 3:
            images = images.unsqueeze(1)
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels) or len(labels) == 0:
            raise DataConfigError("root", self.root, f"the {self.name} {split} split is malformed (images "
                                  f"{tuple(images.shape)} {images.dtype}, {len(labels)} labels).",
                                  "Fetch the dataset files again.")
        if images.shape[1] != self.in_channels:
            raise DataConfigError("in_channels", self.in_channels, f"but the {self.name} images have "
                                  f"{images.shape[1]} channels.", f"Set data.in_channels={images.shape[1]}.")
        images, labels = self._keep_classes(images, labels, split)
        if int(labels.max()) >= self.num_classes or int(labels.min()) < 0:
            raise DataConfigError("num_classes", self.num_classes, f"but the {self.name} labels range over "
                                  f"{int(labels.min())}..{int(labels.max())}.",
                                  f"Set data.num_classes={int(labels.max()) + 1}.")
        return images.contiguous(), labels.long()

    def _dataset(self, images: torch.Tensor, labels: torch.Tensor) -> TensorBatches:
        # On the host: a split goes to the Trainer's own device when a loader is made (:meth:`placed`),
        # not to cuda:0 whatever the Trainer trains on (a CPU Trainer, another DDP rank's GPU).
        return TensorBatches(images, labels)

    # Where a loop without a Lightning Trainer trains (the benchmark's plain loop sets it): a split can go
    # there as it goes to an attached Trainer's device. None: only a Trainer's device counts.
    device_hint: torch.device | None = None

    def training_device(self) -> torch.device | None:
        """The device the attached Trainer trains on, else :attr:`device_hint` (None without either)."""
        trainer = getattr(self, "trainer", None)
        strategy = getattr(trainer, "strategy", None) if trainer is not None else None
        device = getattr(strategy, "root_device", None)
        return device if device is not None else self.device_hint

    def placed(self, dataset: TensorBatches, device: torch.device | None) -> TensorBatches:
        """``dataset`` on ``device`` when ``device_resident`` says so (copied once, then reused)."""
        if self.device_resident is False or device is None:
            return dataset
        if id(dataset) in self._placed:
            return self._placed[id(dataset)]
        free = free_memory(device) if self.device_resident == "auto" else None  # true: whatever the size
        resident, why = resident_decision(self.device_resident, dataset.nbytes, device, free)
        if not resident:
            if self.device_resident is True:
                log.warning("data.device_resident=true has no effect here: %s; the data stays on the host", why)
            return dataset
        log.info("data.device_resident=%s: %s images kept on %s (%s)", str(self.device_resident).lower(),
                 len(dataset), device, why)
        self._placed[id(dataset)] = dataset.to(device)
        return self._placed[id(dataset)]

    def _loader(self, dataset: TensorBatches | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("setup() must run before asking for a dataloader")
        dataset = self.placed(dataset, self.training_device())
        sampler = EpochSeededSampler(dataset, self.shuffle_seed) if shuffle else SequentialSampler(dataset)
        if shuffle:
            self._train_sampler = sampler
            self._apply_resume()
        size = self.batch_size if shuffle else self.eval_batch_size
        resident = dataset.labels.device.type != "cpu"
        trainer = getattr(self, "trainer", None)
        drop_last = shuffle and trains_batchnorm(trainer) and last_batch_is_one_image(len(dataset), size, trainer)
        # batch_size + sampler (not a batch_sampler): Lightning's DDP swaps in a DistributedSampler and
        # keeps the batch size; with a batch_sampler it would rebuild the loader with batch_size=None.
        # The fetcher still hands each whole batch of indices to TensorBatches.__getitems__.
        return DataLoader(
            dataset,
            batch_size=size,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=already_batched,
            # Its own generator: creating an iterator then draws no number from torch's global RNG,
            # whose per-epoch state (dropout, augmentation) must not depend on when loaders start.
            generator=torch.Generator().manual_seed(self.shuffle_seed),
            num_workers=0 if resident else self.num_workers,
            pin_memory=not resident and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0 and not resident,
        )

    # --- exact resume mid-epoch -----------------------------------------------------------------
    # Lightning saves and restores a DataModule's state_dict with every checkpoint. A run stopped
    # mid-epoch (Ctrl-C, SIGTERM) records how many batches the training loop consumed in the epoch and
    # torch's RNG state; on resume the epoch's order skips those batches and the RNG is restored just
    # before the next batch is augmented, so training continues as if it had never stopped.
    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if done == 0 or done >= trainer.num_training_batches:
            return {}  # an epoch boundary: the per-epoch seeding already makes resuming exact
        return {"epoch": trainer.current_epoch, "batches": int(done), "rng": torch.get_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_state = dict(state) if state else None
        self._apply_resume()

    def _apply_resume(self) -> None:
        state = getattr(self, "_resume_state", None)
        sampler = getattr(self, "_train_sampler", None)
        # Kept until the first training batch: Lightning may build the train loader more than once.
        if state and isinstance(sampler, EpochSeededSampler):
            sampler.skip_on_resume(state["epoch"], state["batches"] * self.batch_size)
