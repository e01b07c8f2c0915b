"""Keep freed host memory in the process, so a CPU training step does not fault its pages in again.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a large block (above its
mmap threshold: 128 KiB, raised dynamically up to 32 MiB) with a fresh ``mmap`` and hands it back to
the kernel on ``free``; it also trims freed memory at the top of the heap. A training step allocates
and frees the same activation and gradient buffers every step, so every step the kernel maps them
again and zero-fills them page by page: measured here, LeNet-5 at batch 128 took 350-3,700 minor page
faults per step and ran 10-13% slower than with the memory kept (7.4 against 8.5 ms a step, one core).

``host_allocator: reuse`` (the default) sets glibc's two thresholds once per process (``mallopt``;
the same settings as the ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` environment variables,
which only work before the process starts): blocks up to :data:`KEEP_BYTES` come from the heap and up
to that much freed memory stays there for the next step. The price: the process keeps its peak host
memory until it ends instead of shrinking between steps (the CUDA caching allocator does the same on a
GPU). PyTorch's own tuning guide reaches the same end by preloading jemalloc or tcmalloc
(``torch.backends.xeon.run_cpu --enable_jemalloc``); this needs no extra library. ``system`` leaves
the C library's defaults. Elsewhere than glibc (macOS, musl) both settings leave malloc as it is.

(Written by hand: no library sets these from Python; ``ctypes`` calls glibc's documented ``mallopt``.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform

log = logging.getLogger("experiments")

SETTINGS = ("reuse", "system")
KEEP_BYTES = 1 << 30  # 1 GiB: larger than one layer's activations of any model this project trains on a CPU
_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def apply(setting: str) -> bool:
    """Set the process's allocator for ``setting`` (``reuse`` or ``system``); True when glibc took it.

    ``system`` changes nothing (a process that already applied ``reuse`` keeps it: glibc has no way
    back to its dynamic threshold, and nothing in one process needs one).
    """
    if setting not in SETTINGS:
        raise ValueError(f"host_allocator must be one of {', '.join(SETTINGS)}, not {setting!r}")
    if setting == "system":
        return False
    libc = _glibc()
    if libc is None:
        log.debug("host_allocator=reuse: not glibc, malloc left as it is")
        return False
    taken = bool(libc.mallopt(_M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
    if not taken:
        log.debug("host_allocator=reuse: glibc refused the thresholds; malloc left as it is")
    return taken
