"""Random images of any shape, for tests and benchmarks: no files, any size, learnable on purpose.

Each class has a fixed random template; an image is its class template plus noise, so a model can
learn it (``signal: 0`` makes pure noise, a useful control). With signal 1 and no noise the
task is trivially separable: a pipeline check, not a benchmark of accuracy.
"""

from __future__ import annotations

import torch

from data.base import InMemoryDataModule
from data.errors import DataConfigError


class SyntheticDataModule(InMemoryDataModule):
    name = "synthetic"

    def __init__(self, num_train: int = 1024, num_test: int = 256, signal: float = 1.0, seed: int = 0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        for key, value in (("num_train", num_train), ("num_test", num_test)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise DataConfigError(key, value, "must be a positive integer.", f"Set data.{key}=512.")
        if isinstance(signal, bool) or not isinstance(signal, (int, float)) or not 0 <= signal <= 1:
            raise DataConfigError("signal", signal, "must be in [0, 1].", "Use 1.0 for learnable data, 0 for noise.")
        self.num_train, self.num_test, self.signal, self.seed = num_train, num_test, float(signal), seed

    def load_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        shape = (self.in_channels, self.native_size, self.native_size)
        templates = torch.rand(self.source_num_classes, *shape, generator=generator)
        generator.manual_seed(self.seed + (1 if train else 2))
        count = self.num_train if train else self.num_test
        labels = torch.randint(0, self.source_num_classes, (count,), generator=generator)
        noise = torch.rand(count, *shape, generator=generator)
        images = self.signal * templates[labels] + (1 - self.signal) * noise
        return (images * 255).round().clamp(0, 255).to(torch.uint8), labels
