"""The ``npy`` and ``safetensors`` features files: a header, then the float32 ``[N, D]`` rows raw.

Both are written as a stream (header for N and D first, then each block's bytes), so writing
never holds all N x D features, and the bytes are those of ``np.save(f, a)`` and
``safetensors.numpy.save({"features": a})`` for the whole array ``a`` (little-endian float32,
C order), which any numpy or safetensors reader loads. Reading is by blocks, with plain reads
rather than a memory map: mapped pages would count towards the reader's resident memory, and a
merge of many shards must stay within constant memory.
"""

from __future__ import annotations

import io
import json
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import IO

import numpy as np

from .errors import FeatureFileError

#: The safetensors tensor name of the features.
SAFETENSORS_KEY = "features"


def npy_header(num_rows: int, dim: int) -> bytes:
    """The .npy header ``np.save`` writes for a C-ordered little-endian float32 [N, D] array."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False, "shape": (num_rows, dim)}
    )
    return buf.getvalue()


def safetensors_header(num_rows: int, dim: int) -> bytes:
    """The safetensors header ``safetensors.numpy.save({"features": a})`` writes for float32 [N, D]:
    an 8-byte little-endian length, then compact JSON padded with spaces to a multiple of 8."""
    nbytes = num_rows * dim * 4
    text = json.dumps(
        {SAFETENSORS_KEY: {"dtype": "F32", "shape": [num_rows, dim], "data_offsets": [0, nbytes]}},
        separators=(",", ":"),
    ).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def _write_rows(f: IO[bytes], blocks: Iterable[np.ndarray]) -> None:
    for block in blocks:  # float32 [n, D], checked by the folder writer
        block = np.ascontiguousarray(block, dtype="<f4")
        if block.size:  # a flat byte view: no copy, unlike tobytes()
            f.write(memoryview(block.reshape(-1).view(np.uint8)))


def write_npy_features(f: IO[bytes], blocks: Iterable[np.ndarray], paths: Sequence[str], labels: Sequence[str],
                       dim: int) -> None:
    """``features.npy``: float32 blocks ``[n_k, D]`` (``sum n_k == len(paths)``) into ``f``."""
    f.write(npy_header(len(paths), dim))
    _write_rows(f, blocks)


def write_safetensors_features(f: IO[bytes], blocks: Iterable[np.ndarray], paths: Sequence[str],
                               labels: Sequence[str], dim: int) -> None:
    """``features.safetensors`` (tensor ``features``): float32 blocks ``[n_k, D]`` into ``f``."""
    f.write(safetensors_header(len(paths), dim))
    _write_rows(f, blocks)


def _read_rows(f: IO[bytes], path: str | os.PathLike, num_rows: int, dim: int,
               rows_per_block: int) -> Iterator[np.ndarray]:
    for s in range(0, num_rows, rows_per_block):
        k = min(rows_per_block, num_rows - s)
        block = np.fromfile(f, dtype="<f4", count=k * dim)
        if block.size != k * dim:
            raise FeatureFileError(f"{path}: file ends before row {s + k} of {num_rows}")
        yield block.reshape(k, dim)


def read_npy_features(path: str | os.PathLike, rows_per_block: int) -> Iterator[np.ndarray]:
    """The rows of ``features.npy`` in float32 blocks ``[<= rows_per_block, D]``."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
        except ValueError as e:
            raise FeatureFileError(f"{path}: not a readable .npy file ({e})") from None
        if fortran or dtype != np.dtype("<f4") or len(shape) != 2:
            raise FeatureFileError(f"{path}: expected C-ordered float32 [N, D], got {dtype} {shape}")
        yield from _read_rows(f, path, shape[0], shape[1], rows_per_block)


def read_safetensors_features(path: str | os.PathLike, rows_per_block: int) -> Iterator[np.ndarray]:
    """The ``features`` tensor of ``features.safetensors`` in float32 blocks ``[<= rows_per_block, D]``."""
    with open(path, "rb") as f:
        try:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        except (struct.error, ValueError) as e:
            raise FeatureFileError(f"{path}: not a readable safetensors file ({e})") from None
        if SAFETENSORS_KEY not in header:
            raise FeatureFileError(f"{path}: no tensor named {SAFETENSORS_KEY!r}")
        info = header[SAFETENSORS_KEY]
        if info["dtype"] != "F32" or len(info["shape"]) != 2:
            raise FeatureFileError(f"{path}: expected F32 [N, D] features, got {info['dtype']} {info['shape']}")
        f.seek(8 + n + info["data_offsets"][0])
        yield from _read_rows(f, path, info["shape"][0], info["shape"][1], rows_per_block)


__all__ = [
    "SAFETENSORS_KEY", "npy_header", "read_npy_features", "read_safetensors_features", "safetensors_header",
    "write_npy_features", "write_safetensors_features",
]
