"""Training data: decode a dataset once into a uint8 array, cache it, serve index batches.

docs/METHODS.md section 10: decoding JPEGs costs ~4,000 img/s per core, far more than a training step can
afford, so every image is decoded once into ``images`` (uint8 ``[N, S, S, 3]``, ~150 MB for
CIFAR-10 at S = 32) and cached as ``.npy`` (written atomically) keyed by the source's file list,
sizes and times. Augmentation then works on whole batches of tensors (``augment.py``).

Sources (``DataConfig.path``):

- an image folder: ``<path>/<split>/`` when that sub-folder exists, else ``<path>`` itself;
  images in class sub-folders get the sub-folder name as label (as ImageFolder does), a flat
  folder gives label -1. Decoding runs in ``num_workers`` DataLoader worker processes.
- the CIFAR-10 JPEG archive (``*.tar.gz``/``*.tgz``/``*.tar``) laid out
  ``<top>/<split>/<class>/<file>``: members are read straight from the archive.

Files are ordered by sorted relative path, so the sample index (the memory-bank slot) of every
image is deterministic. Unreadable images are skipped and listed (``skipped``), never fatal.
Each image is decoded to RGB with EXIF orientation (the library's ``Preprocessor.open_image``),
its centred square is resampled to ``S x S`` (bilinear); CIFAR-10 at S = 32 is kept as stored.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from metaug_features.atomic import atomic_write, atomic_write_text
from metaug_features.config import EncoderConfig
from metaug_features.errors import ConfigError, ImageDecodeError
from metaug_features.preprocess import Preprocessor, center_box

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
#: Bump when the decoded pixels of the same files would change (invalidates caches).
CACHE_VERSION = 1


@dataclass
class ImageArray:
    """A decoded dataset.

    images: uint8 ``[N, S, S, 3]`` (numpy).
    labels: int64 ``[N]``, index into ``classes``; -1 for a flat folder.
    paths: relative path of each row (sorted order).
    classes: class names (sorted); empty for a flat folder.
    skipped: ``(relative path, reason)`` of files that could not be decoded.
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


# ---------------------------------------------------------------------- listing sources


def _is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(ARCHIVE_SUFFIXES)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _folder_listing(path: Path, split: str) -> tuple[Path, list[str]]:
    root = path / split if (split and (path / split).is_dir()) else path
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if _is_image(f) and not f.startswith("."):
                files.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return root, sorted(files)


def _read_archive(path: Path, split: str) -> dict[str, bytes]:
    """Image members of an archive in one streaming pass (random access into a gzip stream
    would re-decompress from the start), keyed by their path below ``<top>/<split>/``; when no
    member lies under a ``<split>`` folder, every image is used, keyed below the top folder."""
    under_split: dict[str, bytes] = {}
    everything: dict[str, bytes] = {}
    with tarfile.open(path, "r:*") as tar:
        for m in tar:
            if not (m.isfile() and _is_image(m.name)):
                continue
            parts = m.name.strip("/").split("/")
            data = tar.extractfile(m).read()
            if split and len(parts) >= 3 and parts[1] == split:
                under_split["/".join(parts[2:])] = data
            elif not under_split:
                everything["/".join(parts[1:]) if len(parts) > 1 else parts[0]] = data
    return under_split or everything


def split_exists(path: str, split: str) -> bool:
    """Whether ``path`` (folder or archive) holds a ``split`` sub-folder of images (for an
    archive: members ``<top>/<split>/...``); without one, loading that split reads everything."""
    src = resolve_source(path)
    if not split:
        return False
    if not _is_archive(src):
        return (src / split).is_dir()
    with tarfile.open(src, "r:*") as tar:
        return any(m.isfile() and _is_image(m.name) and len(m.name.strip("/").split("/")) >= 3
                   and m.name.strip("/").split("/")[1] == split for m in tar)


def _labels(paths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Labels from the first path component (class folder); -1 when files are flat."""
    if not paths or any("/" not in p for p in paths):
        return np.full(len(paths), -1, dtype=np.int64), []
    names = [p.split("/", 1)[0] for p in paths]
    classes = sorted(set(names))
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[n] for n in names], dtype=np.int64), classes


# ---------------------------------------------------------------------- decoding


def _decode(pre: Preprocessor, src, size: int) -> np.ndarray:
    """One image (path or PIL) -> uint8 [size, size, 3]: RGB + EXIF, centred square resampled."""
    img = pre.open_image(src)
    if img.size != (size, size):
        box = center_box(img.width, img.height, size, size)
        img = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(img, dtype=np.uint8)


class _DecodeDataset(torch.utils.data.Dataset):
    """Decodes file ``i`` (a path or raw bytes) for the DataLoader workers; a bad file yields
    ``(i, None, reason)`` instead of raising, so one broken image never stops the decode."""

    def __init__(self, items: Sequence, size: int) -> None:
        self.items = items
        self.size = size
        self.pre = Preprocessor(EncoderConfig())

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        try:
            if isinstance(item, (bytes, bytearray)):
                if not item:
                    raise ImageDecodeError("empty file")
                try:
                    src = Image.open(io.BytesIO(item))
                except Exception:  # noqa: BLE001 - any decoder failure is a skip
                    raise ImageDecodeError("not a readable image") from None
            else:
                src = item
            return i, _decode(self.pre, src, self.size), ""
        except ImageDecodeError as e:
            return i, None, e.reason


def _collate(batch):
    return batch


def decode_items(items: Sequence, size: int, num_workers: int = 0, progress: bool = False) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Decode paths / bytes to uint8 ``[M, size, size, 3]`` with worker processes.

    Returns the array of the good images (in input order), their positions in ``items`` and
    ``(position, reason)`` of the bad ones.
    """
    ds = _DecodeDataset(items, size)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=256, shuffle=False, num_workers=num_workers, collate_fn=_collate,
        persistent_workers=False,
    )
    out = np.empty((len(items), size, size, 3), dtype=np.uint8)
    ok = np.zeros(len(items), dtype=bool)
    bad: list[tuple[int, str]] = []
    try:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="decoding images", unit="img", disable=not progress or None)
    except ImportError:  # pragma: no cover
        bar = None
    for chunk in loader:
        for i, arr, reason in chunk:
            if arr is None:
                bad.append((i, reason))
            else:
                out[i] = arr
                ok[i] = True
        if bar is not None:
            bar.update(len(chunk))
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
        limit: keep the first ``limit`` files in sorted order (0 = all).
        num_workers: decoding worker processes.
    """
    src = resolve_source(path)
    members: dict[str, bytes] | None = None
    if _is_archive(src):
        rels = None
        stat = src.stat()
        listing_key = [str(src), stat.st_size, int(stat.st_mtime)]
    elif src.is_dir():
        root, rels = _folder_listing(src, split)
        # Sizes and mtimes of every file: an edited image invalidates the cache.
        listing_key = [str(root)] + [[r, *_stat(root / r)] for r in rels]
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
    if rels is None:
        members = _read_archive(src, split)
        rels = sorted(members)
    if limit:
        rels = rels[:limit]
    if not rels:
        raise ConfigError(f"config key 'data.path': no images found in {path} (split {split!r})")
    items = [members[r] for r in rels] if members is not None else [str(root / r) for r in rels]
    if not size:
        size = _probe_size(items, max_size)
    images, good, bad = decode_items(items, size, num_workers=num_workers, progress=progress)
    kept = [rels[i] for i in good]
    labels, classes = _labels(kept)
    data = ImageArray(images, labels, kept, classes, [(rels[i], r) for i, r in bad], dataset_fingerprint(kept, size))
    if not len(data):
        raise ConfigError(f"config key 'data.path': none of the {len(rels)} images in {path} could be decoded")
    if cache is not None:
        _write_cache(cache, data, key)
    return data


def _probe_size(items: Sequence, max_size: int | None) -> int:
    """Shorter side of the first decodable image, capped at ``max_size``."""
    pre = Preprocessor(EncoderConfig())
    for item in items[:16]:
        try:
            img = pre.open_image(Image.open(io.BytesIO(item)) if isinstance(item, bytes) else item)
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
