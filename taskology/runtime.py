"""Process-level settings that every taskology process (driver, Dask worker) applies once."""
from __future__ import annotations

import sys

#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_malloc(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Let glibc serve tensor-sized blocks (up to ``mmap_threshold``) from the heap and keep up to
    ``trim_threshold`` of freed memory; returns whether it applied (glibc Linux only).

    Why: a Dask nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also turns off glibc's
    dynamic mmap threshold, so every activation above 128 KiB is mmap'ed and unmapped again at each step
    (page faults): a 32x96 training step ran 1.6x slower in a worker than in the driver. These are the
    values glibc's dynamic threshold would settle at (its 64-bit ceiling is 32 MiB).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
                    and libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
