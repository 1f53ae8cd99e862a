"""Join the shard folders of one extraction into the single-run output (``metaug-extract --merge``).

``extract_features(..., shard=(i, n))`` computes a contiguous 1/n of the sorted file list
(:func:`~metaug_features.file_list.shard_bounds`; a shard may be empty when n exceeds the file
count, and merges like any other); :func:`merge_shards` checks that the n folders are all
shards of the same extraction (same result key: model, layer, batch size, chunk size, device
type, file list, extraction version) whose file ranges tile the list, then streams their rows,
in shard order, into one feature folder that is byte-identical to the unsharded run's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import MetAugError
from .extract_result import ExtractSummary
from .extract_state import check_output_writable
from .feature_files import METADATA
from .feature_stream import iter_feature_rows, write_feature_folder
from .output_folder import check_format, foreign_entries, read_manifest, read_meta, read_skipped


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
    check_format(fmt)
    if not shard_dirs:
        raise MetAugError("--merge needs the shard output folders as PATH arguments")
    metas = []
    for d in shard_dirs:
        m = read_meta(Path(d))
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
    done = read_meta(out)
    if done is not None and done.get("result_key_sha256") != metas[0][2]["result_key_sha256"] and not overwrite:
        raise MetAugError(f"output folder {str(out)!r} already holds a different extraction; pass --overwrite or choose a new --output")
    if done is None and foreign_entries(out) and not overwrite:
        raise MetAugError(f"output folder {str(out)!r} is not empty and is not a metaug-extract output; choose a new --output")
    if done is not None:
        (out / METADATA).unlink()

    paths: list[str] = []
    labels: list[str] = []
    skipped: list[tuple[str, str]] = []
    for _, d, _ in metas:
        rows = read_manifest(d)
        paths += [p for p, _ in rows]
        labels += [l for _, l in rows]
        skipped += read_skipped(d)
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


__all__ = ["merge_shards"]
