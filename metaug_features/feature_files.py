"""The on-disk format of extracted features (written by ``metaug-extract``, read by the
evaluators): :class:`FeatureSet` in memory, written and read as one folder.

A feature folder holds::

    features.<format>                     the features file of one row of FEATURE_FORMATS
                                          (metaug_features.feature_formats): features.npy |
                                          features.safetensors (float32 [N, D]; safetensors key
                                          "features") | features.parquet (one table: path, label,
                                          feature; see metaug_features.parquet_features)
    manifest.csv                          row,path,label  (one line per feature row)
    skipped.csv                           path,reason     (files that produced no row)
    extract.json                          metadata: model, layer, dim, counts, shard, hashes

``path`` is the file's path relative to the extraction root, with ``/`` separators, sorted.
``label`` is the name of the file's parent folder ("" for a file directly in the root).
CSV files are UTF-8; a file name that is not valid UTF-8 is kept byte-exact through Python's
``surrogateescape`` (read them back with ``errors="surrogateescape"``, as this module does).
The parquet table cannot hold such bytes (its strings are UTF-8) and writes them as ``\\xNN``;
manifest.csv stays the byte-exact record, and the reader here takes paths from it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FeatureFileError

# Re-exported: the folder's file names and the sha256 of a features file are public API here.
from .feature_formats import FORMAT_VERSION, MANIFEST, METADATA, SKIPPED, features_path
from .feature_stream import iter_feature_rows, sha256_file, write_feature_folder

_CSV_ENCODING = dict(encoding="utf-8", errors="surrogateescape")


@dataclass
class FeatureSet:
    """Features of N images with their provenance.

    Attributes:
        features: float32 array [N, D].
        paths: N relative paths (row order).
        labels: N labels (parent folder names; "" when unlabelled).
        skipped: (path, reason) for every file that produced no row.
        meta: the content of extract.json.
    """

    features: np.ndarray
    paths: list[str]
    labels: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.features.ndim != 2:
            raise FeatureFileError(f"features must be 2-D [N, D], got shape {tuple(self.features.shape)}")
        n = self.features.shape[0]
        if len(self.paths) != n or len(self.labels) != n:
            raise FeatureFileError(
                f"{n} feature rows but {len(self.paths)} paths and {len(self.labels)} labels"
            )


def _read_csv(path: Path, header: Sequence[str]) -> list[list[str]]:
    with open(path, newline="", **_CSV_ENCODING) as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != list(header):
        raise FeatureFileError(f"{path}: expected header {','.join(header)}")
    return rows[1:]


def write_feature_set(out_dir: str | os.PathLike, fs: FeatureSet, fmt: str = "npy") -> Path:
    """Write ``fs`` into ``out_dir`` (created if needed) as ``--format fmt``: the streamed writer
    given one block, so the bytes are those of an extraction of the same rows. Every file is
    written atomically, the metadata last. Updates ``fs.meta``; returns the features path."""
    feats = np.ascontiguousarray(fs.features, dtype=np.float32)
    fs.meta = write_feature_folder(out_dir, lambda: [feats], num_rows=int(feats.shape[0]), dim=int(feats.shape[1]),
                                   paths=fs.paths, labels=fs.labels, skipped=fs.skipped, meta=fs.meta, fmt=fmt)
    return Path(out_dir) / fs.meta["features_file"]


def read_feature_set(path: str | os.PathLike) -> FeatureSet:
    """Read a feature folder written by :func:`write_feature_set` (or ``metaug-extract``), of any
    format in ``FEATURE_FORMATS``.

    ``path`` may be the folder or the features file inside it.
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not folder.is_dir():
        raise FeatureFileError(f"{path}: no such feature folder")
    if not (folder / METADATA).is_file():
        raise FeatureFileError(
            f"{folder}: no {METADATA}; the extraction did not finish (run the same metaug-extract command again to resume)"
        )
    with open(folder / METADATA, encoding="utf-8") as f:
        meta = json.load(f)
    # One block of all rows (no second copy); a file of 0 rows may yield none: extract.json has D.
    blocks = list(iter_feature_rows(folder, rows_per_block=max(1, int(meta.get("num_rows") or 1))))
    if len(blocks) == 1:
        feats = blocks[0]
    else:
        feats = np.concatenate(blocks) if blocks else np.empty((0, int(meta.get("dim", 0))), np.float32)
    rows = _read_csv(folder / MANIFEST, ["row", "path", "label"])
    for i, r in enumerate(rows):
        if len(r) != 3 or r[0] != str(i):
            raise FeatureFileError(f"{folder / MANIFEST}: line {i + 2} is malformed or out of order")
    skipped_rows = _read_csv(folder / SKIPPED, ["path", "reason"]) if (folder / SKIPPED).is_file() else []
    if rows and len(rows) != feats.shape[0]:
        raise FeatureFileError(f"{folder}: {feats.shape[0]} feature rows but {len(rows)} manifest rows")
    return FeatureSet(
        features=np.asarray(feats, dtype=np.float32),
        paths=[r[1] for r in rows],
        labels=[r[2] for r in rows],
        skipped=[(r[0], r[1]) for r in skipped_rows],
        meta=meta,
    )


__all__ = [
    "FeatureSet", "write_feature_set", "read_feature_set", "features_path", "sha256_file", "FORMAT_VERSION",
    "MANIFEST", "METADATA", "SKIPPED",
]
