"""Process-level settings that make CPU training faster without touching the maths.

glibc's ``malloc`` serves every block above its mmap threshold (128 KB, adaptively up to
32 MB) with a fresh ``mmap`` and returns it to the kernel on ``free``. A training step
allocates and frees tens of MB of activations, gradients and ``[B, N]`` score products; the
adaptive threshold settles for a fixed-shape step after a few steps, but a MetAug step (tensors
of many shapes) keeps faulting its memory in again. ``benchmarks/train_speed.py`` reports minor
faults per step (RESULTS.md, "Training speed": a MetAug step at width 0.5 went from ~23,000 to
~1,500). Raising the mmap threshold to its maximum and switching off heap trimming keeps freed
blocks in the heap for the next step, so the same memory is reused instead of faulted in.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
#: glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): larger blocks
#: are always mmapped.
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024

_applied = False


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed blocks up to 32 MB in the heap (no per-step page faults).

    Process-wide and idempotent; a no-op (returning False) off Linux/glibc. Peak resident memory
    is unchanged in practice (the same blocks are reused every step); memory is returned to the
    system when the process ends.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or an unusual libc: nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX))
    ok &= bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    ok &= bool(mallopt(_M_TOP_PAD, 64 * 1024 * 1024))
    _applied = ok
    return ok
