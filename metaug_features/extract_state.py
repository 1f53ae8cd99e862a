"""Resume state of an extraction: ``OUT/.partial/`` holds one file per finished chunk.

The sorted file list is cut into fixed chunks of ``chunk_size`` files. Each chunk is computed
with batches that never cross its boundaries, so its result does not depend on which other
chunks were computed in the same process; a chunk file is written atomically once the whole
chunk is done. A run killed at any moment therefore leaves only complete chunk files, and a
restart recomputes exactly the missing chunks, giving bit-identical output.

Layout::

    OUT/.partial/state.json          {"key": {...}, "key_sha256": "..."}: what the chunks are of
    OUT/.partial/chunk-000012.npz    features float32 [n, D] + info (JSON bytes: chunk index,
                                     file-index range, row file indices, skipped, key_sha256)

The *key* is every argument that affects the numbers (extraction version of the library, model
fingerprint, layer, batch size, chunk size, device type, file-list hash, shard, root folder). A
restart whose key differs refuses to mix chunks (see ``claim_output`` in
:mod:`metaug_features.output_folder`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .atomic import atomic_write, atomic_write_text
from .errors import MetAugError

PARTIAL_DIR = ".partial"
STATE_FILE = "state.json"
STATE_VERSION = 1


def key_sha256(key: dict[str, Any]) -> str:
    """Stable hash of a run key (canonical JSON)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def model_fingerprint(model: torch.nn.Module, config: dict[str, Any]) -> str:
    """SHA-256 of a model's config and every tensor of its state dict (names, dtypes, shapes,
    bytes), so resume and merge can tell two models apart even when both came from objects
    rather than folders. Cost: one pass over the weights (~0.2 s per 100 MB)."""
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True, default=str).encode("utf-8"))
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(name.encode("utf-8"))
        h.update(str(t.dtype).encode("utf-8"))
        h.update(str(tuple(t.shape)).encode("utf-8"))
        # Reinterpret as bytes (works for every dtype, including bfloat16 that numpy lacks).
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class ChunkResult:
    """The result of one chunk.

    Attributes:
        index: chunk index k (files ``[start, stop)`` of the sorted list).
        start, stop: file-index range.
        features: float32 [n, D], one row per readable file, in file order.
        rows: n global file indices (into the sorted list) of those rows.
        skipped: (global file index, reason) for the files of the chunk that gave no row.
    """

    index: int
    start: int
    stop: int
    features: np.ndarray
    rows: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)


class PartialStore:
    """The ``.partial`` folder of one output folder."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.dir = self.out_dir / PARTIAL_DIR

    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    def exists(self) -> bool:
        return self.state_path.is_file()

    def read_key_sha(self) -> str | None:
        """The key hash recorded in state.json, or None if there is no (readable) state."""
        try:
            with open(self.state_path, encoding="utf-8") as f:
                return json.load(f)["key_sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def read_key(self) -> dict[str, Any] | None:
        """The key recorded in state.json, or None if there is no (readable) state."""
        try:
            with open(self.state_path, encoding="utf-8") as f:
                key = json.load(f)["key"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return key if isinstance(key, dict) else None

    def write_state(self, key: dict[str, Any]) -> str:
        h = key_sha256(key)
        atomic_write_text(
            self.state_path,
            json.dumps({"state_version": STATE_VERSION, "key": key, "key_sha256": h}, indent=2, sort_keys=True) + "\n",
        )
        return h

    def chunk_path(self, index: int) -> Path:
        return self.dir / f"chunk-{index:06d}.npz"

    def write_chunk(self, result: ChunkResult, key_hash: str) -> None:
        """Write one finished chunk atomically (temp file + fsync + rename)."""
        info = {
            "chunk": result.index,
            "start": result.start,
            "stop": result.stop,
            "rows": result.rows,
            "skipped": [[i, r] for i, r in result.skipped],
            "key_sha256": key_hash,
        }
        # ensure_ascii keeps reasons with surrogate-escaped file names representable.
        info_bytes = np.frombuffer(json.dumps(info, ensure_ascii=True).encode("ascii"), dtype=np.uint8)
        feats = np.ascontiguousarray(result.features, dtype=np.float32)
        # No fsync: a chunk is a cache, checked when read (zip structure, CRC, key, shape); one
        # damaged by a power cut is recomputed. The fsync cost ~15 ms per chunk.
        with atomic_write(self.chunk_path(result.index), "wb", fsync=False) as f:
            np.savez(f, features=feats, info=info_bytes)

    def load_chunk(self, index: int, start: int, stop: int, key_hash: str,
                   features: bool = True) -> ChunkResult | None:
        """The finished chunk ``index``, or None if it is absent, unreadable or of another run
        (then it is simply recomputed; the result is the same).

        ``features=False`` reads the row and skip lists and only the header of the features
        (their ``.features`` is then an empty ``[0, D]`` array): the assembly's first pass needs
        no more, and reading each chunk's features twice cost ~4% of an extraction's time.
        """
        path = self.chunk_path(index)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                info = json.loads(bytes(z["info"]).decode("ascii"))
                if features:
                    feats = np.asarray(z["features"], dtype=np.float32)  # already a fresh array
                    shape = feats.shape
                else:
                    with z.zip.open("features.npy") as f:
                        major, _ = np.lib.format.read_magic(f)
                        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                        shape = read(f)[0]
                    feats = np.empty((0, shape[-1] if shape else 0), np.float32)
        except Exception:  # noqa: BLE001 - a damaged chunk is recomputed, never trusted
            return None
        if (
            info.get("key_sha256") != key_hash
            or (info.get("chunk"), info.get("start"), info.get("stop")) != (index, start, stop)
            or len(shape) != 2
            or shape[0] != len(info["rows"])
        ):
            return None
        return ChunkResult(
            index=index, start=start, stop=stop, features=feats,
            rows=[int(i) for i in info["rows"]],
            skipped=[(int(i), str(r)) for i, r in info["skipped"]],
        )

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.dir)


def check_output_writable(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and prove a file can be written and renamed in it.

    Raises:
        MetAugError: naming the folder and the OS reason (before any expensive work).
    """
    out = Path(out_dir)
    try:
        if out.exists() and not out.is_dir():
            raise MetAugError(f"output path {str(out)!r} exists and is not a folder; choose another --output")
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / ".write-test", "wb") as f:
            f.write(b"ok")
        os.unlink(out / ".write-test")
    except MetAugError:
        raise
    except OSError as e:
        raise MetAugError(
            f"output folder {str(out)!r} is not writable ({e.strerror or e}); choose another --output"
        ) from None
    return out


class OutputLockedError(MetAugError):
    """Another extraction is writing into the same output folder."""


@contextlib.contextmanager
def output_lock(out_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the (existing) output folder while an extraction writes it.

    A second extraction into the same folder, from this or any other process, fails at once
    with :class:`OutputLockedError` instead of interleaving its writes with the first one's.
    The lock is ``flock`` on the folder itself: nothing is written for it, and the kernel
    releases it when the process ends, however it ends (a killed run leaves no stale lock).
    Where ``fcntl`` does not exist (Windows) no lock is taken.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputLockedError(
                f"output folder {os.fspath(out_dir)!r} is being written by another extraction right now; "
                "wait for it to finish (running the same command again then resumes or returns its result), "
                "or choose another --output"
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


__all__ = [
    "PARTIAL_DIR", "PartialStore", "ChunkResult", "key_sha256", "model_fingerprint", "check_output_writable",
    "OutputLockedError", "output_lock",
]
