"""Folder of images -> feature folder: the library side of ``metaug-extract``.

Data flow (one direction)::

    PATH... --collect_files--> sorted FileList --chunks of chunk_size files--> batches
      --decoding workers (decode_pool): Preprocessor.load_image (uint8 [3, S, S] or a skip reason)-->
      --main process: Preprocessor.to_input -> encoder(x, layer) under inference_mode-->
      float32 [n, D] per chunk --atomic--> OUT/.partial/chunk-k.npz
      --all chunks done--> streamed into OUT/{features.npy|.safetensors|.parquet, manifest.csv,
                           skipped.csv, extract.json}; OUT/.partial removed

Guarantees:

* **Deterministic**: rows follow the sorted relative paths; batches are cut on one grid
  (``batch_size`` files from the start of each fixed chunk) and never cross chunk boundaries,
  so a chunk's numbers do not depend on where a run was interrupted or on how the list was
  sharded. A killed run restarted with the same arguments recomputes only the missing chunks
  and ends bit-identical to an uninterrupted run.
* **Scale-out**: ``shard=(i, n)`` computes a contiguous 1/n of the *files* (sizes differ by at
  most one; :func:`~metaug_features.file_list.shard_bounds`), for any file count; n above the
  file count leaves some shards empty, each a valid folder of 0 rows. A shard boundary inside a
  batch of the grid: the shard computes that whole batch and keeps its own rows, so each row is
  computed in the very batch an unsharded run computes it in (a forward's float sums can depend
  on the batch). :func:`metaug_features.merge.merge_shards` concatenates the shard folders into
  the single-run output, byte for byte.
* **Bad input never crashes or hangs**: every file that cannot be decoded is skipped and
  listed with its reason, including a file whose decoder runs past the per-file time limit or
  crashes its worker process (see :mod:`metaug_features.decode_pool`); ``strict=True`` turns any skip into :class:`StrictModeError` with no final
  output. Argument errors (missing path, unwritable output, unknown layer, output folder of a
  different run) are :class:`MetAugError` raised before any image is decoded.
* **Constant memory**: features are held one chunk at a time and streamed to the final file.

Neighbours: listing and labels in :mod:`~metaug_features.file_list`, decoding in
:mod:`~metaug_features.file_decode` (the decode pool), what a run computes (shard range, chunk
parts, keys) in :mod:`~metaug_features.extract_plan`, the output folder's states in
:mod:`~metaug_features.output_folder`, the resume chunks and the lock in
:mod:`~metaug_features.extract_state`, merging in :mod:`~metaug_features.merge`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .decode_pool import DEFAULT_DECODE_TIME_LIMIT_S, Decoding, default_workers
from .device import resolve_device
from .errors import MetAugError
from .extract_plan import RunPlan, plan_run
from .extract_result import ExtractSummary, StrictModeError
from .extract_state import (
    ChunkResult,
    PartialStore,
    check_output_writable,
    output_lock,
)
from .feature_formats import FEATURE_FORMATS
from .feature_stream import write_feature_folder
from .file_decode import (
    FileDataset,
    batch_ranges,
    collate_decoded,
    decode_files,
    format_skip_reason,
)
from .file_list import (
    FileList,
    collect_files,
    parse_shard,
    shard_bounds,
)
from .malloc_settings import freed_memory_kept

# Re-exported: ``from metaug_features.extract import merge_shards`` is public API.
from .merge import merge_shards
from .output_folder import check_format, claim_output, read_skipped

DEFAULT_BATCH_SIZE = 64
DEFAULT_CHUNK_SIZE = 1024

#: Version of the numbers an extraction computes from a given model, file list and arguments.
#: Bumped whenever the library changes them (decoding, preprocessing, forward pass). It is part
#: of the result key, so a resume never mixes chunks of two versions (older chunks are
#: discarded and recomputed), a finished folder of another version is not taken as this run's
#: result, and shards of two versions do not merge. Runs that predate the key count as 1.
#:
#: 1: metaug-features 0.1.0.
#: 2: JPEGs much larger than the input decode through PIL's draft mode (DCT scaling), which
#:    moves their features slightly (``benchmarks/RESULTS.md``, "Large JPEGs through draft mode").
EXTRACTION_VERSION = 2


# ---------------------------------------------------------------------- helpers
def _progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    # Quiet when asked, or when stderr is not a terminal (piped, a batch job's log file).
    disable = not enabled or not sys.stderr.isatty()
    return tqdm(total=total, initial=initial, disable=disable, unit="img", desc=desc, dynamic_ncols=True)


def _load_model(model: Any, device: torch.device):
    """A model reference (folder, alias, Hub id) or an encoder object -> (encoder, ref string)."""
    from .model import MetAugEncoder

    if isinstance(model, MetAugEncoder):
        return model.to(device), None
    if isinstance(model, torch.nn.Module):
        raise MetAugError(f"expected a MetAugEncoder or a model reference, got {type(model).__name__}")
    from . import load_encoder

    ref = os.fspath(model)
    return load_encoder(ref, device=str(device)), ref


# ---------------------------------------------------------------------- extraction
def extract_features(
    model: Any,
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    layer: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    device: str | torch.device = "cpu",
    fmt: str = "npy",
    strict: bool = False,
    shard: tuple[int, int] | str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overwrite: bool = False,
    progress: bool = True,
    decode_time_limit: float | None = DEFAULT_DECODE_TIME_LIMIT_S,
) -> ExtractSummary:
    """Extract frozen features of every image under ``paths`` into the feature folder ``output``.

    Args:
        model: a model reference for :func:`metaug_features.load_encoder` (local folder,
            alias, ``org/name[@rev]``) or a :class:`MetAugEncoder` (moved to ``device``).
        paths: image folders (walked recursively) and/or image files; see
            :mod:`metaug_features.file_list` for root, ordering, label and skip rules.
        output: the feature folder to write (created; must be new, hold this same run to
            resume, or ``overwrite=True``).
        layer: feature layer (default: the model's ``default_layer``).
        batch_size: images per forward; part of the result (float sums can depend on it).
        workers: decoding worker processes (0 = decode in this process); default min(4, cores).
        device: "cpu", "cuda", "cuda:N" or "auto".
        fmt: the features file, a key of :data:`~metaug_features.feature_formats.FEATURE_FORMATS`:
            "npy", "safetensors" (float32 [N, D]) or "parquet" (one table of path, label,
            feature; needs pyarrow, see :mod:`metaug_features.parquet_features`).
        strict: raise :class:`StrictModeError` (and write no final output) if any file is skipped.
        shard: ``(i, n)`` or ``"i/n"`` (0 <= i < n): compute only shard i of n, a contiguous
            1/n of the sorted files (empty, and written as a valid folder of 0 rows, only when
            n exceeds the file count); join the shard folders with :func:`merge_shards`.
        chunk_size: files per resume chunk; part of the result (batches never cross a chunk).
        overwrite: replace an output folder that holds a different extraction.
        progress: show a progress bar (only when stderr is a terminal).
        decode_time_limit: seconds one file may take to decode before it is skipped with the
            reason "decode time limit exceeded (N s)" (None = no limit). Enforced by killing
            the worker process, so it needs ``workers >= 1``; ``workers=0`` has no limit.
            Operational, like ``workers``: not part of the result key, so a resumed run keeps
            the skips of chunks already finished.

    Returns:
        :class:`ExtractSummary`.

    Raises:
        MetAugError: bad arguments (before any image is decoded), no readable image,
            :class:`StrictModeError`, or :class:`~metaug_features.extract_state.OutputLockedError`
            when another extraction is writing the same output folder.
    """
    t0 = time.perf_counter()
    workers, shard, dev = _check_args(fmt, batch_size, chunk_size, workers, shard, device, decode_time_limit)
    out = Path(output).absolute()

    # 1. Everything that can be wrong with the arguments, before any model or image work.
    files = collect_files(paths, exclude=out)
    if len(files) == 0:
        raise MetAugError(
            f"no files found under {', '.join(os.fspath(p) for p in paths)} "
            "(empty folder, or only hidden files); nothing to extract"
        )
    if strict:  # skips known from the listing alone fail before any decoding
        first, last = shard_bounds(len(files), *shard) if shard else (0, len(files))
        pre = [(e.rel, e.skip_reason) for e in files.entries[first:last] if e.skip_reason]
        if pre:
            raise StrictModeError(pre, complete=False)
    created = not out.exists()
    check_output_writable(out)

    # The heap is kept for the run: without it every batch faults its ~90 MB of activations in
    # again (benchmarks/heap_settings.py, the forward loop alone, 2-core CPU: 168 img/s on
    # average without, 209 with; metaug_features/malloc_settings.py).
    with output_lock(out), freed_memory_kept():
        return _extract_locked(model, files, out, created, layer, batch_size, Decoding(workers, decode_time_limit), dev, fmt,
                               strict, shard, chunk_size, overwrite, progress, t0)


def _extract_locked(model: Any, files: FileList, out: Path, created: bool, layer: str | None, batch_size: int,
                    decoding: Decoding, dev: torch.device, fmt: str, strict: bool, shard: tuple[int, int] | None,
                    chunk_size: int, overwrite: bool, progress: bool, t0: float) -> ExtractSummary:
    """Steps 2-4 of :func:`extract_features`, run while this process holds the output lock.

    A failed write (full disk, quota, a folder made read-only mid-run) becomes a MetAugError
    that says what is kept: every write is atomic, so finished chunks and any earlier final
    files are intact, and the same command continues once the cause is fixed.
    """
    try:
        return _extract_steps(model, files, out, created, layer, batch_size, decoding, dev, fmt, strict, shard,
                              chunk_size, overwrite, progress, t0)
    except OSError as e:
        where = e.filename or out
        raise MetAugError(
            f"writing the extraction into {str(out)!r} failed: {e.strerror or e} ({where}). Finished chunks and "
            "earlier output files are intact (every write is atomic); fix the cause (free space, permissions) and "
            "run the same command again to continue where it stopped"
        ) from None


def _extract_steps(model: Any, files: FileList, out: Path, created: bool, layer: str | None, batch_size: int,
                   decoding: Decoding, dev: torch.device, fmt: str, strict: bool, shard: tuple[int, int] | None,
                   chunk_size: int, overwrite: bool, progress: bool, t0: float) -> ExtractSummary:
    try:
        # 2. The model, the layer, the plan, and the output folder's state.
        enc, ref = _load_model(model, dev)
        layer = enc.config.default_layer if layer is None else layer
        if layer not in enc.layers:
            raise MetAugError(f"unknown --layer {layer!r} for this model; available: {', '.join(enc.layers)}")
        plan = plan_run(enc, ref, layer, files, batch_size, chunk_size, dev, shard, EXTRACTION_VERSION)
        store = PartialStore(out)
        finished = claim_output(out, store, plan, fmt, overwrite)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # leave no trace of a run that never started
        raise
    if finished is not None:
        skipped = read_skipped(out)
        return ExtractSummary(
            output=out, num_files=plan.last - plan.first, num_rows=int(finished["num_rows"]),
            num_skipped=len(skipped), dim=int(finished["dim"]), layer=layer, skipped=skipped,
            chunks_total=len(plan.parts), chunks_resumed=len(plan.parts), already_complete=True,
            seconds=time.perf_counter() - t0,
        )

    # 3. Compute the chunks (parts of chunks, at a shard's ends) that are not on disk yet.
    # Read whole (a damaged chunk fails its zip CRC and is recomputed); later passes trust them.
    pending = [part for part in plan.parts if store.load_chunk(*part, plan.state_sha) is None]
    files_done = (plan.last - plan.first) - sum(stop - start for _, start, stop in pending)
    if pending:
        _compute_chunks(enc, files, plan.bounds, pending, layer, batch_size, decoding, dev, store, plan.state_sha,
                        _progress(plan.last - plan.first, files_done, progress, "extract"))

    # 4. Assemble (features streamed chunk by chunk), then drop the partial state.
    rows: list[int] = []
    skipped_idx: list[tuple[int, str]] = []
    for part in plan.parts:  # first pass: row and skip lists only
        c = _load_chunk_or_fail(store, part, plan.state_sha, features=False)
        rows += c.rows
        skipped_idx += c.skipped
    skipped = [(files.entries[i].rel, r) for i, r in skipped_idx]
    if strict and skipped:
        raise StrictModeError(skipped)
    if not rows and shard is None:
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
        raise MetAugError(f"no readable image among {len(files)} file(s) ({reasons}{' ...' if len(skipped) > 5 else ''})")
    write_feature_folder(
        out,
        lambda: _chunk_features(store, plan),
        num_rows=len(rows),
        dim=plan.dim,
        paths=[files.entries[i].rel for i in rows],
        labels=[files.entries[i].label for i in rows],
        skipped=skipped,
        meta=plan.meta,
        fmt=fmt,
    )
    store.remove()
    return ExtractSummary(
        output=out, num_files=plan.last - plan.first, num_rows=len(rows), num_skipped=len(skipped), dim=plan.dim,
        layer=layer, skipped=skipped, chunks_total=len(plan.parts), chunks_resumed=len(plan.parts) - len(pending),
        chunks_computed=len(pending), seconds=time.perf_counter() - t0,
    )


def _check_args(fmt, batch_size, chunk_size, workers, shard, device,
                decode_time_limit=None) -> tuple[int, tuple[int, int] | None, torch.device]:
    """Validate the scalar arguments; returns (workers, shard, device) normalised."""
    if decode_time_limit is not None and not decode_time_limit > 0:
        raise MetAugError(f"--decode-time-limit must be > 0 seconds, got {decode_time_limit}")
    check_format(fmt)
    if batch_size < 1:
        raise MetAugError(f"--batch-size must be >= 1, got {batch_size}")
    if chunk_size < 1:
        raise MetAugError(f"--chunk-size must be >= 1, got {chunk_size}")
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise MetAugError(f"--workers must be >= 0, got {workers}")
    if isinstance(shard, str):
        shard = parse_shard(shard)
    elif shard is not None:
        shard = parse_shard(f"{shard[0]}/{shard[1]}")
    return workers, shard, resolve_device(device)


def _chunk_features(store: PartialStore, plan: RunPlan) -> Iterator[np.ndarray]:
    """The features of this run's chunks, one chunk [n_k, D] at a time, in order."""
    for part in plan.parts:
        yield _load_chunk_or_fail(store, part, plan.state_sha).features


def _load_chunk_or_fail(store: PartialStore, part: tuple[int, int, int], state_sha: str,
                        features: bool = True) -> ChunkResult:
    c = store.load_chunk(*part, state_sha, features=features)
    if c is None:  # only if .partial was changed by someone else during the run
        raise MetAugError(f"{store.dir}: finished chunk {part[0]} disappeared or is damaged; run the same command again")
    return c


def _compute_chunks(
    enc, files: FileList, bounds: list[tuple[int, int]], pending: list[tuple[int, int, int]], layer: str,
    batch_size: int, decoding: Decoding, dev: torch.device, store: PartialStore, state_sha: str, bar,
) -> None:
    """Decode and encode the ``pending`` parts ``(k, start, stop)``, writing each as soon as it
    is complete.

    A part's batches are the batches of chunk k's grid (``bounds[k]`` cut every ``batch_size``
    files) that meet ``[start, stop)``; each is decoded and encoded whole and the part keeps
    its own rows, so a row is computed in the same batch whatever the shard. One decoding pool
    over all pending batches (workers start once); the order of the batches tells where a part
    ends.
    """
    batches: list[list[int]] = []
    batch_part: list[int] = []  # index into ``pending`` of each batch
    for j, (k, start, stop) in enumerate(pending):
        cut = [b for b in batch_ranges(*bounds[k], batch_size) if b[0] < stop and b[-1] >= start]
        batches += cut
        batch_part += [j] * len(cut)
    decoded = decode_files(files.entries, enc.preprocess.load_image, batches, decoding)
    was_training = enc.training
    enc.eval()
    closes_part = [j == len(batches) - 1 or batch_part[j + 1] != batch_part[j] for j in range(len(batches))]
    dim = enc.feature_dim(layer)
    current: ChunkResult | None = None
    feats: list[np.ndarray] = []
    try:
        with bar, torch.inference_mode():
            for (row_idx, images, skipped, _), j, closes in zip(decoded, batch_part, closes_part):
                k, start, stop = pending[j]
                if current is None:
                    current = ChunkResult(index=k, start=start, stop=stop, features=np.empty((0, dim), np.float32))
                if images is not None:
                    if dev.type == "cuda":
                        images = images.pin_memory()
                    x = enc.preprocess.to_input(images.to(dev, non_blocking=True))
                    out = enc(x, layer).float().cpu().numpy()  # [b, D]
                    keep = [r for r, i in enumerate(row_idx) if start <= i < stop]
                    if len(keep) < len(row_idx):  # a batch across a shard's end: its rows only
                        out, row_idx = out[keep], [row_idx[r] for r in keep]
                    feats.append(out)
                mine = [(i, r) for i, r in skipped if start <= i < stop]
                current.rows.extend(row_idx)
                current.skipped.extend(mine)
                bar.update(len(row_idx) + len(mine))
                if closes:
                    if feats:
                        current.features = np.concatenate(feats)
                    store.write_chunk(current, state_sha)
                    current, feats = None, []
    finally:
        decoded.close()  # stops the decoding workers, also when encoding failed
        enc.train(was_training)


__all__ = [
    "extract_features", "merge_shards", "ExtractSummary", "StrictModeError", "FileDataset",
    "collate_decoded", "resolve_device", "default_workers", "format_skip_reason", "EXTRACTION_VERSION", "FEATURE_FORMATS",
]
