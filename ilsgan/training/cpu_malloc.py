"""glibc malloc settings for CPU training.

torch's CPU allocator has no cache: every activation is malloc'ed and freed each iteration. glibc
serves blocks above its mmap threshold (at most 32 MiB) with fresh ``mmap`` pages and returns freed
heap tops to the OS, so each large tensor is page-faulted and zeroed again on every use. At the
paper's sizes that was a large part of every iteration: ``paper64`` on a 2-core CPU took 25.9
s/iteration with glibc's defaults and 17.3 s with the settings below (``benchmarks/bench_train.py``,
``benchmarks/results/train_cpu.txt``).
Keeping freed memory in the heap costs resident memory equal to the peak working set, which a
training process needs anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Optional

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4

_applied: Optional[str] = None


def tune_malloc_for_training() -> str:
    """Make glibc keep freed memory for reuse (no mmap for large blocks, no trimming).

    Returns a one-line description of what was done, or why nothing was (not Linux/glibc). Safe to
    call more than once; it only affects allocations made afterwards.
    """
    global _applied
    if _applied is not None:
        return _applied
    if not sys.platform.startswith("linux"):
        _applied = f"malloc: unchanged ({sys.platform} is not Linux/glibc)"
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _applied = "malloc: unchanged (no glibc mallopt)"
        return _applied
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = (mallopt(_M_MMAP_MAX, 0) == 1
          and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
          and mallopt(_M_TOP_PAD, 256 << 20) == 1)
    _applied = ("malloc: glibc tuned for training (no mmap, no trim: freed tensors are reused)" if ok
                else "malloc: glibc refused mallopt; defaults kept")
    return _applied
