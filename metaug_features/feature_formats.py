"""The files of a feature folder: manifest.csv, skipped.csv, extract.json, and one features
file, whose kind is a row of :data:`FEATURE_FORMATS` (one row per ``--format``).

A row names the file, its stream writer and its block reader (and, when the format needs an
optional package, the check that it is installed). Everything else reads this table: the
folder writer and reader (:mod:`~metaug_features.feature_stream`,
:mod:`~metaug_features.feature_files`), extraction and merge (``--format`` is checked here
before any image is decoded), the evaluators (through ``read_feature_set``) and the
``metaug-extract --format`` choices. Adding a format is one module with a writer and a reader,
and one row (docs/EXTENDING.md, "Add a feature output format").

The contract of a row's functions (manifest.csv, skipped.csv and extract.json are written by
the folder writer for every format; a features file only holds the rows' features):

* ``write(f, blocks, paths, labels, dim)``: write the features file into the open binary file
  ``f`` (made atomic by the caller): ``blocks`` yields float32 ``[n_k, D]`` arrays, already
  checked, whose rows in order are the N rows; ``paths`` and ``labels`` are the N manifest
  entries, for formats that store them. The same rows must give the same bytes, however they
  are cut into blocks: a merge of shards is compared byte for byte with a single run.
* ``read(path, rows_per_block)``: yield the rows back as float32 ``[<= rows_per_block, D]``
  blocks, in order (streamed, so a merge holds one block at a time).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .array_features import (
    read_npy_features,
    read_safetensors_features,
    write_npy_features,
    write_safetensors_features,
)
from .errors import FeatureFileError, MetAugError
from .parquet_features import (
    import_pyarrow,
    iter_parquet_features,
    write_parquet_features,
)

#: Version of the folder layout, recorded in extract.json.
FORMAT_VERSION = 1
MANIFEST = "manifest.csv"  # row,path,label (one line per feature row)
SKIPPED = "skipped.csv"  # path,reason (files that produced no row)
METADATA = "extract.json"  # written last: a folder that has it is complete

#: ``write(f, blocks [n_k, D], paths, labels, dim)``; its return value is ignored.
FeatureWriter = Callable[[IO[bytes], Iterable[np.ndarray], Sequence[str], Sequence[str], int], Any]
#: ``read(path, rows_per_block) -> float32 blocks [<= rows_per_block, D]``.
FeatureReader = Callable[[str | os.PathLike, int], Iterator[np.ndarray]]


@dataclass(frozen=True)
class FeatureFormat:
    """One ``--format``: its features file, writer and reader.

    Attributes:
        file: the features file's name in the folder (``features.<ext>``).
        write: the stream writer (module docstring).
        read: the block reader (module docstring).
        summary: one line for ``--help`` and the docs: what the file holds.
        requires: called before any image is decoded; raises :class:`MetAugError` saying how
            to install what the format needs (None: nothing beyond the library's dependencies).
    """

    file: str
    write: FeatureWriter
    read: FeatureReader
    summary: str
    requires: Callable[[], object] | None = None


#: Every ``--format``, first the default. One visible table, read at call time (never filled by
#: decorators at import), so a row added here, or by a test with ``monkeypatch.setitem``, is at
#: once a choice of ``metaug-extract --format``, writable, readable and mergeable.
FEATURE_FORMATS: dict[str, FeatureFormat] = {
    "npy": FeatureFormat(
        file="features.npy", write=write_npy_features, read=read_npy_features,
        summary="float32 [N, D] array (numpy.load)",
    ),
    "safetensors": FeatureFormat(
        file="features.safetensors", write=write_safetensors_features, read=read_safetensors_features,
        summary='float32 [N, D] tensor "features" (safetensors)',
    ),
    "parquet": FeatureFormat(
        file="features.parquet", write=write_parquet_features, read=iter_parquet_features,
        summary="one table: path, label, feature as fixed_size_list<float32>[D] (pandas, pyarrow); "
                "needs pip install 'metaug-features[parquet]'",
        requires=import_pyarrow,
    ),
}


def feature_format(name: str) -> FeatureFormat:
    """The row of ``--format name``, its optional dependency checked (before any image is
    decoded, not after hours of extraction).

    Raises:
        MetAugError: an unknown name (listing the known ones), or a missing optional package.
    """
    if name not in FEATURE_FORMATS:
        raise MetAugError(f"unknown --format {name!r}; use one of {', '.join(FEATURE_FORMATS)}")
    row = FEATURE_FORMATS[name]
    if row.requires is not None:
        row.requires()
    return row


def format_of_file(file_name: str) -> str | None:
    """The ``--format`` whose features file is called ``file_name`` (None: no format's)."""
    return next((name for name, row in FEATURE_FORMATS.items() if row.file == file_name), None)


def features_file_names() -> tuple[str, ...]:
    """The features file of every format (a folder holds exactly one of them)."""
    return tuple(row.file for row in FEATURE_FORMATS.values())


def features_path(folder: str | os.PathLike) -> Path:
    """The features file inside a feature folder (of whichever format it holds)."""
    folder = Path(folder)
    for name in features_file_names():
        if (folder / name).is_file():
            return folder / name
    raise FeatureFileError(
        f"{folder}: no {', '.join(features_file_names())}; is this a metaug-extract output folder?"
    )


__all__ = ["FEATURE_FORMATS", "FORMAT_VERSION", "MANIFEST", "METADATA", "SKIPPED", "FeatureFormat", "FeatureReader",
           "FeatureWriter", "feature_format", "features_file_names", "features_path", "format_of_file"]
