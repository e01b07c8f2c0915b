"""Read the IDX files of MNIST and Fashion-MNIST, plain or gzip-compressed.

torchvision's ``read_sn3_pascalvincent_tensor`` only opens uncompressed files, while the Debian
package ships them gzipped in a read-only folder; this reader takes either without extracting.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from data.errors import DataConfigError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def resolve(folder: Path, name: str) -> Path:
    plain = folder / name
    return plain if plain.is_file() else folder / f"{name}.gz"


def read_idx(path: Path) -> torch.Tensor:
    """Parse one IDX file into a tensor; a truncated or corrupt file is a clear data error."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            raw = path.read_bytes()
        zero, dtype_code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
        if zero != 0 or dtype_code not in _DTYPES or not 1 <= ndim <= 4:
            raise ValueError("bad magic number")
        shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
        array = np.frombuffer(raw, dtype=_DTYPES[dtype_code], offset=4 + 4 * ndim)
        if array.size != int(np.prod(shape)):
            raise ValueError(f"header says {shape} but the file holds {array.size} values")
    except (OSError, EOFError, ValueError, IndexError, zlib.error) as error:  # zlib: a scrambled .gz
        raise DataConfigError(
            "root", str(path.parent), f"the IDX file {path.name} is truncated or corrupt ({error}).",
            "Delete it and fetch the dataset again (or reinstall the Debian dataset package).",
        ) from None
    return torch.from_numpy(array.reshape(shape).astype(array.dtype.newbyteorder("=")))
