"""Folder of images -> feature folder: the library side of ``metaug-extract``.

Data flow (one direction)::

    PATH... --collect_files--> sorted FileList --chunks of chunk_size files--> batches
      --decoding workers (decode_pool): Preprocessor.load_image (uint8 [3, S, S] or a skip reason)-->
      --main process: Preprocessor.to_input -> encoder(x, layer) under inference_mode-->
      float32 [n, D] per chunk --atomic--> OUT/.partial/chunk-k.npz
      --all chunks done--> streamed into OUT/{features.npy|.safetensors|.parquet, manifest.csv,
                           skipped.csv, extract.json}; OUT/.partial removed

Guarantees:

* **Deterministic**: rows follow the sorted relative paths; batches never cross chunk
  boundaries, so a chunk's numbers do not depend on where a run was interrupted or on how
  the list was sharded. A killed run restarted with the same arguments recomputes only the
  missing chunks and ends bit-identical to an uninterrupted run.
* **Scale-out**: ``shard=(i, n)`` computes a contiguous 1/n of the chunks;
  :func:`merge_shards` concatenates the shard folders into the single-run output, byte for byte.
* **Bad input never crashes or hangs**: every file that cannot be decoded is skipped and
  listed with its reason, including a file whose decoder runs past the per-file time limit or
  crashes its worker process (see :mod:`metaug_features.decode_pool`); ``strict=True`` turns any skip into :class:`StrictModeError` with no final
  output. Argument errors (missing path, unwritable output, unknown layer, output folder of a
  different run) are :class:`MetAugError` raised before any image is decoded.
* **Constant memory**: features are held one chunk at a time and streamed to the final file.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .decode_pool import DEFAULT_DECODE_TIME_LIMIT_S, Decoding, decode_batches
from .device import resolve_device
from .errors import ImageDecodeError, MetAugError
from .extract_state import (
    PARTIAL_DIR,
    ChunkResult,
    PartialStore,
    check_output_writable,
    key_sha256,
    model_fingerprint,
    output_lock,
)
from .feature_files import FEATURE_FILES, MANIFEST, METADATA, SKIPPED
from .feature_stream import iter_feature_rows, write_feature_folder
from .file_list import FileEntry, FileList, chunk_bounds, collect_files, parse_shard, shard_chunks

DEFAULT_BATCH_SIZE = 64
DEFAULT_CHUNK_SIZE = 1024
FORMATS = tuple(FEATURE_FILES)  # npy, safetensors, parquet
_OUR_FILES = (*FEATURE_FILES.values(), MANIFEST, SKIPPED, METADATA)

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


class StrictModeError(MetAugError):
    """``strict=True`` and some files were skipped; ``.skipped`` lists (path, reason)."""

    def __init__(self, skipped: Sequence[tuple[str, str]], complete: bool = True, limit: int = 50) -> None:
        self.skipped = list(skipped)
        lines = [f"  {p}: {r}" for p, r in self.skipped[:limit]]
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more")
        head = f"--strict: {len(self.skipped)} file(s) would be skipped" + ("" if complete else " (found before decoding; more may follow)")
        super().__init__(head + "; no output written:\n" + "\n".join(lines))


@dataclass
class ExtractSummary:
    """What an extraction (or a merge) did.

    Attributes:
        output: the feature folder.
        num_files: files considered by this run (this shard's files when sharded).
        num_rows: feature rows written.
        num_skipped: files that produced no row (listed in ``skipped``).
        dim: feature dimension D.
        layer: the feature layer.
        chunks_total / chunks_resumed / chunks_computed: chunk bookkeeping of this run
            (resumed = loaded from ``.partial``, computed = decoded and encoded now).
        already_complete: the output folder already held this exact extraction.
        seconds: wall time of the call.
    """

    output: Path
    num_files: int
    num_rows: int
    num_skipped: int
    dim: int
    layer: str | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks_total: int = 0
    chunks_resumed: int = 0
    chunks_computed: int = 0
    already_complete: bool = False
    seconds: float = 0.0


# ---------------------------------------------------------------------- decoding (workers)
def format_skip_reason(err: ImageDecodeError, path: str) -> str:
    """``reason`` plus the decoder's detail, without the (machine-specific) absolute path, so
    the skipped list of a shard computed elsewhere matches a single run's."""
    detail = err.detail or ""
    if detail.startswith(path):
        detail = detail[len(path):].lstrip(": ").strip()
    return f"{err.reason} ({detail})" if detail else err.reason


class FileDataset(Dataset):
    """Item ``i`` of the sorted list -> ``(i, uint8 [3, S, S] or None, skip reason or None)``.

    Runs in the decoding worker processes. Never raises for a bad file: every failure becomes a
    skip reason, so one broken image cannot kill the run.
    """

    def __init__(self, entries: Sequence[FileEntry], load_image: Callable[[str], torch.Tensor]) -> None:
        self.paths = [e.path for e in entries]
        self.pre_skip = [e.skip_reason for e in entries]
        self.load_image = load_image

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        if self.pre_skip[i] is not None:
            return i, None, self.pre_skip[i]
        path = self.paths[i]
        try:
            return i, self.load_image(path), None
        except ImageDecodeError as e:
            return i, None, format_skip_reason(e, path)
        except PermissionError:  # in case a loader lets it through
            return i, None, "permission denied"
        except OSError as e:
            return i, None, f"cannot read file ({e.strerror or type(e).__name__})"
        except Exception as e:  # noqa: BLE001 - a decoder bug must not end the run
            return i, None, f"unexpected decoder error ({type(e).__name__}: {e})"


def collate_decoded(items: list[tuple[int, torch.Tensor | None, str | None]]):
    """Batch of dataset items -> (row file indices, uint8 [b, 3, S, S] or None,
    [(file index, reason)], number of files in the batch)."""
    good = [(i, t) for i, t, _ in items if t is not None]
    skipped = [(i, r) for i, t, r in items if t is None]
    images = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], images, skipped, len(items)


# ---------------------------------------------------------------------- helpers
def default_workers() -> int:
    """Decoding worker processes by default: min(4, CPU cores)."""
    return min(4, os.cpu_count() or 1)


def _progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    # Quiet when asked, or when stderr is not a terminal (piped, a batch job's log file).
    disable = not enabled or not sys.stderr.isatty()
    return tqdm(total=total, initial=initial, disable=disable, unit="img", desc=desc, dynamic_ncols=True)


def _return_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Each chunk allocates and frees tens of MB (batch activations, the chunk's features);
    glibc keeps such freed blocks in its heap, so without this the resident size creeps up by
    ~10 MB per chunk (measured with alexnet32 width 1.0, chunk 1024) although nothing leaks.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def _read_meta(out: Path) -> dict[str, Any] | None:
    try:
        with open(out / METADATA, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _read_skipped(out: Path) -> list[tuple[str, str]]:
    with open(out / SKIPPED, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.reader(f))[1:]
    return [(r[0], r[1]) for r in rows]


def _remove_our_files(out: Path) -> None:
    """--overwrite: remove what an extraction writes (never anything else in the folder).
    extract.json goes first, so an interrupted removal never leaves a folder that looks complete."""
    for name in (METADATA,) + _OUR_FILES:
        try:
            (out / name).unlink()
        except FileNotFoundError:
            pass
    PartialStore(out).remove()


def _foreign_entries(out: Path) -> list[str]:
    ours = set(_OUR_FILES) | {PARTIAL_DIR}
    return sorted(n for n in os.listdir(out) if n not in ours and not (n.startswith(".") and n.endswith(".tmp")))


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
        fmt: the features file: "npy", "safetensors" (float32 [N, D]) or "parquet" (one table of
            path, label, feature; needs pyarrow, see :mod:`metaug_features.parquet_features`).
        strict: raise :class:`StrictModeError` (and write no final output) if any file is skipped.
        shard: ``(i, n)`` or ``"i/n"`` (0 <= i < n): compute only shard i of n (contiguous
            chunks); join the shard folders with :func:`merge_shards`.
        chunk_size: files per resume chunk (and the unit of sharding); part of the result.
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
        bounds = chunk_bounds(len(files), chunk_size)
        mine = shard_chunks(len(bounds), *shard) if shard else range(len(bounds))
        pre = [(e.rel, e.skip_reason) for k in mine for e in files.entries[slice(*bounds[k])] if e.skip_reason]
        if pre:
            raise StrictModeError(pre, complete=False)
    created = not out.exists()
    check_output_writable(out)

    with output_lock(out):
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
        plan = _plan(enc, ref, layer, files, batch_size, chunk_size, dev, shard)
        store = PartialStore(out)
        finished = _claim_output(out, store, plan, fmt, overwrite)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # leave no trace of a run that never started
        raise
    if finished is not None:
        skipped = _read_skipped(out)
        return ExtractSummary(
            output=out, num_files=plan.last - plan.first, num_rows=int(finished["num_rows"]),
            num_skipped=len(skipped), dim=int(finished["dim"]), layer=layer, skipped=skipped,
            chunks_total=len(plan.chunks), chunks_resumed=len(plan.chunks), already_complete=True,
            seconds=time.perf_counter() - t0,
        )

    # 3. Compute the chunks of this shard that are not on disk yet.
    bounds = plan.bounds
    pending = [k for k in plan.chunks if store.load_chunk(k, *bounds[k], plan.state_sha) is None]
    pending_set = set(pending)
    files_done = sum(bounds[k][1] - bounds[k][0] for k in plan.chunks if k not in pending_set)
    if pending:
        _compute_chunks(enc, files, bounds, pending, layer, batch_size, decoding, dev, store, plan.state_sha,
                        _progress(plan.last - plan.first, files_done, progress, "extract"))

    # 4. Assemble (features streamed chunk by chunk), then drop the partial state.
    rows: list[int] = []
    skipped_idx: list[tuple[int, str]] = []
    for k in plan.chunks:  # first pass: row and skip lists only
        c = _load_chunk_or_fail(store, k, bounds[k], plan.state_sha)
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
        layer=layer, skipped=skipped, chunks_total=len(plan.chunks), chunks_resumed=len(plan.chunks) - len(pending),
        chunks_computed=len(pending), seconds=time.perf_counter() - t0,
    )


def _check_args(fmt, batch_size, chunk_size, workers, shard, device,
                decode_time_limit=None) -> tuple[int, tuple[int, int] | None, torch.device]:
    """Validate the scalar arguments; returns (workers, shard, device) normalised."""
    if decode_time_limit is not None and not decode_time_limit > 0:
        raise MetAugError(f"--decode-time-limit must be > 0 seconds, got {decode_time_limit}")
    _check_format(fmt)
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


def _check_format(fmt: str) -> None:
    """A known --format whose writer can run here (parquet needs pyarrow): checked before any
    image is decoded, not after hours of extraction."""
    if fmt not in FORMATS:
        raise MetAugError(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        from .parquet_features import import_pyarrow

        import_pyarrow()


@dataclass
class _Plan:
    """What this run computes and the keys that tie chunks and outputs to it.

    ``result_key`` holds everything that determines the numbers and is machine-independent
    (shards from several machines share it); ``state_sha`` additionally pins the shard and the
    absolute root folder, so a resume never mixes chunks of another folder.
    """

    bounds: list[tuple[int, int]]
    chunks: range
    first: int
    last: int
    dim: int
    result_key: dict[str, Any]
    result_sha: str
    shard_meta: dict[str, Any] | None
    meta: dict[str, Any]
    state_key: dict[str, Any]
    state_sha: str


def _plan(enc, ref, layer, files: FileList, batch_size, chunk_size, dev, shard) -> _Plan:
    bounds = chunk_bounds(len(files), chunk_size)
    chunks = shard_chunks(len(bounds), *shard) if shard else range(len(bounds))
    first = bounds[chunks.start][0] if chunks.start < len(bounds) else len(files)
    last = bounds[chunks.stop - 1][1] if len(chunks) else first
    result_key = {
        "extraction_version": EXTRACTION_VERSION,
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
    return _Plan(bounds, chunks, first, last, enc.feature_dim(layer), result_key, result_sha, shard_meta, meta,
                 state_key, key_sha256(state_key))


def _claim_output(out: Path, store: PartialStore, plan: _Plan, fmt: str, overwrite: bool) -> dict[str, Any] | None:
    """Decide what the output folder holds: this finished run (returns its metadata), this
    unfinished run (resume), nothing (start), or something else (error unless ``overwrite``).

    Unfinished chunks of another :data:`EXTRACTION_VERSION` (same arguments otherwise) are
    discarded and recomputed without asking: no command of this version could finish them
    consistently, and they are only a cache. A *finished* folder of another version is kept
    unless ``overwrite``: it is a complete result, just not this version's.
    """
    done_meta = _read_meta(out)
    if done_meta is not None:
        differ = [k for k in plan.result_key if done_meta.get(k) != plan.result_key[k]]
        if done_meta.get("shard") != plan.shard_meta:
            differ.append("shard")
        if done_meta.get("features_file") != FEATURE_FILES[fmt]:
            differ.append("format")
        if not differ:
            store.remove()  # a run killed after the final write but before clean-up
            return done_meta
        if not overwrite:
            version = ""
            if "extraction_version" in differ:
                version = (
                    f"; it was computed by another version of metaug-features (extraction_version "
                    f"{done_meta.get('extraction_version', 1)}; this one computes {EXTRACTION_VERSION}, "
                    "whose features can differ)"
                )
            raise MetAugError(
                f"output folder {str(out)!r} already holds an extraction with different arguments "
                f"({', '.join(differ)} differ{version}); pass --overwrite to replace it, or choose a new --output"
            )
        _remove_our_files(out)
    if store.exists() and store.read_key_sha() != plan.state_sha:
        if _other_version_only(store.read_key(), plan.state_key):
            store.remove()  # chunks of another library version: recomputed, never mixed
        elif not overwrite:
            raise MetAugError(
                f"output folder {str(out)!r} holds an unfinished extraction with different arguments "
                "(model, layer, batch size, chunk size, device, files or shard); run that command again to finish it, "
                "pass --overwrite to discard it, or choose a new --output"
            )
        else:
            store.remove()
    if not store.exists():
        foreign = _foreign_entries(out)
        if foreign and not overwrite:
            raise MetAugError(
                f"output folder {str(out)!r} is not empty and is not a metaug-extract output "
                f"(it holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); choose a new --output"
            )
        store.write_state(plan.state_key)
    return None


def _other_version_only(old_key: dict[str, Any] | None, key: dict[str, Any]) -> bool:
    """``old_key`` (a stored resume key) names the same run as ``key`` but another
    :data:`EXTRACTION_VERSION` (a key without one predates it: version 1)."""
    if old_key is None or old_key.get("extraction_version", 1) == key["extraction_version"]:
        return False
    rest = lambda k: {n: v for n, v in k.items() if n != "extraction_version"}  # noqa: E731
    return key_sha256(rest(old_key)) == key_sha256(rest(key))


def _chunk_features(store: PartialStore, plan: "_Plan") -> Iterator[np.ndarray]:
    """The features of this run's chunks, one chunk [n_k, D] at a time, in order."""
    for k in plan.chunks:
        yield _load_chunk_or_fail(store, k, plan.bounds[k], plan.state_sha).features
        _return_free_memory()


def _load_chunk_or_fail(store: PartialStore, k: int, bound: tuple[int, int], state_sha: str) -> ChunkResult:
    c = store.load_chunk(k, bound[0], bound[1], state_sha)
    if c is None:  # only if .partial was changed by someone else during the run
        raise MetAugError(f"{store.dir}: finished chunk {k} disappeared or is damaged; run the same command again")
    return c


def _compute_chunks(
    enc, files: FileList, bounds: list[tuple[int, int]], pending: list[int], layer: str, batch_size: int,
    decoding: Decoding, dev: torch.device, store: PartialStore, state_sha: str, bar,
) -> None:
    """Decode and encode the ``pending`` chunks, writing each as soon as it is complete.

    One decoding pool over all pending batches (workers start once); batches are cut inside
    each chunk, so the order of the batches tells where a chunk ends.
    """
    batches: list[list[int]] = []
    batch_chunk: list[int] = []
    for k in pending:
        s, e = bounds[k]
        for b in range(s, e, batch_size):
            batches.append(list(range(b, min(b + batch_size, e))))
            batch_chunk.append(k)
    dataset = FileDataset(files.entries, enc.preprocess.load_image)
    raw = decode_batches(dataset.__getitem__, batches, decoding)
    decoded = (collate_decoded(items) for items in raw)
    was_training = enc.training
    enc.eval()
    # Batches come in plan order; the plan says which batch closes a chunk.
    closes_chunk = [j == len(batches) - 1 or batch_chunk[j + 1] != batch_chunk[j] for j in range(len(batches))]
    dim = enc.feature_dim(layer)
    current: ChunkResult | None = None
    feats: list[np.ndarray] = []
    try:
        with bar, torch.inference_mode():
            for (row_idx, images, skipped, n), k, closes in zip(decoded, batch_chunk, closes_chunk):
                if current is None:
                    current = ChunkResult(index=k, start=bounds[k][0], stop=bounds[k][1],
                                          features=np.empty((0, dim), np.float32))
                if images is not None:
                    if dev.type == "cuda":
                        images = images.pin_memory()
                    x = enc.preprocess.to_input(images.to(dev, non_blocking=True))
                    feats.append(enc(x, layer).float().cpu().numpy())  # [b, D]
                current.rows.extend(row_idx)
                current.skipped.extend(skipped)
                bar.update(n)
                if closes:
                    if feats:
                        current.features = np.concatenate(feats)
                    store.write_chunk(current, state_sha)
                    current, feats = None, []
                    _return_free_memory()
    finally:
        raw.close()  # stops the decoding workers, also when encoding failed
        enc.train(was_training)


# ---------------------------------------------------------------------- merge
def merge_shards(
    shard_dirs: Sequence[str | os.PathLike], output: str | os.PathLike, fmt: str = "npy", overwrite: bool = False
) -> ExtractSummary:
    """Join the feature folders of all shards ``0/n .. n-1/n`` of one extraction into
    ``output``; the result is byte-identical to the unsharded run's folder (for parquet: when
    written with the same pyarrow version, which the file records). The shards may be of any
    format; ``fmt`` is the merged folder's.

    Checks that every shard is present exactly once and that all come from the same model,
    layer, batch size, chunk size, device type, file list and extraction version; features are streamed, so
    memory does not grow with the number of rows.
    """
    t0 = time.perf_counter()
    _check_format(fmt)
    if not shard_dirs:
        raise MetAugError("--merge needs the shard output folders as PATH arguments")
    metas = []
    for d in shard_dirs:
        m = _read_meta(Path(d))
        if m is None:
            raise MetAugError(
                f"{os.fspath(d)!r} is not a finished shard output (no readable {METADATA}); "
                "run (or finish) that shard's metaug-extract command first"
            )
        if not m.get("shard"):
            raise MetAugError(f"{os.fspath(d)!r} is not a shard output (it was extracted without --shard)")
        metas.append((m["shard"]["index"], Path(d), m))
    metas.sort(key=lambda t: t[0])
    count = metas[0][2]["shard"]["count"]
    if any(m.get("result_key_sha256") != metas[0][2].get("result_key_sha256") for _, _, m in metas) or any(
        m["shard"]["count"] != count for _, _, m in metas
    ):
        raise MetAugError(
            "the shard folders come from different extractions (model, layer, batch size, chunk size, files, shard count "
            "or the metaug-features extraction_version differ)"
        )
    indices = [i for i, _, _ in metas]
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        dup = sorted({i for i in indices if indices.count(i) > 1})
        raise MetAugError(
            f"need each of the {count} shards exactly once"
            + (f"; missing: {', '.join(f'{i}/{count}' for i in missing)}" if missing else "")
            + (f"; given twice: {', '.join(f'{i}/{count}' for i in dup)}" if dup else "")
        )
    ranges = [m["shard"]["files"] for _, _, m in metas]
    if ranges[0][0] != 0 or ranges[-1][1] != metas[0][2]["num_files"] or any(a[1] != b[0] for a, b in zip(ranges, ranges[1:])):
        raise MetAugError("the shards' file ranges do not tile the file list; re-run the shards with the same arguments")

    out = Path(output).absolute()
    if any(out == d.absolute() for _, d, _ in metas):
        raise MetAugError("--output must be a new folder, not one of the shard folders")
    check_output_writable(out)
    done = _read_meta(out)
    if done is not None and done.get("result_key_sha256") != metas[0][2]["result_key_sha256"] and not overwrite:
        raise MetAugError(f"output folder {str(out)!r} already holds a different extraction; pass --overwrite or choose a new --output")
    if done is None and _foreign_entries(out) and not overwrite:
        raise MetAugError(f"output folder {str(out)!r} is not empty and is not a metaug-extract output; choose a new --output")
    if done is not None:
        (out / METADATA).unlink()

    paths: list[str] = []
    labels: list[str] = []
    skipped: list[tuple[str, str]] = []
    for _, d, _ in metas:
        rows = _read_manifest(d)
        paths += [p for p, _ in rows]
        labels += [l for _, l in rows]
        skipped += _read_skipped(d)
    meta = {k: v for k, v in metas[0][2].items() if k not in ("format_version", "num_rows", "dim", "num_skipped", "features_file", "features_sha256")}
    meta["shard"] = None
    dim = int(metas[0][2]["dim"])

    def blocks() -> Iterator[np.ndarray]:
        for _, d, _ in metas:
            yield from iter_feature_rows(d)

    write_feature_folder(out, blocks, num_rows=len(paths), dim=dim, paths=paths, labels=labels,
                         skipped=skipped, meta=meta, fmt=fmt)
    return ExtractSummary(
        output=out, num_files=int(meta["num_files"]), num_rows=len(paths), num_skipped=len(skipped), dim=dim,
        layer=meta.get("layer"), skipped=skipped, seconds=time.perf_counter() - t0,
    )


def _read_manifest(folder: Path) -> list[tuple[str, str]]:
    with open(folder / MANIFEST, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.reader(f))[1:]
    return [(r[1], r[2]) for r in rows]


__all__ = [
    "extract_features", "merge_shards", "ExtractSummary", "StrictModeError", "FileDataset",
    "collate_decoded", "resolve_device", "default_workers", "format_skip_reason", "EXTRACTION_VERSION", "FORMATS",
]
