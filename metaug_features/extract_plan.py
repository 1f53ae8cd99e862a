"""What one extraction computes, and the keys that tie its chunks and outputs to it.

The sorted file list is cut into fixed chunks of ``chunk_size`` files (``bounds``: they set the
batch grid, so a row's batch never depends on the shard); a run computes the files
``[first, last)`` (the whole list, or one shard's contiguous 1/n of it), as ``parts``: the
``(k, start, stop)`` of each chunk it meets, clipped to that range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .extract_state import key_sha256, model_fingerprint
from .file_list import FileList, chunk_bounds, chunk_parts, shard_bounds


@dataclass
class RunPlan:
    """What this run computes and the keys that tie chunks and outputs to it.

    ``result_key`` holds everything that determines the numbers and is machine-independent
    (shards from several machines share it); ``state_sha`` additionally pins the shard and the
    absolute root folder, so a resume never mixes chunks of another folder.
    """

    bounds: list[tuple[int, int]]
    parts: list[tuple[int, int, int]]
    first: int
    last: int
    dim: int
    result_key: dict[str, Any]
    result_sha: str
    shard_meta: dict[str, Any] | None
    meta: dict[str, Any]
    state_key: dict[str, Any]
    state_sha: str


def plan_run(enc: Any, ref: str | None, layer: str, files: FileList, batch_size: int, chunk_size: int,
             dev: torch.device, shard: tuple[int, int] | None, extraction_version: int) -> RunPlan:
    """The plan of extracting ``layer`` of ``enc`` (loaded from ``ref``) over ``files``."""
    bounds = chunk_bounds(len(files), chunk_size)
    first, last = shard_bounds(len(files), *shard) if shard else (0, len(files))
    result_key = {
        "extraction_version": extraction_version,
        "model_sha256": model_fingerprint(enc, enc.config.to_dict()),
        "layer": layer,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "device": dev.type,
        "file_list_sha256": files.sha256(),
        "num_files": len(files),
    }
    result_sha = key_sha256(result_key)
    shard_meta = None if shard is None else {"index": shard[0], "count": shard[1], "files": [first, last]}
    meta = {
        "tool": "metaug-extract",
        "model": ref,
        "model_config": enc.config.to_dict(),
        **result_key,
        "result_key_sha256": result_sha,
        "shard": shard_meta,
    }
    state_key = {**result_key, "shard": shard_meta, "root": files.root}
    return RunPlan(bounds, chunk_parts(bounds, first, last), first, last, enc.feature_dim(layer), result_key,
                   result_sha, shard_meta, meta, state_key, key_sha256(state_key))


__all__ = ["RunPlan", "plan_run"]
