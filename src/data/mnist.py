"""MNIST and Fashion-MNIST from their IDX files (torchvision's on-disk format, plain or .gz)."""

from __future__ import annotations

from pathlib import Path

import torch

from data.base import InMemoryDataModule
from data.errors import DataConfigError
from data.idx import read_idx, resolve
from data.sources import locate

_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class MNISTDataModule(InMemoryDataModule):
    name = "mnist"
    classes = [str(d) for d in range(10)]
    torchvision_class = "MNIST"
    system_folder: str | None = "mnist"
    how_to_get = ("Put the four IDX files (train-images-idx3-ubyte[.gz], ...) under {root}/mnist/, or run once "
                  "with network access and data.download=true.")

    def folder(self) -> Path:
        return locate(
            self.name, self.root,
            subfolders=[self.name, self.name.replace("_", "-"), f"{self.torchvision_class}/raw"],
            required=[name for pair in _FILES.values() for name in pair],
            system_folder=self.system_folder,
            download=self._download, allow_download=self.download, how_to_get=self.how_to_get,
        )

    def _download(self, root: Path) -> None:
        import torchvision.datasets as tvd

        getattr(tvd, self.torchvision_class)(str(root), train=True, download=True)

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        folder = self.folder()
        image_file, label_file = _FILES[train]
        images = read_idx(resolve(folder, image_file))
        labels = read_idx(resolve(folder, label_file)).long()
        if images.ndim != 3 or len(images) != len(labels):
            raise DataConfigError("root", str(folder), f"{image_file} and {label_file} do not match "
                                  f"({tuple(images.shape)} images, {len(labels)} labels).",
                                  "Fetch the dataset files again.")
        return images.unsqueeze(1), labels


class FashionMNISTDataModule(MNISTDataModule):
    name = "fashion_mnist"
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
    torchvision_class = "FashionMNIST"
    system_folder = "fashion-mnist"
    how_to_get = ("On Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (files land in "
                  "/usr/share/datasets/fashion-mnist), or put the four IDX files under {root}/fashion_mnist/, "
                  "or run with network access and data.download=true.")
