"""Decode a listed file list in the decode pool: the decoding half of the one image-input path.

Extraction (:mod:`metaug_features.extract`) and training (``metaug_training.data``) both list
their files with :mod:`metaug_features.file_list` (or :mod:`metaug_features.archive_list`) and
decode them here, so both get the same skip rules:

* a file already known to be skipped from the listing (not an image extension, not a regular
  file, ...) is never opened;
* a decoder error becomes a skip reason (:func:`format_skip_reason`), never an exception;
* with ``workers >= 1`` a file that decodes past the time limit, or crashes its worker
  process, is skipped too (:mod:`metaug_features.decode_pool`); ``workers=0`` decodes in the
  calling process, without a time limit.

Only the *loader* differs between users: extraction resamples to the encoder's input
(``Preprocessor.load_image``), training to its cached square size.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch

from .decode_pool import Decoding, decode_batches
from .errors import ImageDecodeError
from .file_list import FileEntry

#: A loader: the entry's ``path`` -> uint8 ``[3, S, S]``; raises :class:`ImageDecodeError` (or
#: ``OSError``) for a bad file.
LoadImage = Callable[[str], torch.Tensor]
#: One decoded batch: (file indices of the rows, uint8 ``[b, 3, S, S]`` or None when no file of
#: the batch decoded, ``[(file index, skip reason)]``, number of files in the batch).
DecodedBatch = tuple[list[int], "torch.Tensor | None", list[tuple[int, str]], int]


def format_skip_reason(err: ImageDecodeError, path: str) -> str:
    """``reason`` plus the decoder's detail, without the (machine-specific) absolute path, so
    the skipped list of a shard computed elsewhere matches a single run's."""
    detail = err.detail or ""
    if detail.startswith(path):
        detail = detail[len(path):].lstrip(": ").strip()
    return f"{err.reason} ({detail})" if detail else err.reason


class FileDataset:
    """Item ``i`` of the sorted list -> ``(i, uint8 [3, S, S] or None, skip reason or None)``.

    Runs in the decoding worker processes (``ds[i]`` is the pool's ``decode_item``). Never
    raises for a bad file: every failure becomes a skip reason, so one broken image cannot
    kill the run. (A plain indexable class: nothing feeds it to a torch ``DataLoader``.)
    """

    def __init__(self, entries: Sequence[FileEntry], load_image: LoadImage) -> None:
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


def collate_decoded(items: list[tuple[int, torch.Tensor | None, str | None]]) -> DecodedBatch:
    """Batch of dataset items -> (row file indices, uint8 [b, 3, S, S] or None,
    [(file index, reason)], number of files in the batch)."""
    good = [(i, t) for i, t, _ in items if t is not None]
    skipped = [(i, r) for i, t, r in items if t is None]
    images = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], images, skipped, len(items)


def batch_ranges(start: int, stop: int, batch_size: int) -> list[list[int]]:
    """File indices ``[start, stop)`` cut into consecutive batches of ``batch_size``."""
    return [list(range(b, min(b + batch_size, stop))) for b in range(start, stop, batch_size)]


def decode_files(entries: Sequence[FileEntry], load_image: LoadImage, batches: Sequence[Sequence[int]],
                 decoding: Decoding) -> Iterator[DecodedBatch]:
    """Decode ``entries`` batch by batch (file indices in ``batches``), in the order given.

    Closing the iterator (or an exception in the consumer) stops the decoding workers.
    """
    dataset = FileDataset(entries, load_image)
    raw = decode_batches(dataset.__getitem__, batches, decoding)
    try:
        for items in raw:
            yield collate_decoded(items)
    finally:
        raw.close()


def decode_paths(paths: Sequence[str], load_image: LoadImage, decoding: Decoding,
                 batch_size: int = 64) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]:
    """Decode image files given by path (no listing rules: every path is opened).

    Returns:
        uint8 ``[M, 3, S, S]`` of the files that decoded (in input order; None if none did),
        their positions in ``paths``, and ``(position, skip reason)`` of the others.
    """
    entries = [FileEntry(p, p, "") for p in paths]
    rows: list[int] = []
    parts: list[torch.Tensor] = []
    bad: list[tuple[int, str]] = []
    for r, images, skipped, _ in decode_files(entries, load_image, batch_ranges(0, len(entries), batch_size), decoding):
        rows += r
        bad += skipped
        if images is not None:
            parts.append(images)
    return (torch.cat(parts) if parts else None), rows, bad


__all__ = ["FileDataset", "decode_paths", "DecodedBatch", "LoadImage", "batch_ranges", "collate_decoded", "decode_files",
           "format_skip_reason"]
