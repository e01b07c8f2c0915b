"""ImageNet-style folders (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``), streamed from disk.

Too large to hold in memory, so images are decoded per image in DataLoader workers with torchvision's
v2 transforms: the ResNet-ImageNet scale augmentation (shorter side drawn from [256, 480], a random
224 crop, horizontal flip) for training and resize + centre crop for evaluation. The validation split
is held out of ``train/``; ``val/`` (or ``test/``) is the test set, as ImageNet papers report.

Normalisation (``normalize``): ``dataset`` (the default) uses the folder's own per-channel mean and std,
measured once on its training images (:func:`data.stats.folder_stats`: at most ``stats_images`` of them,
a seeded draw, cached beside the data), which is what a network trained from scratch on X-rays, digits
or satellite tiles needs; ``imagenet`` uses ImageNet's published numbers, which is what a network
trained on ImageNet (torchvision's weights, fine-tuned with ``finetune.from=``) was trained with and
must keep seeing; ``none`` only scales pixels to [0, 1]. Numbers given in ``mean``/``std`` win over
``normalize``: the training pipeline writes the numbers it used there, into the run's ``config.yaml``,
so evaluation and resume read them back instead of measuring again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Subset

from data.base import last_batch_is_one_image, trains_batchnorm
from data.errors import DataConfigError
from data.stats import FolderStats, folder_stats

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Normalize = Literal["dataset", "imagenet", "none"]
NORMALIZE: tuple[str, ...] = ("dataset", "imagenet", "none")

log = logging.getLogger(__name__)


class _CheckedLoader:
    """PIL loader that names the unreadable file instead of failing deep inside a worker."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, path: str) -> Image.Image:
        try:
            with open(path, "rb") as handle:
                return Image.open(handle).convert(self.mode)
        except (OSError, UnidentifiedImageError) as error:
            raise RuntimeError(f"data.root: cannot read image {path} ({error}); remove or replace it.") from None


def check_normalization(normalize: Any, mean: Sequence[float] | None, std: Sequence[float] | None,
                        stats_images: Any, in_channels: int) -> tuple[list[float], list[float]] | None:
    """The checked ``normalize``/``mean``/``std``/``stats_images``; the given numbers, or None to derive them."""
    if normalize not in NORMALIZE:
        raise DataConfigError("normalize", normalize, f"is not one of {', '.join(NORMALIZE)}.",
                              "Use dataset (the folder's own statistics: training from scratch), imagenet "
                              "(fine-tuning a network trained on ImageNet) or none (pixels in [0, 1]).")
    if isinstance(stats_images, bool) or not isinstance(stats_images, int) or stats_images <= 0:
        raise DataConfigError("stats_images", stats_images, "must be a positive integer: how many training "
                              "images (at most) data.normalize=dataset reads.", "Use e.g. 1000.")
    if (mean is None) != (std is None):
        raise DataConfigError("mean/std", (mean, std), "must be given together or both left null.",
                              "Give both (one value per channel), or set both to null and choose data.normalize.")
    if mean is None or std is None:
        if normalize == "imagenet" and in_channels != 3:
            raise DataConfigError("normalize", normalize, f"gives ImageNet's RGB statistics, and data.in_channels"
                                  f" is {in_channels}.", "Use data.normalize=dataset (the folder's own grey-level"
                                  " statistics), or give data.mean and data.std.")
        return None
    mean, std = list(mean), list(std)
    if len(mean) < in_channels or len(std) < in_channels or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in mean + std) or min(std[:in_channels]) <= 0:
        raise DataConfigError("mean/std", (mean, std), f"need {in_channels} numbers each and a positive std.",
                              "Set both to null and choose data.normalize (dataset, imagenet, none).")
    return mean[:in_channels], std[:in_channels]


class ImageFolderDataModule(pl.LightningDataModule):
    name = "imagefolder"

    def __init__(
        self,
        root: str,
        in_channels: int = 3,
        num_classes: int | None = None,
        image_size: int = 224,
        native_size: int | None = None,
        normalize: Normalize = "dataset",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        stats_images: int = 1000,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        val_size: int | float = 0.02,
        split_seed: int = 0,
        augment: Mapping[str, Any] | None = None,
        verify_images: bool = True,
        train_dir: str = "train",
        test_dirs: Sequence[str] = ("val", "test"),
        download: bool = False,
        subset: int | None = None,
        test_subset: int | None = None,
        resize_mode: str = "resize",
        device_resident: bool = False,
    ) -> None:
        super().__init__()
        from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

        self.root = Path(str(root)).expanduser()
        for key, value in (("batch_size", batch_size), ("image_size", image_size),
                           ("eval_batch_size", batch_size if eval_batch_size is None else eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise DataConfigError(key, value, "must be a positive integer.", f"Set e.g. data.{key}=256.")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise DataConfigError("num_workers", num_workers, "must be an integer >= 0.",
                                  "Use e.g. 2 (the images are decoded in the workers).")
        if in_channels not in (1, 3):
            raise DataConfigError("in_channels", in_channels, "must be 1 (grayscale) or 3 (RGB).", "Use 3.")
        given = check_normalization(normalize, mean, std, stats_images, in_channels)
        if isinstance(val_size, bool) or not isinstance(val_size, (int, float)) or val_size < 0 or (
                isinstance(val_size, float) and not val_size < 1):
            raise DataConfigError("val_size", val_size, "must be a count >= 0 (an integer) or a fraction in "
                                  "[0, 1).", "Use a fraction such as 0.02.")
        augment = dict(augment or {})
        unknown = set(augment) - {"scale", "hflip", "color_jitter"}
        scale = augment.get("scale", (256, 480))
        if unknown or len(scale) != 2 or not 0 < int(scale[0]) <= int(scale[1]):
            raise DataConfigError("augment", augment, "takes scale: [min, max] shorter side (0 < min <= max), "
                                  "hflip and color_jitter only.", "Use e.g. scale: [256, 480].")
        train_root = self.root / train_dir
        if not train_root.is_dir():
            raise DataConfigError("root", str(root), f"has no `{train_dir}/` folder of class subfolders.",
                                  "Point data.root at a folder laid out as train/<class>/*.jpg and val/<class>/*.jpg.")
        self.classes = sorted(d.name for d in train_root.iterdir() if d.is_dir())
        if len(self.classes) < 2:
            raise DataConfigError("root", str(root), f"{train_root} holds {len(self.classes)} class folder(s); "
                                  "classification needs at least 2.", "Add one subfolder per class.")
        if num_classes is not None and num_classes != len(self.classes):
            raise DataConfigError("num_classes", num_classes, f"but {train_root} has {len(self.classes)} classes.",
                                  f"Set data.num_classes={len(self.classes)} or null to infer it.")
        class_to_idx = {name: i for i, name in enumerate(self.classes)}
        test_root = next((self.root / d for d in test_dirs if (self.root / d).is_dir()), None)
        try:
            self.train_samples = make_dataset(str(train_root), class_to_idx, IMG_EXTENSIONS)
            self.test_samples = make_dataset(str(test_root), class_to_idx, IMG_EXTENSIONS) if test_root else []
        except FileNotFoundError as error:  # a class folder without a single image
            raise DataConfigError("root", str(root), f"has a class without images: {error}",
                                  "Every class needs images under both train/ and val/ (or remove the "
                                  "empty class folder).") from None
        n = len(self.train_samples)
        n_val = round(val_size * n) if isinstance(val_size, float) else int(val_size)
        if n_val >= n:
            raise DataConfigError("val_size", val_size, f"leaves no training images (there are {n}).",
                                  "Use a fraction such as 0.02.")
        if verify_images:
            self._verify(self.train_samples + self.test_samples)
        self.mode = "RGB" if in_channels == 3 else "L"
        self.normalize = normalize
        self.folder_stats: FolderStats | None = None
        mean, std = given or self._statistics(normalize, in_channels, train_dir, stats_images)
        self.in_channels, self.num_classes, self.image_size = in_channels, len(self.classes), image_size
        self.native_size = native_size or image_size
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.num_workers, self.val_size, self.split_seed = num_workers, val_size, split_seed
        self.subset, self.test_subset = subset, test_subset
        self.train_set = self.val_set = self.test_set = None
        self.mean, self.std = list(mean)[:in_channels], list(std)[:in_channels]
        self.scale = (int(scale[0]), int(scale[1]))
        self.hflip = bool(augment.get("hflip", True))
        self.color_jitter = float(augment.get("color_jitter", 0.0))

    def _statistics(self, normalize: str, in_channels: int, train_dir: str, stats_images: int
                    ) -> tuple[Sequence[float], Sequence[float]]:
        """The mean and std that ``normalize`` names (``dataset``: measured, or read from the cache)."""
        if normalize == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        if normalize == "none":
            return (0.0,) * in_channels, (1.0,) * in_channels
        stats = folder_stats(self.root, train_dir, [path for path, _ in self.train_samples], self.mode, stats_images)
        self.folder_stats = stats
        log.info("data.normalize=dataset: mean %s, std %s from %d of the %d training images (%s)",
                 [round(v, 4) for v in stats.mean], [round(v, 4) for v in stats.std], stats.images, stats.total,
                 f"cache: {stats.cache}" if stats.cache else "not cached: the folder is read-only")
        return stats.mean, stats.std

    @staticmethod
    def _verify(samples: list[tuple[str, int]]) -> None:
        """Read every image header once (fast: PIL reads no pixels) so a bad file fails before training."""
        for path, _ in samples:
            try:
                with Image.open(path) as image:
                    image.verify()
            except (OSError, UnidentifiedImageError, SyntaxError) as error:
                raise DataConfigError("root", path, f"is not a readable image ({type(error).__name__}).",
                                      "Remove or replace the file, or set data.verify_images=false.") from None

    def transforms(self, train: bool):
        from torchvision.transforms import v2

        tail = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        if not train:
            resize = round(self.image_size * 256 / 224)
            return v2.Compose([v2.Resize(resize), v2.CenterCrop(self.image_size), *tail])
        steps = [v2.RandomShortestSize(min_size=list(range(self.scale[0], self.scale[1] + 1))),
                 v2.RandomCrop(self.image_size, pad_if_needed=True)]
        if self.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if self.color_jitter:
            steps.append(v2.ColorJitter(self.color_jitter, self.color_jitter, self.color_jitter))
        return v2.Compose(steps + tail)

    def _folder(self, samples, train: bool):
        from torchvision.datasets import DatasetFolder

        dataset = DatasetFolder.__new__(DatasetFolder)  # reuse the scanned list; no second directory walk
        dataset.root, dataset.loader = str(self.root), _CheckedLoader(self.mode)
        dataset.classes, dataset.class_to_idx = self.classes, {c: i for i, c in enumerate(self.classes)}
        dataset.samples, dataset.targets = samples, [label for _, label in samples]
        dataset.transform, dataset.target_transform, dataset.transforms = self.transforms(train), None, None
        dataset.extensions = None
        return dataset

    def setup(self, stage: str | None = None) -> None:
        # Every split is only a view on the scanned file lists, so all are built at once, and only once:
        # Lightning and the analysis tools call setup() again for each stage.
        if self.test_set is not None:
            return
        n = len(self.train_samples)
        n_val = round(self.val_size * n) if isinstance(self.val_size, float) else int(self.val_size)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        train_idx = order[n_val:][: self.subset] if self.subset else order[n_val:]
        self.train_set = Subset(self._folder(self.train_samples, train=True), train_idx)
        self.val_set = Subset(self._folder(self.train_samples, train=False), order[:n_val])
        if not self.test_samples:
            raise DataConfigError("root", str(self.root), "has no val/ or test/ folder for the test set.",
                                  "Add root/val/<class>/*.jpg.")
        test = self._folder(self.test_samples, train=False)
        if self.test_subset:
            # A seeded draw, kept in file order: the files are sorted by class, so the first N would
            # hold only the first few classes.
            drawn = torch.randperm(len(test), generator=torch.Generator().manual_seed(self.split_seed))
            self.test_set = Subset(test, sorted(drawn[: self.test_subset].tolist()))
        else:
            self.test_set = test

    def _loader(self, dataset, shuffle: bool, batch_size: int) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        drop_last = shuffle and trains_batchnorm(trainer) and last_batch_is_one_image(len(dataset), batch_size, trainer)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=self.num_workers > 0,
                          drop_last=drop_last)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size)

    def transform_batch(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        return images  # already decoded, augmented and normalised in the workers
