"""Turn the PATH arguments of an extraction into one sorted, labelled list of files.

Rules (documented in ``metaug-extract --help`` and relied on by resume and sharding, which
both need the list to come out identical every time it is built from the same folder):

* The **root** is the deepest folder containing every argument: a single folder argument is
  its own root; a file argument contributes its parent folder.
* Folders are walked recursively. Names starting with ``.`` (hidden files and folders, e.g.
  ``.DS_Store`` or an extraction's own ``.partial``) are ignored, and so is the extraction's
  output folder when it lies inside the root. Symbolic links to files are followed; symbolic
  links to folders are not descended (so a link loop cannot hang the walk).
* A walked file whose extension is not an image extension (:data:`IMAGE_EXTENSIONS`, case
  insensitive) is not decoded but listed in ``skipped.csv`` as ``"not an image file
  extension"``, so nothing in the folder disappears silently. A file named explicitly on the
  command line is always decoded, whatever its extension.
* A walked entry that is not a regular file (FIFO, socket, device) is listed as ``"not a
  regular file"``: opening a FIFO would block forever.
* Relative paths use ``/`` separators and are sorted by their bytes (``os.fsencode``), which
  is well defined even for file names that are not valid UTF-8 (they are carried as ``str``
  with surrogate escapes, exactly as ``os.listdir`` returns them).
* The **label** of a file is the name of its parent folder, as torchvision's ImageFolder
  does; a file directly in the root has the label ``""`` (:func:`label_of`). In a nested
  tree, ``root/animals/cat/x.jpg`` is labelled ``cat``, not ``animals``. This one rule serves
  extraction (the manifest's ``label``), evaluation and training, where
  :func:`label_indices` numbers the labels (sorted class names; ``""`` becomes -1).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import MetAugError

#: Extensions decoded when found by walking a folder (torchvision's IMG_EXTENSIONS + .gif).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif",
)
REASON_NOT_IMAGE_EXT = "not an image file extension"
REASON_NOT_REGULAR = "not a regular file"
REASON_UNLISTABLE = "folder cannot be listed"


@dataclass(frozen=True)
class FileEntry:
    """One file of the extraction.

    Attributes:
        path: absolute path to open (``str``, surrogate-escaped if not UTF-8).
        rel: path relative to the root, ``/``-separated (the manifest's ``path``).
        label: parent folder name, ``""`` for files directly in the root.
        skip_reason: set when the file is known to be skipped without decoding it.
    """

    path: str
    rel: str
    label: str
    skip_reason: str | None = None


@dataclass(frozen=True)
class FileList:
    """The sorted files of an extraction and the folder their relative paths start from."""

    root: str
    entries: tuple[FileEntry, ...]

    def __len__(self) -> int:
        return len(self.entries)

    def sha256(self) -> str:
        """Hash of the list (relative path bytes and pre-decoding skip reasons, in order).

        Ties resume chunks and shards to the exact list they were computed from; absolute
        paths are left out so shards computed on different machines can be merged.
        """
        h = hashlib.sha256()
        for e in self.entries:
            h.update(os.fsencode(e.rel))
            h.update(b"\0")
            h.update((e.skip_reason or "").encode("utf-8"))
            h.update(b"\n")
        return h.hexdigest()


def sort_key(rel: str) -> bytes:
    """Sort key of a relative path: its file-system bytes (defined for non-UTF-8 names)."""
    return os.fsencode(rel)


def has_image_extension(name: str) -> bool:
    """Whether a file name ends in one of :data:`IMAGE_EXTENSIONS` (case insensitive)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def common_root(paths: Sequence[str]) -> str:
    """Deepest folder containing every (absolute) path; files contribute their parent."""
    dirs = [p if os.path.isdir(p) else os.path.dirname(p) for p in paths]
    return os.path.commonpath(dirs)


def _rel(path: str, root: str) -> str:
    rel = os.path.relpath(path, root)
    return rel.replace(os.sep, "/")


def label_of(rel: str) -> str:
    """The label of a file from its ``/``-separated path relative to the root: the name of its
    parent folder (as torchvision's ImageFolder), ``""`` for a file directly in the root."""
    parts = rel.split("/")
    return parts[-2] if len(parts) > 1 else ""


_label = label_of  # the walk below calls it once per file


def label_indices(labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Number the labels of :func:`label_of`: class names sorted, ``""`` (a file directly in the
    root, no class) -> -1.

    Returns:
        int64 ``[N]`` indices into the class list, and the sorted class names (empty when no
        file has a class, e.g. a flat folder).
    """
    classes = sorted({name for name in labels if name})
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(name, -1) for name in labels], dtype=np.int64), classes


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _walk(folder: str, root: str, exclude: str | None) -> Iterable[FileEntry]:
    """Yield the entries under ``folder`` (unsorted; the caller sorts)."""
    unlistable: list[str] = []

    def onerror(err: OSError) -> None:
        unlistable.append(err.filename if err.filename else folder)

    for dirpath, dirnames, filenames in os.walk(folder, onerror=onerror, followlinks=False):
        # Prune hidden folders and the output folder in place so os.walk does not descend.
        dirnames[:] = [
            d for d in dirnames
            if not d.startswith(".") and not (exclude and _inside(os.path.join(dirpath, d), exclude))
        ]
        for name in filenames:
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            rel = _rel(full, root)
            try:
                st = os.stat(full)  # follows symlinks: a link to a file is a file
            except OSError:
                # A dangling symlink or a file that vanished: report, do not crash.
                yield FileEntry(full, rel, _label(rel), "file not found (dangling link or removed)")
                continue
            if stat.S_ISDIR(st.st_mode):
                continue  # symlink to a folder: not descended (documented)
            if not stat.S_ISREG(st.st_mode):
                yield FileEntry(full, rel, _label(rel), REASON_NOT_REGULAR)
            elif not has_image_extension(name):
                yield FileEntry(full, rel, _label(rel), REASON_NOT_IMAGE_EXT)
            else:
                yield FileEntry(full, rel, _label(rel), None)
    for d in unlistable:
        rel = _rel(d, root)
        yield FileEntry(d, rel, _label(rel), REASON_UNLISTABLE)


def entry_for(path: str, rel: str) -> FileEntry:
    """The entry of a regular file that was not found by walking a folder (e.g. an archive
    member): skipped without decoding when its extension is not an image extension."""
    name = rel.rsplit("/", 1)[-1]
    return FileEntry(path, rel, label_of(rel), None if has_image_extension(name) else REASON_NOT_IMAGE_EXT)


def collect_files(paths: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None) -> FileList:
    """Build the sorted file list of an extraction (see the module docstring for the rules).

    Args:
        paths: folders and/or files, as given on the command line.
        exclude: a folder never to list (the extraction's output folder).

    Raises:
        MetAugError: no paths, or a path that does not exist (raised before any work, naming
            every missing path).
    """
    if not paths:
        raise MetAugError("no input paths given; pass one or more image folders or files")
    abs_paths = [os.path.abspath(os.fspath(p)) for p in paths]
    missing = [os.fspath(p) for p, a in zip(paths, abs_paths) if not os.path.exists(a)]
    if missing:
        raise MetAugError(
            "input path(s) not found: " + ", ".join(repr(m) for m in missing)
            + "; check the spelling or the current folder"
        )
    root = common_root(abs_paths)
    excl = os.path.abspath(os.fspath(exclude)) if exclude is not None else None
    by_rel: dict[str, FileEntry] = {}
    for p in abs_paths:
        if os.path.isdir(p):
            if p == excl:
                continue  # the output folder itself is never an input
            for e in _walk(p, root, excl):
                by_rel.setdefault(e.rel, e)  # an overlapping argument lists a file once
        else:
            rel = _rel(p, root)
            reason = None if stat.S_ISREG(os.stat(p).st_mode) else REASON_NOT_REGULAR
            by_rel.setdefault(rel, FileEntry(p, rel, _label(rel), reason))
    entries = tuple(sorted(by_rel.values(), key=lambda e: sort_key(e.rel)))
    return FileList(root=root, entries=entries)


def chunk_bounds(num_files: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` file-index ranges of the fixed-size chunks of a list."""
    return [(s, min(s + chunk_size, num_files)) for s in range(0, num_files, chunk_size)]


def shard_bounds(num_files: int, index: int, count: int) -> tuple[int, int]:
    """Files ``[first, last)`` of shard ``index`` of ``count`` (0-based) of a sorted list.

    Shard i gets files ``[floor(i F / N), floor((i + 1) F / N))``: the shards partition the
    list, in order, with sizes differing by at most one, whatever F and N (a shard is empty
    only when N > F), so concatenating the shards' outputs in shard order gives the single-run
    output. The unit is the file, not the resume chunk: chunks live inside a shard.
    """
    return index * num_files // count, (index + 1) * num_files // count


def chunk_parts(bounds: Sequence[tuple[int, int]], first: int, last: int) -> list[tuple[int, int, int]]:
    """``(k, start, stop)``: each chunk ``k`` of ``bounds`` that meets files ``[first, last)``,
    clipped to them (the whole chunks when the range is the whole list; none when it is empty)."""
    return [(k, max(s, first), min(e, last)) for k, (s, e) in enumerate(bounds) if max(s, first) < min(e, last)]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Parse ``"I/N"`` (0 <= I < N) into ``(I, N)``; ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise MetAugError(f"--shard {text!r}: expected I/N, e.g. 0/4 (I counts from 0)") from None
    if n < 1 or not 0 <= i < n:
        raise MetAugError(f"--shard {text!r}: need 0 <= I < N (I counts from 0: shards 0/{n} .. {max(n - 1, 0)}/{n})")
    return i, n


__all__ = [
    "FileEntry", "FileList", "IMAGE_EXTENSIONS", "collect_files", "chunk_bounds", "chunk_parts", "shard_bounds",
    "parse_shard", "sort_key", "has_image_extension", "common_root", "label_of", "label_indices", "entry_for",
    "REASON_NOT_IMAGE_EXT", "REASON_NOT_REGULAR", "REASON_UNLISTABLE",
]
