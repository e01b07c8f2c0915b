"""``host_allocator=reuse`` makes glibc keep freed memory: a buffer allocated again is not faulted in again.

The known answer is glibc's documented behaviour: with the C library's defaults a block above the
largest mmap threshold glibc sets by itself (32 MiB on 64-bit) is mapped fresh on every ``malloc`` and
unmapped on ``free``, so writing a 40 MiB buffer faults in all of its 10,240 pages every time; with
the thresholds raised it comes from the heap and stays there, so after the first time nothing faults.
(A training step's buffers are smaller and its pattern less regular, so glibc's own threshold catches
some of them by itself: what the setting is worth on a real step is measured by the benchmark.)
Each case runs in its own process: the setting is process-wide.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
from tests.conftest import REPO

BUFFER_PAGES = (40 << 20) // 4096

PROBE = """
import ctypes, json, resource, sys
from experiments.training import host_allocator
taken = host_allocator.apply(sys.argv[1])
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def allocate_write_free(size=40 << 20):
    pointer = libc.malloc(size)
    libc.memset(pointer, 1, size)
    libc.free(pointer)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
allocate_write_free()  # the first time faults in any setting
before = faults()
for _ in range(5):
    allocate_write_free()
print(json.dumps({"taken": taken, "faults_per_allocation": (faults() - before) / 5}))
"""


def _probe(setting: str) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE, setting], cwd=REPO, text=True, capture_output=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting acts on glibc's malloc")
def test_reuse_keeps_freed_memory_and_system_maps_it_again():
    system, reuse = _probe("system"), _probe("reuse")
    assert system["taken"] is False and reuse["taken"] is True
    assert system["faults_per_allocation"] >= BUFFER_PAGES  # every page, every time
    assert reuse["faults_per_allocation"] < 0.01 * BUFFER_PAGES  # the same memory, still mapped


def test_an_unknown_setting_is_refused():
    from experiments.training import host_allocator

    with pytest.raises(ValueError, match="reuse, system"):
        host_allocator.apply("jemalloc")
