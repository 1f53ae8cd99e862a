"""glibc ``malloc`` settings for long CPU loops of same-shaped forwards (extraction, training).

Why: glibc serves every block above its mmap threshold (128 KB, raised adaptively up to 32 MB
as large blocks are freed) with a fresh ``mmap`` and gives it back on ``free``, and it trims
the top of the heap whenever more than twice that threshold lies free there. One forward of
alexnet32 (width 1.0, batch 64) allocates and frees ~90 MB of activations, so in a fresh
process every batch faults that memory in again: ~23,000 minor page faults per batch for the
forward loop alone, against 0-60 with freed blocks kept in the heap, and ~350 per batch for a
whole extraction (``benchmarks/extract_speed.py`` reports both sides; 2-core AMD EPYC,
2026-12-08). Training steps behave alike (``benchmarks/train_speed.py``). The maths is
untouched: the same kernels run on the same numbers, only where their memory comes from changes.

Three tools:

* :func:`keep_freed_memory`: process-wide and permanent, for processes that are ours
  (``metaug-train``).
* :func:`freed_memory_kept`: the same settings for the duration of a ``with`` block, for
  library calls (:func:`metaug_features.extract.extract_features`). At the outermost exit the
  thresholds go to glibc's own adaptive ceiling (32 MB mmap, 64 MB trim, 128 KB top pad), the
  state a process that has freed one 32 MB block is in anyway; glibc has no getter, so the
  values before the block cannot be read back.
* :func:`return_free_memory`: ``malloc_trim(0)``, to hand the kept memory back to the system.

All are no-ops off Linux/glibc (musl, macOS, Windows).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
#: glibc's ceiling for its adaptive mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX):
#: blocks above it are always mmapped; the activations of a default extraction batch are below.
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
#: Heap top kept free before trimming, while the settings apply (no automatic trimming).
_KEEP_TRIM_THRESHOLD = 2**31 - 1
#: Extra heap grown at each ``sbrk`` while the settings apply (fewer, larger heap extensions).
_KEEP_TOP_PAD = 64 * 1024 * 1024
#: What :func:`freed_memory_kept` leaves behind: glibc's adaptive ceiling and its default pad.
_CEILING = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_MAX),
            (_M_TOP_PAD, 128 * 1024))
_KEEP = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (_M_TRIM_THRESHOLD, _KEEP_TRIM_THRESHOLD),
         (_M_TOP_PAD, _KEEP_TOP_PAD))

_lock = threading.Lock()
_permanent = False  # keep_freed_memory() was called: never undone
_depth = 0  # freed_memory_kept() blocks currently open
_libc_functions: dict[str, Any] | None = None


def _libc(name: str) -> Callable[..., int] | None:
    """glibc's ``mallopt`` or ``malloc_trim`` (argument and result types set), or None."""
    global _libc_functions
    if _libc_functions is None:
        _libc_functions = {}
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt, trim = libc.mallopt, libc.malloc_trim
            except (OSError, AttributeError):  # musl or an unusual libc: nothing to tune
                pass
            else:
                mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
                _libc_functions = {"mallopt": mallopt, "malloc_trim": trim}
    return _libc_functions.get(name)


def _apply(settings: tuple[tuple[int, int], ...]) -> bool:
    mallopt = _libc("mallopt")
    if mallopt is None:
        return False
    results = [mallopt(param, value) for param, value in settings]  # every one, even after a refusal
    return all(results)


def keep_freed_memory() -> bool:
    """Keep freed blocks up to 32 MB in the heap and stop trimming it, for the whole process,
    for good. Idempotent; returns whether the settings are in force (False off glibc).

    Peak resident memory is unchanged in practice (the same blocks are reused by every step);
    the memory goes back to the system when the process ends or at :func:`return_free_memory`.
    """
    global _permanent
    with _lock:
        if not _permanent:
            _permanent = _apply(_KEEP)
        return _permanent


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """The settings of :func:`keep_freed_memory` inside the ``with`` block only; yields whether
    they are in force. Nests (only the outermost exit resets) and never undoes
    :func:`keep_freed_memory`. On exit the freed memory is returned (:func:`return_free_memory`)."""
    global _depth
    with _lock:
        active = _permanent or _depth > 0 or _apply(_KEEP)
        _depth += 1
    try:
        yield active
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and not _permanent:
                _apply(_CEILING)
        return_free_memory()


def return_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere).

    :func:`freed_memory_kept` calls it on exit, so a library call leaves no kept heap behind.
    Not between an extraction's chunks: each call made the next batch fault its ~90 MB in again
    (~1,450 faults per batch on average at the default chunk and batch sizes, against ~350
    without), while the peak resident memory stayed the same without it (731 MiB at 2,500
    images, 734 MiB at 10,000; ``benchmarks/extract_speed.py``, 2026-12-08).
    """
    trim = _libc("malloc_trim")
    if trim is not None:
        trim(0)
