"""List (and read) the images of a tar archive: the archive half of the library's listing.

Training reads the CIFAR-10 JPEG archive (``*.tar.gz`` / ``*.tgz`` / ``*.tar``) laid out
``<top>/<split>/<class>/<file>`` without unpacking it. The members follow the same rules as a
walked folder (:mod:`metaug_features.file_list`): names with a component starting with ``.``
are ignored, a member whose extension is not an image extension is listed as skipped
(``"not an image file extension"``), entries are sorted by their path bytes and the label is
the parent folder name (:func:`~metaug_features.file_list.label_of`).

The root of the relative paths is ``<top>/<split>/`` when any member lies there, else
``<top>/`` (the whole archive).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from .file_list import FileEntry, FileList, entry_for, has_image_extension, sort_key

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an existing file named like a tar archive."""
    p = Path(path)
    return p.is_file() and p.name.lower().endswith(ARCHIVE_SUFFIXES)


def _parts(member: tarfile.TarInfo) -> list[str] | None:
    """Path components of a regular-file member, or None when it is not listed (not a
    regular file, or hidden: a component starting with ``.``)."""
    if not member.isfile():
        return None
    parts = [p for p in member.name.strip("/").split("/") if p not in ("", ".")]
    if not parts or any(p.startswith(".") for p in parts):
        return None
    return parts


def archive_has_split(path: str | os.PathLike, split: str) -> bool:
    """Whether the archive holds image members ``<top>/<split>/...``."""
    if not split:
        return False
    with tarfile.open(path, "r:*") as tar:
        for m in tar:
            parts = _parts(m)
            if parts and len(parts) >= 3 and parts[1] == split and has_image_extension(parts[-1]):
                return True
    return False


def read_archive(path: str | os.PathLike, split: str) -> tuple[FileList, dict[str, bytes]]:
    """The sorted entries of an archive (``entry.path`` = ``entry.rel`` = the member's path
    below the root) and the bytes of its image members, keyed by that path.

    One streaming pass: random access into a gzip stream would re-decompress from the start.
    Only image members are read into memory.
    """
    under_split: dict[str, FileEntry] = {}
    everything: dict[str, FileEntry] = {}
    data_split: dict[str, bytes] = {}
    data_all: dict[str, bytes] = {}
    with tarfile.open(path, "r:*") as tar:
        for m in tar:
            parts = _parts(m)
            if parts is None:
                continue
            in_split = bool(split) and len(parts) >= 3 and parts[1] == split
            if not in_split and under_split:
                continue  # the split exists: members outside it are not part of it
            rel = "/".join(parts[2:] if in_split else (parts[1:] if len(parts) > 1 else parts))
            entry = entry_for(rel, rel)
            data = tar.extractfile(m).read() if entry.skip_reason is None else b""
            if in_split:
                under_split[rel], data_split[rel] = entry, data
            else:
                everything[rel], data_all[rel] = entry, data
    entries, data = (under_split, data_split) if under_split else (everything, data_all)
    listing = FileList(root=os.fspath(path), entries=tuple(sorted(entries.values(), key=lambda e: sort_key(e.rel))))
    return listing, data


__all__ = ["ARCHIVE_SUFFIXES", "archive_has_split", "is_archive", "read_archive"]
