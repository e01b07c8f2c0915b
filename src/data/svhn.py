"""SVHN (cropped digits, format 2) from its ``.mat`` files, read by torchvision's class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import SVHN

from data.base import InMemoryDataModule
from data.errors import DataConfigError
from data.sources import locate


class _TrustingSVHN(SVHN):
    """torchvision's reader minus the md5 check (see data.cifar for why)."""

    def _check_integrity(self) -> bool:
        return (Path(self.root) / self.filename).is_file()


class SVHNDataModule(InMemoryDataModule):
    name = "svhn"
    classes = [str(d) for d in range(10)]

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        split = "train" if train else "test"
        filename = SVHN.split_list[split][1]
        folder = locate(
            self.name, self.root, subfolders=["svhn"], required=[filename], system_folder=None,
            download=lambda root: SVHN(str(root / "svhn"), split=split, download=True),
            allow_download=self.download,
            how_to_get="Put train_32x32.mat and test_32x32.mat (SVHN format 2) under {root}/svhn/, or run with "
                       "network access and data.download=true.",
        )
        try:
            dataset = _TrustingSVHN(str(folder), split=split, download=False)
            images = torch.from_numpy(np.ascontiguousarray(dataset.data))  # already N x C x H x W
            labels = torch.as_tensor(np.asarray(dataset.labels, dtype=np.int64).reshape(-1))
        except Exception as error:  # scipy raises many kinds for a truncated or foreign file
            detail = " ".join(f"{type(error).__name__}: {error}".split())[:200]
            raise DataConfigError("root", str(folder), f"{filename} is truncated or corrupt ({detail}).",
                                  "Delete it and fetch it again.") from None
        return images, labels
