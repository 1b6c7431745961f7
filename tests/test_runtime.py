"""tune_malloc: a 1 MiB block comes from the heap afterwards, not from a fresh mmap (glibc Linux only)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, sys
import numpy as np
from taskology.runtime import tune_malloc

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mmapped_by_one_block():
    before = libc.mallinfo2().hblkhd
    block = np.ones(1 << 18, dtype=np.float32)  # 1 MiB
    return libc.mallinfo2().hblkhd - before

untuned = mmapped_by_one_block()
applied = tune_malloc()
print(untuned, applied, mmapped_by_one_block())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_tune_malloc_serves_tensor_sized_blocks_from_the_heap() -> None:
    # as a Dask nanny starts its workers: a fixed trim threshold, which also pins the mmap threshold at 128 KiB
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    if "mallinfo2" in out.stderr:
        pytest.skip("libc without mallinfo2")
    assert out.returncode == 0, out.stderr
    untuned, applied, tuned = out.stdout.split()
    assert int(untuned) >= 1 << 20  # before: the 1 MiB array was its own mmap
    assert applied == "True" and int(tuned) == 0  # after: served from the heap
