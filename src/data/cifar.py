"""CIFAR-10 and CIFAR-100 from their python-pickle batches, read by torchvision's own classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from data.base import InMemoryDataModule
from data.errors import DataConfigError
from data.sources import locate


class _TrustingCIFAR10(CIFAR10):
    """torchvision's reader minus the md5 checks, so small files in the same format load too.

    torchvision checks the md5 of the batches (``_check_integrity``) and of the meta file
    (``_load_meta``); both become "the file exists". Corrupt files still fail, with our own message,
    when they are parsed.
    """

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        meta, self.meta = self.meta, {**self.meta, "md5": None}  # check_integrity(path, None): exists
        try:
            super()._load_meta()
        finally:
            self.meta = meta


class _TrustingCIFAR100(_TrustingCIFAR10, CIFAR100):
    pass


class CIFAR10DataModule(InMemoryDataModule):
    name = "cifar10"
    reader = _TrustingCIFAR10
    torchvision_class = CIFAR10

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        base = self.reader.base_folder
        required = [name for name, _ in self.reader.train_list + self.reader.test_list]
        required.append(self.reader.meta["filename"])
        folder = locate(
            self.name, self.root, subfolders=[base, f"{self.name}/{base}"], required=required,
            system_folder=None, download=self._download, allow_download=self.download,
            how_to_get=f"Download the python version of {self.name.upper()} and unpack it into {{root}} "
                       f"(so that {{root}}/{base}/ holds the files), or run with network access and data.download=true.",
        )
        # The files may sit in a folder of another name (data.root pointing straight at them).
        reader = type(self.reader.__name__, (self.reader,), {"base_folder": folder.name})
        try:
            dataset = reader(str(folder.parent), train=train, download=False)
            images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2)
            labels = torch.as_tensor(np.asarray(dataset.targets, dtype=np.int64))
        except Exception as error:  # a truncated/corrupt pickle raises almost anything
            detail = " ".join(f"{type(error).__name__}: {error}".split())[:200]
            raise DataConfigError("root", str(folder), f"the {self.name} batch files are truncated or corrupt "
                                  f"({detail}).", "Delete them and fetch the dataset again.") from None
        return images.contiguous(), labels

    def _download(self, root: Path) -> None:
        self.torchvision_class(str(root), train=True, download=True)


class CIFAR100DataModule(CIFAR10DataModule):
    name = "cifar100"
    reader = _TrustingCIFAR100
    torchvision_class = CIFAR100
