"""Stop a training loop cleanly on SIGTERM or SIGINT.

``kill PID``, Ctrl-C, a batch scheduler's or torchrun's SIGTERM: the first signal asks the loop to
stop at the next step boundary, where it checkpoints and exports as at a deadline, so nothing
since the last periodic checkpoint is lost. A second signal restores the previous handlers and
re-raises it (Ctrl-C twice aborts at once).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal:
    """``install()``/``restore()`` (or use as a context manager); ``requested`` turns True at the first SIGTERM/SIGINT. Handlers can only
    be installed from the main thread; elsewhere it is a no-op (``requested`` stays False)."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)

    def __enter__(self) -> "StopOnSignal":
        self.install()
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            self.restore()
            signal.raise_signal(signum)
            return
        self.requested = True
        self.signum = signum

    def restore(self) -> None:
        """Put the previous handlers back (idempotent)."""
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self.restore()
