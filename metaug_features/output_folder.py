"""The output folder of an extraction: what it may hold, and what a run does with it.

A folder given as ``--output`` is in one of these states, decided by :func:`claim_output`
before any image is decoded:

* **this run, finished** (``extract.json`` whose result key, shard and format match): nothing
  is recomputed; a leftover ``.partial/`` (killed between the final write and clean-up) goes;
* **this run, unfinished** (``.partial/state.json`` with this run's key): resume;
* **unfinished, another extraction_version only**: its chunks are dropped and recomputed;
* **empty or new**: start (``.partial/state.json`` is written);
* **anything else** (another finished or unfinished run, foreign files): a
  :class:`~metaug_features.errors.MetAugError` unless ``overwrite``, which removes only the
  files an extraction writes (never anything else in the folder).

Also the readers of a finished folder's ``extract.json``, ``skipped.csv`` and ``manifest.csv``
used by resume and by :mod:`metaug_features.merge`.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Protocol

from .errors import MetAugError
from .extract_state import PARTIAL_DIR, PartialStore, key_sha256
from .feature_formats import (
    MANIFEST,
    METADATA,
    SKIPPED,
    feature_format,
    features_file_names,
)


def our_files() -> tuple[str, ...]:
    """Every file an extraction writes into its output folder (``--overwrite`` removes only
    these): the features file of each format, then the manifest, skipped list and metadata."""
    return (*features_file_names(), MANIFEST, SKIPPED, METADATA)


class RunKeys(Protocol):
    """The keys of a run that :func:`claim_output` compares (``extract_plan.RunPlan`` has them)."""

    result_key: dict[str, Any]
    shard_meta: dict[str, Any] | None
    state_key: dict[str, Any]
    state_sha: str


def check_format(fmt: str) -> None:
    """A known --format whose writer can run here (parquet needs pyarrow): checked before any
    image is decoded, not after hours of extraction (a row of ``FEATURE_FORMATS``)."""
    feature_format(fmt)


def read_meta(out: Path) -> dict[str, Any] | None:
    """``extract.json`` of a finished folder, or None (missing or unreadable: not finished)."""
    try:
        with open(out / METADATA, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_skipped(out: Path) -> list[tuple[str, str]]:
    """``(path, reason)`` rows of ``skipped.csv`` (file names kept byte-exact)."""
    with open(out / SKIPPED, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.reader(f))[1:]
    return [(r[0], r[1]) for r in rows]


def remove_our_files(out: Path) -> None:
    """--overwrite: remove what an extraction writes (never anything else in the folder).
    extract.json goes first, so an interrupted removal never leaves a folder that looks complete."""
    for name in (METADATA, *our_files()):
        try:
            (out / name).unlink()
        except FileNotFoundError:
            pass
    PartialStore(out).remove()


def foreign_entries(out: Path) -> list[str]:
    """Names in ``out`` that an extraction did not write (its temporary files excepted)."""
    ours = set(our_files()) | {PARTIAL_DIR}
    return sorted(n for n in os.listdir(out) if n not in ours and not (n.startswith(".") and n.endswith(".tmp")))


def claim_output(out: Path, store: PartialStore, plan: RunKeys, fmt: str, overwrite: bool) -> dict[str, Any] | None:
    """Decide what the output folder holds: this finished run (returns its metadata), this
    unfinished run (resume), nothing (start), or something else (error unless ``overwrite``).

    Unfinished chunks of another ``extraction_version`` (same arguments otherwise) are
    discarded and recomputed without asking: no command of this version could finish them
    consistently, and they are only a cache. A *finished* folder of another version is kept
    unless ``overwrite``: it is a complete result, just not this version's.
    """
    done_meta = read_meta(out)
    if done_meta is not None:
        differ = [k for k in plan.result_key if done_meta.get(k) != plan.result_key[k]]
        if done_meta.get("shard") != plan.shard_meta:
            differ.append("shard")
        if done_meta.get("features_file") != feature_format(fmt).file:
            differ.append("format")
        if not differ:
            store.remove()  # a run killed after the final write but before clean-up
            return done_meta
        if not overwrite:
            version = ""
            if "extraction_version" in differ:
                version = (
                    f"; it was computed by another version of metaug-features (extraction_version "
                    f"{done_meta.get('extraction_version', 1)}; this one computes {plan.result_key['extraction_version']}, "
                    "whose features can differ)"
                )
            raise MetAugError(
                f"output folder {str(out)!r} already holds an extraction with different arguments "
                f"({', '.join(differ)} differ{version}); pass --overwrite to replace it, or choose a new --output"
            )
        remove_our_files(out)
    if store.exists() and store.read_key_sha() != plan.state_sha:
        if other_version_only(store.read_key(), plan.state_key):
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
        foreign = foreign_entries(out)
        if foreign and not overwrite:
            raise MetAugError(
                f"output folder {str(out)!r} is not empty and is not a metaug-extract output "
                f"(it holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); choose a new --output"
            )
        store.write_state(plan.state_key)
    return None


def other_version_only(old_key: dict[str, Any] | None, key: dict[str, Any]) -> bool:
    """``old_key`` (a stored resume key) names the same run as ``key`` but another
    ``extraction_version`` (a key without one predates it: version 1)."""
    if old_key is None or old_key.get("extraction_version", 1) == key["extraction_version"]:
        return False
    rest = lambda k: {n: v for n, v in k.items() if n != "extraction_version"}  # noqa: E731
    return key_sha256(rest(old_key)) == key_sha256(rest(key))


def read_manifest(folder: Path) -> list[tuple[str, str]]:
    """``(path, label)`` of every row of ``manifest.csv``."""
    with open(folder / MANIFEST, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.reader(f))[1:]
    return [(r[1], r[2]) for r in rows]


__all__ = [
    "our_files", "RunKeys", "check_format", "claim_output", "foreign_entries", "other_version_only",
    "read_manifest", "read_meta", "read_skipped", "remove_our_files",
]
