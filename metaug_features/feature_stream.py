"""Write a feature folder from pieces, never holding all N x D features in memory; read its
features back the same way.

An extraction of a large folder (or a merge of shards) has its features only as a sequence of
chunk files; :func:`write_feature_folder` streams those pieces through the features file's
writer (a row of :data:`~metaug_features.feature_formats.FEATURE_FORMATS`) into the folder, so
peak memory does not grow with the number of images.
:func:`~metaug_features.feature_files.write_feature_set` (one ``[N, D]`` array) is this same
writer given one block.

Writes are atomic per file (temporary file + rename) and ``extract.json`` is written last: a
folder that has ``extract.json`` is complete, as ``read_feature_set`` assumes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from .atomic import atomic_write, atomic_write_text
from .errors import FeatureFileError
from .feature_formats import (
    FORMAT_VERSION,
    MANIFEST,
    METADATA,
    SKIPPED,
    feature_format,
    features_file_names,
    features_path,
    format_of_file,
)

_CSV_ENCODING = dict(encoding="utf-8", errors="surrogateescape", newline="")


class _HashingWriter:
    """A binary file that hashes what is written through it (the features file's sha256 for
    extract.json, without reading the file back)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:  # tell, flush, closed, ... of the real file
        return getattr(self._f, name)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (used to tie an evaluation report to its features)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def remove_stale_features(out: Path, fmt: str) -> None:
    """Remove the features files of the other formats (left by an earlier run into ``out``),
    so that the folder holds exactly one."""
    keep = feature_format(fmt).file
    for name in features_file_names():
        if name != keep and (out / name).exists():
            (out / name).unlink()


def _checked(blocks: Iterable[np.ndarray], dim: int, count: list[int]) -> Iterator[np.ndarray]:
    """``blocks`` as C-ordered little-endian float32 ``[n, dim]``; counts their rows in ``count[0]``."""
    for block in blocks:
        block = np.ascontiguousarray(block, dtype="<f4")
        if block.ndim != 2 or (block.shape[0] and block.shape[1] != dim):
            raise FeatureFileError(f"feature block of shape {block.shape} does not match dim {dim}")
        count[0] += block.shape[0]
        yield block


def write_feature_folder(
    out_dir: str | os.PathLike,
    feature_blocks: Callable[[], Iterable[np.ndarray]],
    num_rows: int,
    dim: int,
    paths: Sequence[str],
    labels: Sequence[str],
    skipped: Sequence[tuple[str, str]],
    meta: dict[str, Any],
    fmt: str = "npy",
) -> dict[str, Any]:
    """Stream a feature folder (the format of :mod:`metaug_features.feature_files`).

    Args:
        out_dir: the feature folder (created if needed).
        feature_blocks: called once; yields float32 blocks ``[n_k, D]`` whose rows, in order,
            are the N feature rows (``sum n_k == num_rows``).
        num_rows, dim: N and D.
        paths, labels: N relative paths and labels (manifest rows, in row order).
        skipped: ``(path, reason)`` of the files that produced no row.
        meta: extract.json content; the format keys (counts, features file, its sha256) are added.
        fmt: a key of ``FEATURE_FORMATS``; its writer gives the same bytes however the rows are
            cut into blocks.

    Returns:
        The metadata written to extract.json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(paths) != num_rows or len(labels) != num_rows:
        raise FeatureFileError(f"{num_rows} feature rows but {len(paths)} paths and {len(labels)} labels")
    row = feature_format(fmt)
    feat_path = out / row.file

    written = [0]
    with atomic_write(feat_path, "wb") as f:
        hashing = _HashingWriter(f)
        row.write(hashing, _checked(feature_blocks(), dim, written), paths, labels, dim)
        if written[0] != num_rows:  # raising inside atomic_write leaves no file behind
            raise FeatureFileError(f"expected {num_rows} feature rows, got {written[0]}")
    remove_stale_features(out, fmt)

    with atomic_write(out / MANIFEST, "w", **_CSV_ENCODING) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["row", "path", "label"])
        for i, (p, lb) in enumerate(zip(paths, labels)):
            w.writerow((i, p, lb))
    with atomic_write(out / SKIPPED, "w", **_CSV_ENCODING) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "reason"])
        w.writerows(skipped)

    meta = dict(meta)
    meta.update(
        format_version=FORMAT_VERSION,
        num_rows=int(num_rows),
        dim=int(dim),
        num_skipped=len(skipped),
        features_file=feat_path.name,
        features_sha256=hashing.sha256.hexdigest(),
    )
    atomic_write_text(out / METADATA, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def iter_feature_rows(folder: str | os.PathLike, rows_per_block: int = 4096) -> Iterator[np.ndarray]:
    """Read the features of a finished feature folder in blocks of ``[<= rows_per_block, D]``
    (with the reader of the format the folder holds)."""
    path = features_path(folder)
    fmt = format_of_file(path.name)
    yield from feature_format(fmt).read(path, rows_per_block)


__all__ = ["write_feature_folder", "iter_feature_rows", "remove_stale_features", "sha256_file"]
