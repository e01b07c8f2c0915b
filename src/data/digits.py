"""scikit-learn's 8x8 handwritten digits (1,797 images, shipped with the package: always offline).

There is no official test split; a fixed, seeded quarter of the images is held out as the test set.
"""

from __future__ import annotations

import torch

from data.base import InMemoryDataModule

TEST_FRACTION = 0.25


class DigitsDataModule(InMemoryDataModule):
    name = "digits"
    classes = [str(d) for d in range(10)]

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.images).mul(255 / 16).round().to(torch.uint8).unsqueeze(1)
        labels = torch.from_numpy(digits.target).long()
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1797))
        n_test = int(len(labels) * TEST_FRACTION)
        keep = order[n_test:] if train else order[:n_test]
        return images[keep], labels[keep]
