"""Decoding in worker processes, with a time limit per file and crash isolation.

Extraction decodes files in worker processes, but not with torch's ``DataLoader``, which
cannot bound a single file: its ``timeout`` ends the whole run, and so does a worker that dies
(a decoder segfault, the kernel's OOM killer). Here:

* each worker publishes which file it is decoding and since when (a small shared array);
* a file that runs past ``time_limit`` seconds gets its worker killed (SIGKILL: a decoder stuck
  inside C code cannot be interrupted any other way); the file is skipped with the reason
  ``"decode time limit exceeded (N s)"``, a fresh worker starts and the rest of the batch is
  decoded again;
* a worker that dies while decoding a file gets that file skipped with ``"decoder crashed
  (...)"``, and the run goes on the same way;
* a worker exits by itself when its parent dies (a watchdog thread polls the parent's pid),
  so a SIGKILLed extraction leaves no orphan decoding forever.

Batches come back in the order they were given, whatever order the workers finish in, so the
result does not depend on the number of workers or on which files had to be retried.

``workers=0`` decodes in the calling process: no process boundary, hence no time limit (a
Python thread cannot interrupt C code). The default is at least one worker.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Callable, Iterator, Sequence

import torch

from .errors import MetAugError

#: Default per-file decode time limit in seconds. The largest file this toolkit accepts
#: (DEFAULT_MAX_PIXELS, 9459 x 9459 of noise as JPEG q90 or PNG) took 1.2-1.9 s to load on one
#: core of the 2-core CI machine (2026-12-04), so 60 s only stops files that are broken.
DEFAULT_DECODE_TIME_LIMIT_S = 60.0
#: How often (seconds) a worker checks that its parent is alive.
_PARENT_POLL_S = 0.5
#: Batches decoded ahead of the consumer, per worker (bounds memory like DataLoader's prefetch).
_PREFETCH_PER_WORKER = 2
#: A batch whose worker dies this many times without a file to blame ends the run.
_MAX_UNATTRIBUTED_DEATHS = 3

#: One decoded item: (file index, uint8 [3, S, S] or None, skip reason or None).
Item = tuple[int, "torch.Tensor | None", "str | None"]
DecodeItem = Callable[[int], Item]


def time_limit_reason(limit: float) -> str:
    """The skip reason of a file whose decoding ran past ``limit`` seconds."""
    return f"decode time limit exceeded ({limit:g} s)"


def crash_reason(exitcode: int | None) -> str:
    """The skip reason of a file whose decoding process died with ``exitcode``."""
    if exitcode is not None and exitcode < 0:
        try:
            how = signal.Signals(-exitcode).name
        except ValueError:
            how = f"signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    return f"decoder crashed ({how})"


# ---------------------------------------------------------------------- worker side
def _watch_parent(parent_pid: int) -> None:
    """Daemon thread of a worker: end the process as soon as its parent is gone."""
    while True:
        time.sleep(_PARENT_POLL_S)
        if os.getppid() != parent_pid:
            os._exit(0)


def _worker_main(conn, slot, decode_item: DecodeItem, parent_pid: int) -> None:
    """Loop of one decoding process: receive ``(batch id, indices, known skips)``, decode each
    file (publishing ``slot = [index, start time]`` while it runs), send the batch back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's "SIGTERM = Ctrl-C" handler, if forked under it
    torch.set_num_threads(1)  # decoding is one file at a time; no thread pool per worker
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        batch_id, indices, known = task
        out = []
        for i in indices:
            if i in known:
                out.append((i, None, known[i]))
                continue
            with slot.get_lock():
                slot[1] = time.monotonic()
                slot[0] = i
            j, image, reason = decode_item(i)
            with slot.get_lock():
                slot[0] = -1
            # numpy, not torch: a pickled tensor would travel as a shared-memory file descriptor
            out.append((j, None if image is None else image.numpy(), reason))
        conn.send((batch_id, out))


# ---------------------------------------------------------------------- parent side
@dataclass(eq=False)  # identity: workers are looked up in a list
class _Worker:
    process: Any
    conn: Any
    slot: Any
    batch: int | None = None  # id of the batch it is decoding, None when idle


@dataclass
class _Batches:
    """The parent's bookkeeping: what is queued, what is done, what is known to be bad."""

    indices: Sequence[Sequence[int]]
    queue: deque = field(default_factory=deque)
    done: dict[int, list] = field(default_factory=dict)
    known: dict[int, str] = field(default_factory=dict)  # file index -> skip reason (time/crash)
    deaths: dict[int, int] = field(default_factory=dict)  # batch id -> unattributed deaths


def _context():
    # fork keeps start-up cheap and lets the decoder be any callable; spawn where there is none.
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


class DecodePool:
    """Worker processes decoding batches of file indices with ``decode_item``.

    Args:
        decode_item: ``index -> (index, uint8 [3, S, S] or None, reason or None)``; never raises
            for a bad file (see ``file_decode.FileDataset``).
        workers: number of processes (>= 1).
        time_limit: seconds one file may take; None = no limit.
    """

    def __init__(self, decode_item: DecodeItem, workers: int, time_limit: float | None) -> None:
        if workers < 1:
            raise ValueError("DecodePool needs at least one worker")
        if time_limit is not None and not time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds or None, got {time_limit}")
        self.decode_item = decode_item
        self.time_limit = time_limit
        self.ctx = _context()
        self.workers = [self._start() for _ in range(workers)]
        #: (file index, reason) of every file skipped for time or a crash, in the order seen.
        self.incidents: list[tuple[int, str]] = []

    # ------------------------------------------------------------------ processes
    def _start(self) -> _Worker:
        parent_conn, child_conn = self.ctx.Pipe()
        slot = self.ctx.Array("d", [-1.0, 0.0])
        p = self.ctx.Process(target=_worker_main, args=(child_conn, slot, self.decode_item, os.getpid()),
                             daemon=True, name="metaug-decode")
        p.start()
        child_conn.close()
        return _Worker(p, parent_conn, slot)

    def _replace(self, w: _Worker) -> _Worker:
        if w.process.is_alive():
            w.process.kill()
        w.process.join()
        w.conn.close()
        fresh = self._start()
        self.workers[self.workers.index(w)] = fresh
        return fresh

    def close(self) -> None:
        """Stop every worker (politely, then SIGKILL after a second)."""
        for w in self.workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 1.0
        for w in self.workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()

    def __enter__(self) -> "DecodePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ the loop
    def run(self, batches: Sequence[Sequence[int]]) -> Iterator[list[Item]]:
        """Yield the decoded items of each batch, in the order of ``batches``."""
        st = _Batches(batches, queue=deque(range(len(batches))))
        ahead = _PREFETCH_PER_WORKER * len(self.workers)
        next_out = 0
        while next_out < len(batches):
            if next_out in st.done:
                items = st.done.pop(next_out)
                next_out += 1
                yield [(i, None if a is None else torch.from_numpy(a), r) for i, a, r in items]
                continue
            for w in self.workers:  # hand out work, at most `ahead` batches past the consumer
                if w.batch is None and st.queue and st.queue[0] < next_out + ahead:
                    self._assign(w, st.queue.popleft(), st)
            self._collect(st)

    def _assign(self, w: _Worker, b: int, st: _Batches) -> None:
        known = {i: st.known[i] for i in st.indices[b] if i in st.known}
        try:
            w.conn.send((b, list(st.indices[b]), known))
            w.batch = b
        except (OSError, ValueError):  # it died while idle: start another, send again
            self._assign(self._replace(w), b, st)

    def _collect(self, st: _Batches) -> None:
        """Wait for a result, a dead worker or a file past its time limit; handle what came."""
        busy = [w for w in self.workers if w.batch is not None]
        if not busy:
            return
        ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=self._wait_s(busy)))
        now = time.monotonic()
        for w in busy:
            if w.conn in ready:
                try:
                    b, items = w.conn.recv()
                except (EOFError, OSError):
                    self._crashed(w, st)
                    continue
                st.done[b] = items
                w.batch = None
            elif w.process.sentinel in ready:
                self._crashed(w, st)
            elif self.time_limit is not None:
                index, since = self._current(w)
                if index >= 0 and now - since > self.time_limit:
                    self._overran(w, st, index)

    def _wait_s(self, busy: list[_Worker]) -> float:
        """Seconds to wait for results: until the earliest running file reaches its time limit,
        and at most a tenth of the limit (a file that starts during the wait is only seen at
        its end, so this bounds how far past the limit a file can run), at most 1 s."""
        if self.time_limit is None:
            return 1.0
        now = time.monotonic()
        left = [self.time_limit - (now - since) for index, since in map(self._current, busy) if index >= 0]
        poll = min(1.0, max(0.01, self.time_limit / 10))
        return min([poll] + [max(0.0, t) + 0.005 for t in left])

    @staticmethod
    def _current(w: _Worker) -> tuple[int, float]:
        with w.slot.get_lock():
            return int(w.slot[0]), float(w.slot[1])

    @staticmethod
    def _exitcode(w: _Worker) -> int | None:
        w.process.join(1.0)
        return w.process.exitcode

    def _crashed(self, w: _Worker, st: _Batches) -> None:
        """``w`` died: skip the file it was decoding, or, dying between files, just retry."""
        reason = crash_reason(self._exitcode(w))
        index, _ = self._current(w)  # stable: the process is gone
        if index < 0:
            b = w.batch
            st.deaths[b] = st.deaths.get(b, 0) + 1
            if st.deaths[b] >= _MAX_UNATTRIBUTED_DEATHS:
                raise MetAugError(f"a decoding worker died {st.deaths[b]} times between files ({reason}); "
                                  "finished chunks are kept, run the same command again to resume")
        self._requeue(w, st, index, reason)

    def _overran(self, w: _Worker, st: _Batches, index: int) -> None:
        """File ``index`` of ``w`` ran past the time limit: kill ``w``, skip that file."""
        w.process.kill()
        w.process.join()
        still, _ = self._current(w)
        # The file may have finished in the instant before the kill; then nothing is to blame
        # and the batch is simply decoded again.
        self._requeue(w, st, index if still == index else -1, time_limit_reason(self.time_limit))

    def _requeue(self, w: _Worker, st: _Batches, index: int, reason: str) -> None:
        """Record ``index`` (if >= 0) as skipped for ``reason``; decode ``w``'s batch again in a
        fresh worker (first in line, so the consumer waits as little as possible)."""
        if index >= 0:
            st.known[index] = reason
            self.incidents.append((index, reason))
        st.queue.appendleft(w.batch)
        w.batch = None
        self._replace(w)


def default_workers() -> int:
    """Decoding worker processes by default: min(4, CPU cores)."""
    return min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class Decoding:
    """How files are decoded: ``workers`` processes (0 = in the calling process) and the
    per-file ``time_limit`` in seconds (None = none; only enforced with workers >= 1)."""

    workers: int
    time_limit: float | None = DEFAULT_DECODE_TIME_LIMIT_S


def decode_batches(decode_item: DecodeItem, batches: Sequence[Sequence[int]], how: Decoding) -> Iterator[list[Item]]:
    """The decoded items of each batch, in the order of ``batches``."""
    if how.workers == 0:
        for batch in batches:
            yield [decode_item(i) for i in batch]
        return
    with DecodePool(decode_item, how.workers, how.time_limit) as pool:
        yield from pool.run(batches)
