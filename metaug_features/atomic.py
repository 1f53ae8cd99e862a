"""Atomic file writes: write to a temporary file in the same folder, fsync, then rename.

A reader (or a restarted job) therefore sees either the old file or the complete new one,
never a half-written file, even if the process is killed mid-write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", fsync: bool = True, **open_kwargs) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on a clean exit rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    ``fsync=False`` skips flushing the data to disk before the rename: only for files that are
    validated when read (a cache), where a power cut may leave a damaged file that is rebuilt.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, errors: str = "strict") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w", encoding="utf-8", errors=errors, newline="") as f:
        f.write(text)
