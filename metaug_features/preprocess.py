"""Eval-time preprocessing that travels with a model: file -> RGB pixels -> network input.

Two stages, so that the cheap per-file part can run in worker processes and the per-batch
part runs batched on the model's device:

1. :meth:`Preprocessor.load_image` (per file, CPU): decode any PIL mode to 8-bit RGB, apply the
   EXIF orientation, take the central region that ``resize shorter side -> centre crop`` keeps
   and resample it to ``input_size`` x ``input_size``. Returns uint8 [3, S, S].
2. :meth:`Preprocessor.to_input` (per batch, any device): RGB -> Lab in torch, normalised with the
   config's constants; plus normalised RGB channels when the ori view is RGB.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from .color import normalize_channels, rgb_to_lab
from .config import EncoderConfig
from .errors import ImageDecodeError
from .image_inputs import FloatImage, ImageSource, as_image_list, to_decodable


#: Images with more pixels than this are refused before decoding (decompression-bomb guard).
#: PIL's own default limit; a 20000 x 20000 header is refused without allocating anything.
DEFAULT_MAX_PIXELS = 89_478_485

# Truncated files must fail loudly, not be padded with grey (PIL's opt-in behaviour).
ImageFile.LOAD_TRUNCATED_IMAGES = False


#: Skip reason of a float image whose values fit neither 0..1 nor 0..255 (see _float_to_uint8).
FLOAT_OUT_OF_RANGE = "float image out of range"


def _float_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Float pixels (PIL mode "F") -> uint8, by one rule that depends on the value range only:

    - every value finite and in [0, 1]: a 0..1 image (the usual float convention, e.g. a float
      TIFF written by scikit-image or OpenCV): ``round(255 * v)``;
    - every value finite and in [0, 255], some above 1: a 0..255 image: ``round(v)``;
    - anything else (a value below 0 or above 255, NaN, +-inf): no scale can be known, so the
      image is refused with :class:`ImageDecodeError` reason ``"float image out of range"``
      (and skipped by metaug-extract) instead of being clipped.

    A 0..255 image whose values all happen to be <= 1 (almost black) is read as 0..1: the rule
    cannot tell the two apart and picks the convention float files use.
    """
    finite = np.isfinite(arr)
    if not finite.all():
        raise ImageDecodeError(FLOAT_OUT_OF_RANGE, f"{int(arr.size - finite.sum())} NaN or infinite value(s)")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < 0.0 or hi > 255.0:
        raise ImageDecodeError(FLOAT_OUT_OF_RANGE, f"values span [{lo:g}, {hi:g}], neither 0..1 nor 0..255")
    scale = 255.0 if hi <= 1.0 else 1.0
    return np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB.

    - alpha modes (RGBA, LA, PA, P with transparency) are composited onto white, so transparent
      areas do not become whatever colour the file stored under them;
    - 16- and 32-bit integer greyscale (I;16*, I) is scaled to 8 bits (PIL's own convert clips);
    - float greyscale (F, e.g. a 32-bit float TIFF) follows :func:`_float_to_uint8`: values in
      0..1 are scaled by 255, values in 0..255 are taken as they are, anything else is refused
      (``ImageDecodeError("float image out of range")``), never clipped to black or white;
    - everything else (L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX ...) uses PIL's conversion.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit data spans 0..65535; 32-bit "I" from 16-bit PNGs does too.
        arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if mode == "F":
        return Image.fromarray(_float_to_uint8(np.asarray(img, dtype=np.float64))).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def center_box(width: int, height: int, resize_size: int, input_size: int) -> tuple[float, float, float, float]:
    """The region of a ``width`` x ``height`` image that survives "resize the shorter side to
    ``resize_size``, then centre-crop ``input_size``": a centred square of side
    ``min(width, height) * input_size / resize_size``. Returned as a PIL box (left, top, right,
    bottom). Resampling only this box straight to the output size gives the same picture
    without ever materialising the resized full image (a 1 x 10000 strip stays cheap)."""
    side = min(width, height) * input_size / resize_size
    left = (width - side) / 2.0
    top = (height - side) / 2.0
    return (left, top, left + side, top + side)


#: A large JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, PIL's
#: ``Image.draft``) only while the centre box keeps at least this many decoded pixels per output
#: pixel along each side, so the bilinear resample to ``input_size`` still averages many
#: decoded pixels per output pixel. So only JPEGs whose centre box is >= 8x the input are drafted.
#: Why 4 (``benchmarks/draft_decode.py``, threshold sweep): on resized photos, at 4 the pixels
#: stay within 1 level of a full decode (mean <= 0.2); at 2 up to 3 levels (mean up to 0.5). The
#: time is spent in entropy decoding, which no scale avoids, so the larger margin costs little.
JPEG_DRAFT_MIN_RATIO = 4


def draft_scale(width: int, height: int, resize_size: int, input_size: int,
                min_ratio: float = JPEG_DRAFT_MIN_RATIO) -> int:
    """The JPEG decoding scale denominator for a ``width`` x ``height`` image: the largest of
    8, 4, 2 such that the centre box (:func:`center_box`) still spans
    ``>= min_ratio * input_size`` decoded pixels per side, else 1 (full decode).

    >>> draft_scale(4000, 3000, 32, 32)   # a 12 MP photo for a 32 x 32 model: decode 500 x 375
    8
    >>> draft_scale(1024, 768, 32, 32)    # centre box 768 -> 192 decoded pixels at 1/4
    4
    >>> draft_scale(32, 32, 32, 32)       # CIFAR-sized: untouched
    1
    """
    side = min(width, height) * input_size / resize_size
    for k in (8, 4, 2):
        if side / k >= min_ratio * input_size:
            return k
    return 1


class Preprocessor:
    """The preprocessing of one model config; see the module docstring for the two stages."""

    def __init__(self, config: EncoderConfig, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.config = config
        self.input_size = config.input_size
        self.resize_size = config.resize_size
        self.max_pixels = max_pixels

    # ------------------------------------------------------------------ stage 1: one file
    def open_image(self, src: str | os.PathLike | Image.Image) -> Image.Image:
        """Decode ``src`` into an RGB PIL image with EXIF orientation applied, or raise
        :class:`ImageDecodeError` with a short reason."""
        img = src if isinstance(src, Image.Image) else self._open_file(src)
        w, h = self._check_declared_size(img)
        try:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return _to_rgb(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageDecodeError("decompression bomb (too many pixels)", f"{w}x{h}") from None
        except ImageDecodeError:
            raise  # a reason of its own from _to_rgb ("float image out of range")
        except Exception as e:  # noqa: BLE001 - truncated data, bad EXIF, unsupported mode...
            raise ImageDecodeError("truncated or corrupt image", str(e)) from None

    def _open_file(self, src: str | os.PathLike) -> Image.Image:
        """Read ``src`` and identify it: a PIL image whose header is parsed but whose pixels are
        not decoded yet (so its declared size can be checked, and a JPEG drafted, first)."""
        path = Path(src)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ImageDecodeError("file not found", str(path)) from None
        except PermissionError:
            raise ImageDecodeError("permission denied", str(path)) from None
        except IsADirectoryError:
            raise ImageDecodeError("is a directory", str(path)) from None
        except OSError as e:
            raise ImageDecodeError("cannot read file", f"{path}: {e.strerror or e}") from None
        if not data:
            raise ImageDecodeError("empty file", str(path))
        try:
            with warnings.catch_warnings():
                # PIL warns (rather than raises) between 1x and 2x its own pixel limit.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                return Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageDecodeError("decompression bomb (too many pixels)", str(path)) from None
        except UnidentifiedImageError:
            raise ImageDecodeError("not a readable image", str(path)) from None
        except Exception as e:  # noqa: BLE001 - any decoder failure is a skip, never a crash
            # A file cut inside its header fails here already; name it as truncation.
            reason = "truncated or corrupt image" if "truncat" in str(e).lower() else "not a readable image"
            raise ImageDecodeError(reason, f"{path}: {e}") from None

    def _check_declared_size(self, img: Image.Image) -> tuple[int, int]:
        """The size the header declares, refused before any pixel is decoded when it is empty
        or above ``max_pixels`` (decompression-bomb guard). Returns (width, height)."""
        w, h = img.size
        if w < 1 or h < 1:
            raise ImageDecodeError("image has no pixels", f"{w}x{h}")
        if w * h > self.max_pixels:
            raise ImageDecodeError("decompression bomb (too many pixels)", f"{w}x{h} > {self.max_pixels}")
        return w, h

    def _load_jpeg_reduced(self, img: JpegImageFile, scale: int) -> Image.Image:
        """Decode a large JPEG at 1/``scale`` (DCT scaling) and return its centre box resampled to
        ``input_size`` x ``input_size``, upright RGB.

        Why resample before the EXIF transpose, unlike the full-size path: a DCT-scaled image is
        ``ceil(W / scale)`` pixels wide, its last column standing for fewer than ``scale``
        source columns, so a box computed on that size would sit up to half a decoded pixel off
        centre. Original coordinate x is exactly x / scale in the decoded image, so the box is
        mapped there in the stored orientation; the EXIF transposes (flips, quarter turns) map a
        centred square onto itself, so transposing the S x S result is the same picture, and
        cheaper than transposing the decoded image.
        """
        w, h = self._check_declared_size(img)  # on the declared size, before decoding
        s = self.input_size
        try:
            drafted = img.draft("RGB", (w // scale, h // scale))
            # draft() picks the scale itself (the largest of 8, 4, 2, 1 that keeps at least the
            # requested size) and returns the full image's box in decoded coordinates.
            decoded_per_source = 1.0 if drafted is None else drafted[1][2] / w
            img.load()
            rgb = _to_rgb(img)
            box = tuple(c * decoded_per_source for c in center_box(w, h, self.resize_size, s))
            small = rgb.resize((s, s), Image.Resampling.BILINEAR, box=box)
            # exif_transpose reads the orientation from .info (EXIF, else XMP): hand it the
            # original's, so both paths orient by the same tags.
            small.info = dict(img.info)
            return ImageOps.exif_transpose(small) or small
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageDecodeError("decompression bomb (too many pixels)", f"{w}x{h}") from None
        except ImageDecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated data, bad EXIF, ...
            raise ImageDecodeError("truncated or corrupt image", str(e)) from None

    def load_image(self, src: str | os.PathLike | Image.Image, *, draft: bool = True) -> torch.Tensor:
        """Decode, orient, crop and resize one image.

        A JPEG file much larger than the input (centre box >= ``JPEG_DRAFT_MIN_RATIO`` x the
        input per side after reduction, see :func:`draft_scale`) is decoded at 1/2, 1/4 or 1/8
        scale (PIL's draft mode): about 3x faster on a 4000 x 3000 photo, pixels within a level
        of the full decode (``benchmarks/draft_decode.py``). ``draft=False`` always decodes at
        full size. Other files, PIL images passed in, and JPEGs near the input size are decoded
        in full, as before.

        Returns:
            uint8 tensor [3, S, S] (S = config.input_size), RGB.
        Raises:
            ImageDecodeError: with ``.reason`` one of "file not found", "permission denied",
            "is a directory", "cannot read file", "empty file", "not a readable image",
            "decompression bomb (too many pixels)", "image has no pixels",
            "truncated or corrupt image", "float image out of range" (a float image, PIL mode
            "F", whose values fit neither 0..1 nor 0..255, or hold NaN / inf; see
            ``_float_to_uint8``). Float TIFFs with 3 or 4 samples per pixel are not decoded by
            PIL and come out as "not a readable image".
        """
        s = self.input_size
        img = None
        # Only files this method opens itself are drafted: draft() changes the image object,
        # and a PIL image passed in belongs to the caller.
        if draft and not isinstance(src, Image.Image):
            src = self._open_file(src)  # header only; open_image below decodes it if not drafted
            if isinstance(src, JpegImageFile):
                scale = draft_scale(*src.size, self.resize_size, s)
                if scale > 1:
                    img = self._load_jpeg_reduced(src, scale)
        if img is None:
            img = self.open_image(src)
            box = center_box(img.width, img.height, self.resize_size, s)
            try:
                img = img.resize((s, s), Image.Resampling.BILINEAR, box=box)
            except Exception as e:  # noqa: BLE001
                raise ImageDecodeError("truncated or corrupt image", str(e)) from None
        arr = np.asarray(img, dtype=np.uint8)  # [S, S, 3]
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()

    # ------------------------------------------------------------------ stage 2: a batch
    def to_input(self, batch: torch.Tensor) -> torch.Tensor:
        """RGB pixels -> network input.

        Args:
            batch: uint8 [B, 3, H, W] (0..255) or float [B, 3, H, W] in [0, 1].
        Returns:
            float32 [B, C, H, W]: normalised Lab (C = 3), followed by normalised RGB
            (C = 6) when the config's ori view is RGB.
        """
        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected RGB images [B, 3, H, W], got shape {tuple(batch.shape)}")
        if batch.dtype == torch.uint8:
            rgb = batch.float().div_(255.0)
        elif batch.is_floating_point():
            rgb = batch.float()
        else:
            raise TypeError(f"expected uint8 or float images, got {batch.dtype}")
        cfg = self.config
        lab = normalize_channels(rgb_to_lab(rgb), cfg.lab_mean, cfg.lab_std)
        if cfg.input_channels == 6:
            return torch.cat([lab, normalize_channels(rgb, cfg.rgb_mean, cfg.rgb_std)], dim=1)
        return lab

    def load_float_image(self, image: FloatImage) -> torch.Tensor:
        """Crop and resample float RGB pixels exactly as :meth:`load_image` does 8-bit ones
        (same centre box, PIL's bilinear filter), but in float, so nothing is rounded to 8 bits.

        Returns:
            float32 tensor [3, S, S] in [0, 1].
        """
        _, h, w = image.pixels.shape
        s = self.input_size
        box = center_box(w, h, self.resize_size, s)
        channels = [
            np.asarray(Image.fromarray(c, mode="F").resize((s, s), Image.Resampling.BILINEAR, box=box), dtype=np.float32)
            for c in image.pixels
        ]
        # Bilinear weights are non-negative and sum to 1, so only float rounding can leave [0, 1].
        return torch.from_numpy(np.stack(channels)).clamp_(0.0, 1.0)

    def load_batch(self, images: ImageSource | Iterable[ImageSource]) -> torch.Tensor:
        """Images of any accepted kind (see :mod:`metaug_features.image_inputs`) -> pixels
        [B, 3, S, S]: uint8 when every image has integer pixels, else float32 in [0, 1].

        No skipping: a bad file raises :class:`ImageDecodeError`, a bad array or tensor
        ``ValueError`` / ``TypeError``.
        """
        loaded = []
        for item in as_image_list(images):
            src = to_decodable(item)
            loaded.append(self.load_float_image(src) if isinstance(src, FloatImage) else self.load_image(src))
        if not loaded:
            return torch.empty(0, 3, self.input_size, self.input_size, dtype=torch.uint8)
        if all(t.dtype == torch.uint8 for t in loaded):
            return torch.stack(loaded)
        return torch.stack([t.float().div_(255.0) if t.dtype == torch.uint8 else t for t in loaded])

    def transform(self, image: ImageSource) -> torch.Tensor:
        """One image -> its network input, float32 [C, S, S]: a per-sample transform for your own
        ``Dataset`` (the default collate stacks samples into [B, C, S, S] for ``encoder(x)``).
        Picklable, so it works in ``DataLoader`` workers."""
        items = as_image_list(image)
        if len(items) != 1:
            raise ValueError(f"transform takes one image, got {len(items)}; use encoder.preprocess(images) for a batch")
        return self.to_input(self.load_batch(items))[0]

    def __call__(self, images: ImageSource | Iterable[ImageSource]) -> torch.Tensor:
        """Images (one or many) -> float network input [B, C, S, S]."""
        return self.to_input(self.load_batch(images))

    def __repr__(self) -> str:
        cfg = self.config
        lines = [
            f"resize_shorter_side={self.resize_size}, center_crop={self.input_size}, resample=bilinear",
            "rgb -> lab (D65), normalised: "
            f"mean={tuple(cfg.lab_mean)}, std={tuple(cfg.lab_std)}",
        ]
        if cfg.input_channels == 6:
            lines.append(f"+ rgb channels for the ori view, normalised: mean={tuple(cfg.rgb_mean)}, std={tuple(cfg.rgb_std)}")
        lines.append(f"output=float32 [B, {cfg.input_channels}, {self.input_size}, {self.input_size}]")
        return "Preprocessor(\n" + "".join(f"  {line}\n" for line in lines) + ")"
