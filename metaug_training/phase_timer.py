"""Where a training step's time goes: wall-clock seconds per named phase.

The step code brackets its phases with ``with timer("forward"):``; the default timer
(:data:`NO_TIMER`) does nothing, so production steps pay one no-op context manager per phase.
``benchmarks/train_speed.py`` passes a :class:`PhaseTimer` instead. On the CPU every op runs
synchronously, so a phase's wall time is its compute time; on CUDA the timer synchronises the
device at each boundary (which slows the step: use it for the breakdown only).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch


class PhaseTimer:
    """Accumulates wall-clock seconds per phase name. Nested phases are allowed; a nested
    phase's time is also part of its parent's (report them as "of which")."""

    def __init__(self, sync_cuda: bool = False) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.sync_cuda = sync_cuda and torch.cuda.is_available()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.sync_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync_cuda:
                torch.cuda.synchronize()
            self.totals[name] += time.perf_counter() - t0
            self.counts[name] += 1

    def reset(self) -> None:
        self.totals.clear()
        self.counts.clear()


class _NoTimer:
    """The timer of a normal run: every phase is a no-op."""

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        yield


NO_TIMER = _NoTimer()
