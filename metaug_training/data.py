"""Training data: decode a dataset once into a uint8 array, cache it, serve index batches.

docs/METHODS.md section 10: decoding JPEGs costs ~4,000 img/s per core, far more than a training step can
afford, so every image is decoded once into ``images`` (uint8 ``[N, S, S, 3]``, ~150 MB for
CIFAR-10 at S = 32) and cached as ``.npy`` (written atomically) keyed by the source's file list,
sizes and times. Augmentation then works on whole batches of tensors (``augment.py``).

Listing, labels and decoding are the library's (the same path as ``metaug-extract``), so a
folder gives the same files, order, labels and skips in training and in extraction:

- an image folder: ``<path>/<split>/`` when that sub-folder exists, else ``<path>`` itself,
  listed by :func:`metaug_features.file_list.collect_files` (hidden names ignored, symbolic
  links to folders not descended, files sorted by their path bytes). The **label** of an image
  is the name of its parent folder, as ImageFolder does (``a/b/x.jpg`` -> ``b``); images
  directly in the root get label -1 (:func:`metaug_features.file_list.label_indices`).
- the CIFAR-10 JPEG archive (``*.tar.gz``/``*.tgz``/``*.tar``) laid out
  ``<top>/<split>/<class>/<file>``: members are listed and read straight from the archive
  (:mod:`metaug_features.archive_list`), with the same rules.

Decoding runs in ``num_workers`` processes of the library's decode pool
(:mod:`metaug_features.decode_pool`): a file that takes longer than
``DEFAULT_DECODE_TIME_LIMIT_S`` or crashes its decoder is skipped, and the run goes on
(``num_workers=0`` decodes in the main process, without a time limit). Every file that gives
no image -- undecodable, past the time limit, crashed, or not an image file extension -- is
listed with its reason in ``ImageArray.skipped`` (the trainer logs the count and an example),
never fatal unless no image at all decodes (a :class:`ConfigError`).

The sample index (the memory-bank slot) of every image is its position in the sorted list of
decoded images, so it is deterministic. Each image is decoded to RGB with EXIF orientation (the
library's ``Preprocessor.open_image``), its centred square is resampled to ``S x S``
(bilinear); CIFAR-10 at S = 32 is kept as stored.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from metaug_features.archive_list import archive_has_split, is_archive, read_archive
from metaug_features.atomic import atomic_write, atomic_write_text
from metaug_features.config import EncoderConfig
from metaug_features.decode_pool import DEFAULT_DECODE_TIME_LIMIT_S, Decoding
from metaug_features.errors import ConfigError, ImageDecodeError
from metaug_features.file_decode import batch_ranges, decode_files
from metaug_features.file_list import FileEntry, collect_files, label_indices, sort_key
from metaug_features.preprocess import Preprocessor, center_box

#: Bump when the decoded pixels of the same files would change (invalidates caches).
CACHE_VERSION = 1
#: Files per decoding batch (the unit handed to one worker; also the progress-bar step).
DECODE_BATCH = 256


@dataclass
class ImageArray:
    """A decoded dataset.

    images: uint8 ``[N, S, S, 3]`` (numpy).
    labels: int64 ``[N]``, index into ``classes`` of the image's parent folder name (the library's
        label rule, as in an extraction's manifest); -1 for an image directly in the root.
    paths: relative path of each row (sorted order).
    classes: class names (sorted); empty for a flat folder.
    skipped: ``(relative path, reason)`` of files that gave no image (sorted by path), with the
        reasons an extraction writes into ``skipped.csv``.
    fingerprint: hash of the source listing + decode settings (checked on resume).
    """

    images: np.ndarray
    labels: np.ndarray
    paths: list[str]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    fingerprint: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])


class IndexedImages(torch.utils.data.Dataset):
    """Map-style dataset over an :class:`ImageArray` that yields the sample index.

    ``ds[i] -> (uint8 [3, S, S], i)``: the index is the memory-bank slot of the image. The
    trainer does not iterate this per sample (it gathers whole batches with :meth:`batch`),
    but it keeps the usual Dataset interface for tools that do.
    """

    def __init__(self, data: ImageArray) -> None:
        self.data = data
        # One tensor view over the array; no copy of 150 MB.
        self._images = torch.from_numpy(np.ascontiguousarray(data.images))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self._images[i].permute(2, 0, 1), int(i)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, S, S]`` for a LongTensor of indices ``[B]`` (one gather, no loop)."""
        return self._images.index_select(0, idx.cpu()).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------- listing and decoding


def split_exists(path: str, split: str) -> bool:
    """Whether ``path`` (folder or archive) holds a ``split`` sub-folder of images (for an
    archive: members ``<top>/<split>/...``); without one, loading that split reads everything."""
    src = resolve_source(path)
    if not split:
        return False
    if not is_archive(src):
        return (src / split).is_dir()
    return archive_has_split(src, split)


class SquareLoader:
    """A file -> uint8 ``[3, S, S]``: RGB + EXIF orientation (``Preprocessor.open_image``), its
    centred square resampled to ``S x S`` (bilinear); an image already ``S x S`` is kept as is.

    Args:
        size: side S.
        members: for an archive, the bytes of each member keyed by its relative path (the
            entries' ``path``); None for files on disk.

    Runs in the decode pool's workers (forked, so ``members`` is shared, not copied). Raises
    :class:`ImageDecodeError` for a bad file; the pool turns that into a skip reason.
    """

    def __init__(self, size: int, members: dict[str, bytes] | None = None) -> None:
        self.size = size
        self.members = members
        self.pre = Preprocessor(EncoderConfig())

    def open(self, path: str) -> Image.Image:
        """The decoded RGB image of ``path`` (a file, or an archive member's name)."""
        if self.members is None:
            return self.pre.open_image(path)
        data = self.members[path]
        if not data:
            raise ImageDecodeError("empty file")
        try:
            img = Image.open(io.BytesIO(data))
        except Exception:  # noqa: BLE001 - any decoder failure is a skip
            raise ImageDecodeError("not a readable image") from None
        return self.pre.open_image(img)

    def __call__(self, path: str) -> torch.Tensor:
        img = self.open(path)
        if img.size != (self.size, self.size):
            box = center_box(img.width, img.height, self.size, self.size)
            img = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()  # [3, S, S]


def decode_items(entries: Sequence[FileEntry], loader: SquareLoader, num_workers: int = 0,
                 progress: bool = False) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Decode ``entries`` to uint8 ``[M, S, S, 3]`` through the library's decode pool.

    Returns the array of the good images (in input order), their positions in ``entries`` and
    ``(position, reason)`` of the skipped ones (pre-skipped by the listing, undecodable, past the
    time limit or crashing their worker).
    """
    size = loader.size
    out = np.empty((len(entries), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(entries), dtype=bool)
    bad: list[tuple[int, str]] = []
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(entries), desc="decoding images", unit="img", disable=not progress or None)
    except ImportError:  # pragma: no cover
        bar = None
    decoding = Decoding(num_workers, DEFAULT_DECODE_TIME_LIMIT_S)
    for rows, images, skipped, n in decode_files(entries, loader, batch_ranges(0, len(entries), DECODE_BATCH), decoding):
        if images is not None:
            out[rows] = images.permute(0, 2, 3, 1).numpy()  # [b, 3, S, S] -> [b, S, S, 3]
            ok[rows] = True
        bad += skipped
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    good = np.flatnonzero(ok)
    return (out if ok.all() else out[good]), good.tolist(), bad


# ---------------------------------------------------------------------- the cached array


def resolve_source(path: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(
            f"config key 'data.path': {path} does not exist (give an image folder or the CIFAR-10 archive, "
            "e.g. data.path=../shared/data/cifar10-jpeg.tar.gz)"
        )
    return p.resolve()


def load_image_array(path: str, split: str = "train", size: int = 32, cache_dir: str | None = None,
                     limit: int = 0, num_workers: int = 0, progress: bool = False,
                     max_size: int | None = None) -> ImageArray:
    """Decode (or read from the cache) the dataset at ``path`` into an :class:`ImageArray`.

    Args:
        path: image folder or CIFAR-10 archive (see the module docstring).
        split: sub-folder to use when present (e.g. "train").
        size: side S of the stored images; 0 = the shorter side of the first image, capped at
            ``max_size`` (so CIFAR-10 stays 32 x 32 even for a 224-pixel encoder, whose crops
            upsample it, while a folder of large photos is stored at ``max_size``).
        cache_dir: folder for the ``.npy`` cache; None disables caching.
        limit: keep the first ``limit`` images in sorted order (0 = all).
        num_workers: decoding processes of the library's decode pool, with its per-file time
            limit and crash isolation (0 = decode in this process, without a time limit).

    Raises:
        ConfigError: ``path`` missing or not a folder / archive, no image in it, or none decodable.
    """
    src = resolve_source(path)
    members: dict[str, bytes] | None = None
    if is_archive(src):
        entries = None
        stat = src.stat()
        listing_key: list = [str(src), stat.st_size, int(stat.st_mtime)]
    elif src.is_dir():
        root = src / split if (split and (src / split).is_dir()) else src
        entries = list(collect_files([root]).entries)
        # Sizes and mtimes of every image: an edited image invalidates the cache; files skipped
        # by the listing are keyed by their reason (the cached skip list must stay true).
        listing_key = [str(root)] + [[e.rel, *_stat(Path(e.path))] if e.skip_reason is None else [e.rel, e.skip_reason]
                                     for e in entries]
    else:
        raise ConfigError(f"config key 'data.path': {path} is neither a folder nor a .tar.gz/.tar archive")
    # The cache key: source listing (path, sizes, times), decode settings. An archive is keyed
    # by its own size and time, so its members need not be read to find the cache.
    key = hashlib.sha256(json.dumps([CACHE_VERSION, listing_key, split, size, max_size, limit]).encode()).hexdigest()
    cache = Path(cache_dir).expanduser() / f"{src.name}-{split or 'all'}-{size or 'auto'}px-{key[:16]}" if cache_dir else None
    if cache is not None and (cache / "meta.json").is_file():
        try:
            return _read_cache(cache, key)
        except (OSError, ValueError, KeyError):
            pass  # a damaged or partial cache is rebuilt below
    if entries is None:
        listing, members = read_archive(src, split)
        entries = list(listing.entries)
    # Files the listing already skips are reported, never decoded; `limit` counts images only.
    pre_skipped = [(e.rel, e.skip_reason) for e in entries if e.skip_reason is not None]
    entries = [e for e in entries if e.skip_reason is None]
    if limit:
        entries = entries[:limit]
    if not entries:
        raise ConfigError(f"config key 'data.path': no images found in {path} (split {split!r})")
    if not size:
        size = _probe_size(SquareLoader(0, members), entries, max_size)
    images, good, bad = decode_items(entries, SquareLoader(size, members), num_workers=num_workers, progress=progress)
    kept = [entries[i].rel for i in good]
    labels, classes = label_indices([entries[i].label for i in good])
    skipped = sorted(pre_skipped + [(entries[i].rel, r) for i, r in bad], key=lambda t: sort_key(t[0]))
    data = ImageArray(images, labels, kept, classes, skipped, dataset_fingerprint(kept, size))
    if not len(data):
        raise ConfigError(f"config key 'data.path': none of the {len(entries)} images in {path} could be decoded")
    if cache is not None:
        _write_cache(cache, data, key)
    return data


def _probe_size(loader: SquareLoader, entries: Sequence[FileEntry], max_size: int | None) -> int:
    """Shorter side of the first decodable image (of the first 16), capped at ``max_size``."""
    for e in entries[:16]:
        try:
            img = loader.open(e.path)
        except (ImageDecodeError, OSError):
            continue
        side = min(img.size)
        return min(side, max_size) if max_size else side
    return max_size or 32


def _stat(p: Path) -> tuple[int, int]:
    s = p.stat()
    return s.st_size, s.st_mtime_ns


def dataset_fingerprint(paths: Sequence[str], size: int) -> str:
    """Hash of the sample order and image size: equal on any machine that decodes the same
    files, so a resume can check that sample index i is still the same image."""
    return hashlib.sha256(json.dumps([list(paths), size]).encode()).hexdigest()[:32]


def _write_cache(cache: Path, data: ImageArray, key: str) -> None:
    """images.npy, labels.npy, then meta.json last (its presence marks a complete cache)."""
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_write(cache / "images.npy", "wb") as f:
        np.save(f, data.images)
    with atomic_write(cache / "labels.npy", "wb") as f:
        np.save(f, data.labels)
    meta = {"key": key, "fingerprint": data.fingerprint, "paths": data.paths, "classes": data.classes, "skipped": data.skipped}
    atomic_write_text(cache / "meta.json", json.dumps(meta))


def _read_cache(cache: Path, key: str) -> ImageArray:
    meta = json.loads((cache / "meta.json").read_text(encoding="utf-8"))
    if meta["key"] != key:
        raise ValueError("stale cache")
    images = np.load(cache / "images.npy")
    labels = np.load(cache / "labels.npy")
    if images.shape[0] != len(meta["paths"]) or labels.shape[0] != len(meta["paths"]):
        raise ValueError("inconsistent cache")
    return ImageArray(images, labels, meta["paths"], meta["classes"],
                      [tuple(s) for s in meta["skipped"]], meta["fingerprint"])


# ---------------------------------------------------------------------- batch order


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of one epoch: a permutation of ``[0, N)`` that depends only on
    (seed, epoch), identical on every rank and after a resume."""
    g = torch.Generator().manual_seed(_mix(seed, 0x5EED, epoch))
    return torch.randperm(num_samples, generator=g)


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Full global batches per epoch (the incomplete last batch is dropped, as CMC does)."""
    return num_samples // batch_size


def global_batch_indices(num_samples: int, batch_size: int, seed: int, epoch: int, step_in_epoch: int,
                         perm: torch.Tensor | None = None) -> torch.Tensor:
    """Dataset indices ``[batch_size]`` of global step ``step_in_epoch`` of ``epoch``. Rank r of
    W (micro-batch a of A) takes the contiguous slice r*A + a of size batch_size / (W*A)."""
    if perm is None:
        perm = epoch_permutation(num_samples, seed, epoch)
    return perm[step_in_epoch * batch_size:(step_in_epoch + 1) * batch_size]


def _mix(*xs: int | str) -> int:
    """A 63-bit seed from ints / strings (deterministic, well spread; Python's hash is salted)."""
    h = hashlib.blake2b(repr(xs).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def step_generator(seed: int, stream: str, step: int) -> torch.Generator:
    """A CPU generator for one random stream ("augment", "negatives") at one global step.
    Deriving it from (seed, stream, step) makes a resumed run draw exactly the same numbers
    without saving generator states, and makes every rank draw the same global numbers."""
    return torch.Generator().manual_seed(_mix(seed, stream, step))
