"""The on-disk format of extracted features (written by ``metaug-extract``, read by the
evaluators), in one place so writer and reader cannot drift apart.

A feature folder holds::

    features.npy | features.safetensors   float32 [N, D]; safetensors key "features"
    | features.parquet                    or one table: path, label, feature (fixed_size_list<float32>[D]);
                                          see :mod:`metaug_features.parquet_features` (needs pyarrow)
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
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .atomic import atomic_write, atomic_write_text
from .errors import FeatureFileError

FORMAT_VERSION = 1
FEATURES_NPY = "features.npy"
FEATURES_SAFETENSORS = "features.safetensors"
FEATURES_PARQUET = "features.parquet"
#: --format -> the features file it writes (a folder holds exactly one of them).
FEATURE_FILES = {"npy": FEATURES_NPY, "safetensors": FEATURES_SAFETENSORS, "parquet": FEATURES_PARQUET}
MANIFEST = "manifest.csv"
SKIPPED = "skipped.csv"
METADATA = "extract.json"
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


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _read_csv(path: Path, header: Sequence[str]) -> list[list[str]]:
    with open(path, newline="", **_CSV_ENCODING) as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != list(header):
        raise FeatureFileError(f"{path}: expected header {','.join(header)}")
    return rows[1:]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (used to tie an evaluation report to its features)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_feature_set(out_dir: str | os.PathLike, fs: FeatureSet, fmt: str = "npy") -> Path:
    """Write ``fs`` into ``out_dir`` (created if needed); every file is written atomically,
    the metadata last, so a folder with extract.json is complete. Returns the features path."""
    if fmt not in FEATURE_FILES:
        raise FeatureFileError(f"unknown feature format {fmt!r}; use one of {', '.join(FEATURE_FILES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    feats = np.ascontiguousarray(fs.features, dtype=np.float32)
    feat_path = out / FEATURE_FILES[fmt]
    if fmt == "npy":
        with atomic_write(feat_path, "wb") as f:
            np.save(f, feats, allow_pickle=False)
    elif fmt == "safetensors":
        from safetensors.numpy import save

        with atomic_write(feat_path, "wb") as f:
            f.write(save({"features": feats}))
    else:
        from .parquet_features import write_parquet_features

        with atomic_write(feat_path, "wb") as f:
            write_parquet_features(f, [feats], fs.paths, fs.labels, int(feats.shape[1]))
    remove_stale_features(out, fmt)
    atomic_write_text(
        out / MANIFEST,
        _csv_text(["row", "path", "label"], [(i, p, l) for i, (p, l) in enumerate(zip(fs.paths, fs.labels))]),
        errors="surrogateescape",
    )
    atomic_write_text(out / SKIPPED, _csv_text(["path", "reason"], fs.skipped), errors="surrogateescape")
    meta = dict(fs.meta)
    meta.update(
        format_version=FORMAT_VERSION,
        num_rows=int(feats.shape[0]),
        dim=int(feats.shape[1]),
        num_skipped=len(fs.skipped),
        features_file=feat_path.name,
        features_sha256=sha256_file(feat_path),
    )
    fs.meta = meta
    atomic_write_text(out / METADATA, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return feat_path


def remove_stale_features(out: Path, fmt: str) -> None:
    """Remove the features files of the other formats (left by an earlier run into ``out``),
    so that the folder holds exactly one."""
    for other, name in FEATURE_FILES.items():
        if other != fmt and (out / name).exists():
            (out / name).unlink()


def features_path(folder: str | os.PathLike) -> Path:
    """The features file inside a feature folder (npy, safetensors or parquet)."""
    folder = Path(folder)
    for name in FEATURE_FILES.values():
        if (folder / name).is_file():
            return folder / name
    raise FeatureFileError(
        f"{folder}: no {', '.join(FEATURE_FILES.values())}; is this a metaug-extract output folder?"
    )


def read_feature_set(path: str | os.PathLike) -> FeatureSet:
    """Read a feature folder written by :func:`write_feature_set` (or ``metaug-extract``).

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
    feat_path = features_path(folder)
    if feat_path.suffix == ".npy":
        feats = np.load(feat_path, allow_pickle=False)
    elif feat_path.name == FEATURES_PARQUET:
        from .parquet_features import read_parquet_features

        feats = read_parquet_features(feat_path)
    else:
        from safetensors.numpy import load_file

        tensors = load_file(str(feat_path))
        if "features" not in tensors:
            raise FeatureFileError(f"{feat_path}: no tensor named 'features'")
        feats = tensors["features"]
    rows = _read_csv(folder / MANIFEST, ["row", "path", "label"])
    for i, r in enumerate(rows):
        if len(r) != 3 or r[0] != str(i):
            raise FeatureFileError(f"{folder / MANIFEST}: line {i + 2} is malformed or out of order")
    skipped_rows = _read_csv(folder / SKIPPED, ["path", "reason"]) if (folder / SKIPPED).is_file() else []
    with open(folder / METADATA, encoding="utf-8") as f:
        meta = json.load(f)
    if rows and len(rows) != feats.shape[0]:
        raise FeatureFileError(f"{folder}: {feats.shape[0]} feature rows but {len(rows)} manifest rows")
    return FeatureSet(
        features=np.asarray(feats, dtype=np.float32),
        paths=[r[1] for r in rows],
        labels=[r[2] for r in rows],
        skipped=[(r[0], r[1]) for r in skipped_rows],
        meta=meta,
    )
