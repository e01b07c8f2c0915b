"""CIFAR-10 and CIFAR-100 from their python-pickle batches, read by torchvision's own classes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from data.base import InMemoryDataModule
from data.errors import DataConfigError
from data.sources import locate


class _TrustingCIFAR10(CIFAR10):
    """torchvision's reader minus the md5 check, so small files in the same format load too.

    Corrupt files still fail, with our own message, when they are parsed.
    """

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)


class _TrustingCIFAR100(_TrustingCIFAR10, CIFAR100):
    pass


class CIFAR10DataModule(InMemoryDataModule):
    name = "cifar10"
    reader = _TrustingCIFAR10

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        base = self.reader.base_folder
        required = [name for name, _ in self.reader.train_list + self.reader.test_list]
        folder = locate(
            self.name, self.root, subfolders=[base, f"{self.name}/{base}"], required=required,
            system_folder=None, download=self._download, allow_download=self.download,
            how_to_get=f"Download the python version of {self.name.upper()} and unpack it so that "
                       f"data/{base}/ holds {', '.join(required)}; or run with network access and data.download=true.",
        )
        try:
            dataset = self.reader(str(folder.parent), train=train, download=False)
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, OSError) as error:
            raise DataConfigError("root", str(folder), f"the {self.name} batch files are truncated or corrupt "
                                  f"({type(error).__name__}: {error}).", "Delete them and fetch the dataset again.")
        images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(dataset.targets, dtype=torch.long)

    def _download(self, root: Path) -> None:
        self.reader.__mro__[1](str(root), train=True, download=True)


class CIFAR100DataModule(CIFAR10DataModule):
    name = "cifar100"
    reader = _TrustingCIFAR100

    def _download(self, root: Path) -> None:
        CIFAR100(str(root), train=True, download=True)
