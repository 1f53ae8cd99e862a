"""The parquet features file of a feature folder (``metaug-extract --format parquet``).

``features.parquet`` is one table that pandas and pyarrow read directly, one row per image in
manifest order::

    path     string                              relative path, as in manifest.csv
    label    string                              parent folder name ("" in the root)
    feature  fixed_size_list<float32>[D]         the feature row (not null)

pyarrow is an optional dependency (``pip install 'metaug-features[parquet]'``): it is imported
only when a parquet file is written or read, so ``import metaug_features`` never needs it.

**File names that are not valid UTF-8.** Parquet strings must be UTF-8, so such a name cannot be
stored as it is: each byte that does not decode is written as ``\\xNN`` (Python's
``backslashreplace``), e.g. the Latin-1 name ``caf\\xe9.jpg`` becomes the 11 characters
``caf\\xe9.jpg``. Valid UTF-8 names are stored unchanged. The exact bytes stay in
``manifest.csv`` (UTF-8 with surrogate escapes), whose row ``i`` is the table's row ``i``;
:func:`~metaug_features.feature_files.read_feature_set` takes paths and labels from there.

**Determinism.** Rows are cut into row groups of a fixed number of rows that depends only on D
(:func:`rows_per_group`), never on how the rows arrive (extraction chunks, merged shards), and
pyarrow writes no timestamps: the same rows give the same bytes, so a merge of shards is
byte-identical to a single run, as for the other formats, given the same pyarrow version (the
file records the writer's version).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

from .errors import FeatureFileError, MetAugError

#: Target size of the feature column of one row group: big enough for fast scans, small enough
#: that writing and reading stay within a few tens of MB whatever the number of rows.
ROW_GROUP_BYTES = 32 << 20

INSTALL_HINT = "pip install 'metaug-features[parquet]'"


def import_pyarrow() -> tuple[ModuleType, ModuleType]:
    """``(pyarrow, pyarrow.parquet)``, or a :class:`MetAugError` that says how to install them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as e:
        raise MetAugError(
            f"the parquet feature format needs pyarrow, which is not installed ({e}); install it with: {INSTALL_HINT}"
        ) from None
    return pyarrow, pyarrow.parquet


def rows_per_group(dim: int) -> int:
    """Rows per parquet row group for D-dimensional float32 features (a function of D only)."""
    return max(1, ROW_GROUP_BYTES // (4 * max(dim, 1)))


def parquet_text(name: str) -> str:
    """A path or label as stored in the parquet table: unchanged when it is valid UTF-8, else
    (surrogate-escaped bytes of a non-UTF-8 file name) each undecodable byte as ``\\xNN``."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def schema(dim: int):
    """The table's schema for D-dimensional features."""
    pa, _ = import_pyarrow()
    return pa.schema([
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("feature", pa.list_(pa.float32(), dim), nullable=False),
    ])


def write_parquet_features(
    f: IO[bytes], blocks: Iterable[np.ndarray], paths: Sequence[str], labels: Sequence[str], dim: int
) -> int:
    """Write the table to the open binary file ``f`` (left open; the caller makes it atomic).

    Args:
        blocks: float32 blocks ``[n_k, D]`` whose rows, in order, are the feature rows.
        paths, labels: one per row, in row order (manifest form: surrogate escapes allowed).
        dim: D.

    Returns:
        The number of rows written (the caller checks it against the expected count).
    """
    pa, pq = import_pyarrow()
    sch = schema(dim)
    group = rows_per_group(dim)
    # Dictionary encoding only for labels (few distinct values); paths are unique and features
    # are floats, where a dictionary is pure overhead.
    writer = pq.ParquetWriter(f, sch, compression="snappy", use_dictionary=["label"])
    pending: list[np.ndarray] = []
    n_pending = 0
    written = 0

    def flush(rows: np.ndarray) -> None:
        nonlocal written
        n = rows.shape[0]
        if n > len(paths) - written:
            raise FeatureFileError(f"more feature rows than the {len(paths)} paths given")
        values = pa.array(rows.reshape(-1), type=pa.float32())
        table = pa.Table.from_arrays(
            [
                pa.array([parquet_text(p) for p in paths[written:written + n]], type=pa.string()),
                pa.array([parquet_text(lb) for lb in labels[written:written + n]], type=pa.string()),
                pa.FixedSizeListArray.from_arrays(values, dim),
            ],
            schema=sch,
        )
        writer.write_table(table, row_group_size=n)
        written += n

    try:
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=np.float32)
            if block.ndim != 2 or (block.shape[0] and block.shape[1] != dim):
                raise FeatureFileError(f"feature block of shape {block.shape} does not match dim {dim}")
            if block.shape[0] == 0:
                continue
            pending.append(block)
            n_pending += block.shape[0]
            # Cut fixed-size row groups out of whatever block sizes arrive (determinism).
            while n_pending >= group:
                rows = np.concatenate(pending) if len(pending) > 1 else pending[0]
                flush(rows[:group])
                rest = rows[group:]
                pending, n_pending = ([rest] if rest.shape[0] else []), rest.shape[0]
        if n_pending:
            flush(np.concatenate(pending))
    finally:
        writer.close()  # writes the footer; does not close ``f``
    return written


def _feature_column_dim(pq_file, path: str | os.PathLike) -> int:
    """D from the file's schema, after checking the column is fixed_size_list<float32>."""
    pa, _ = import_pyarrow()
    sch = pq_file.schema_arrow
    if "feature" not in sch.names:
        raise FeatureFileError(f"{path}: no column named 'feature'")
    t = sch.field("feature").type
    if not (pa.types.is_fixed_size_list(t) and pa.types.is_float32(t.value_type)):
        raise FeatureFileError(f"{path}: column 'feature' must be fixed_size_list<float32>[D], got {t}")
    return t.list_size


def _to_numpy(column, dim: int) -> np.ndarray:
    """A fixed_size_list<float32> array or chunked array -> float32 [n, D]."""
    chunks = column.chunks if hasattr(column, "chunks") else [column]
    # flatten() honours slicing offsets, unlike .values; nulls are refused by the writer's schema.
    parts = [c.flatten().to_numpy(zero_copy_only=False) for c in chunks]
    flat = np.concatenate(parts) if parts else np.empty(0, np.float32)
    return np.asarray(flat, dtype=np.float32).reshape(-1, dim)


def read_parquet_features(path: str | os.PathLike) -> np.ndarray:
    """The feature column of ``features.parquet`` as float32 [N, D]."""
    _, pq = import_pyarrow()
    try:
        pf = pq.ParquetFile(path)
        dim = _feature_column_dim(pf, path)
        return _to_numpy(pf.read(columns=["feature"]).column("feature"), dim)
    except (FeatureFileError, MetAugError):
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow's errors for damaged files vary
        raise FeatureFileError(f"{path}: not a readable parquet features file ({e})") from None


def iter_parquet_features(path: str | os.PathLike, rows_per_block: int = 4096) -> Iterator[np.ndarray]:
    """The feature column of ``features.parquet`` in blocks of ``[<= rows_per_block, D]``,
    reading one row group at a time (memory does not grow with N)."""
    _, pq = import_pyarrow()
    try:
        pf = pq.ParquetFile(path)
        dim = _feature_column_dim(pf, path)
        for batch in pf.iter_batches(batch_size=rows_per_block, columns=["feature"]):
            yield _to_numpy(batch.column(0), dim)
    except (FeatureFileError, MetAugError):
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow's errors for damaged files vary
        raise FeatureFileError(f"{path}: not a readable parquet features file ({e})") from None


__all__ = [
    "import_pyarrow", "rows_per_group", "parquet_text", "schema", "write_parquet_features",
    "read_parquet_features", "iter_parquet_features", "INSTALL_HINT",
]
