"""Write a feature folder from pieces, never holding all N x D features in memory.

:func:`metaug_features.feature_files.write_feature_set` needs the whole ``[N, D]`` array; an
extraction of a large folder (or a merge of shards) has it only as a sequence of chunk
files. :func:`write_feature_folder` streams those pieces into the same on-disk format, byte
for byte (``tests/extraction/test_extract_state.py`` checks this against ``write_feature_set``), so peak
memory does not grow with the number of images.

Writes are atomic per file (temporary file + rename) and ``extract.json`` is written last: a
folder that has ``extract.json`` is complete, as ``read_feature_set`` assumes.
"""

from __future__ import annotations

import csv
import json
import os
import struct
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .atomic import atomic_write, atomic_write_text
from .errors import FeatureFileError
from .feature_files import (
    FEATURE_FILES,
    FEATURES_PARQUET,
    FORMAT_VERSION,
    MANIFEST,
    METADATA,
    SKIPPED,
    remove_stale_features,
    sha256_file,
)

_CSV_ENCODING = dict(encoding="utf-8", errors="surrogateescape", newline="")


def _npy_header(num_rows: int, dim: int) -> bytes:
    """The .npy header ``np.save`` writes for a C-ordered little-endian float32 [N, D] array."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": (num_rows, dim)}
    )
    return buf.getvalue()


def _safetensors_header(num_rows: int, dim: int) -> bytes:
    """The safetensors header ``safetensors.numpy.save({"features": a})`` writes for float32 [N, D]:
    an 8-byte little-endian length, then compact JSON padded with spaces to a multiple of 8."""
    nbytes = num_rows * dim * 4
    text = json.dumps(
        {"features": {"dtype": "F32", "shape": [num_rows, dim], "data_offsets": [0, nbytes]}},
        separators=(",", ":"),
    ).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


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
        meta: extract.json content; the format keys are added as ``write_feature_set`` does.
        fmt: ``"npy"``, ``"safetensors"`` or ``"parquet"`` (rows cut into fixed row groups, so
            the bytes do not depend on the blocks' sizes either).

    Returns:
        The metadata written to extract.json.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if len(paths) != num_rows or len(labels) != num_rows:
        raise FeatureFileError(f"{num_rows} feature rows but {len(paths)} paths and {len(labels)} labels")
    if fmt not in FEATURE_FILES:
        raise FeatureFileError(f"unknown feature format {fmt!r}; use one of {', '.join(FEATURE_FILES)}")
    feat_path = out / FEATURE_FILES[fmt]

    written = 0
    with atomic_write(feat_path, "wb") as f:
        if fmt == "parquet":
            from .parquet_features import write_parquet_features

            written = write_parquet_features(f, feature_blocks(), paths, labels, dim)
        else:
            f.write(_npy_header(num_rows, dim) if fmt == "npy" else _safetensors_header(num_rows, dim))
            for block in feature_blocks():
                block = np.ascontiguousarray(block, dtype="<f4")
                if block.ndim != 2 or (block.shape[0] and block.shape[1] != dim):
                    raise FeatureFileError(f"feature block of shape {block.shape} does not match dim {dim}")
                f.write(block.tobytes())
                written += block.shape[0]
        if written != num_rows:  # raising inside atomic_write leaves no file behind
            raise FeatureFileError(f"expected {num_rows} feature rows, got {written}")
    remove_stale_features(out, fmt)

    with atomic_write(out / MANIFEST, "w", **_CSV_ENCODING) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["row", "path", "label"])
        for i, (p, l) in enumerate(zip(paths, labels)):
            w.writerow((i, p, l))
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
        features_sha256=sha256_file(feat_path),
    )
    atomic_write_text(out / METADATA, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def iter_feature_rows(folder: str | os.PathLike, rows_per_block: int = 4096) -> Iterable[np.ndarray]:
    """Read the features of a finished feature folder in blocks of ``[<= rows_per_block, D]``.

    Plain reads rather than a memory map: mapped pages would count towards the reader's
    resident memory, and a merge of many shards must stay within constant memory.
    """
    from .feature_files import features_path

    path = features_path(folder)
    if path.name == FEATURES_PARQUET:
        from .parquet_features import iter_parquet_features

        yield from iter_parquet_features(path, rows_per_block)
        return
    with open(path, "rb") as f:
        if path.suffix == ".npy":
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            if fortran or dtype != np.dtype("<f4") or len(shape) != 2:
                raise FeatureFileError(f"{path}: expected C-ordered float32 [N, D], got {dtype} {shape}")
        else:
            (n,) = struct.unpack("<Q", f.read(8))
            info = json.loads(f.read(n))["features"]
            if info["dtype"] != "F32" or len(info["shape"]) != 2:
                raise FeatureFileError(f"{path}: expected F32 [N, D] features, got {info['dtype']} {info['shape']}")
            shape = tuple(info["shape"])
            f.seek(8 + n + info["data_offsets"][0])
        num_rows, dim = shape
        for s in range(0, num_rows, rows_per_block):
            k = min(rows_per_block, num_rows - s)
            block = np.fromfile(f, dtype="<f4", count=k * dim)
            if block.size != k * dim:
                raise FeatureFileError(f"{path}: file ends before row {s + k} of {num_rows}")
            yield block.reshape(k, dim)


__all__ = ["write_feature_folder", "iter_feature_rows"]
