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
from typing import Iterable, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .color import normalize_channels, rgb_to_lab
from .config import EncoderConfig
from .errors import ImageDecodeError

ImageSource = Union[str, os.PathLike, Image.Image, torch.Tensor]

#: Images with more pixels than this are refused before decoding (decompression-bomb guard).
#: PIL's own default limit; a 20000 x 20000 header is refused without allocating anything.
DEFAULT_MAX_PIXELS = 89_478_485

# Truncated files must fail loudly, not be padded with grey (PIL's opt-in behaviour).
ImageFile.LOAD_TRUNCATED_IMAGES = False


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB.

    - alpha modes (RGBA, LA, PA, P with transparency) are composited onto white, so transparent
      areas do not become whatever colour the file stored under them;
    - 16- and 32-bit integer greyscale (I;16*, I) is scaled to 8 bits (PIL's own convert clips);
    - float greyscale (F) is taken as 0..255 and clipped;
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
        arr = np.clip(np.nan_to_num(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
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
        if isinstance(src, Image.Image):
            img = src
        else:
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
                    img = Image.open(io.BytesIO(data))
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise ImageDecodeError("decompression bomb (too many pixels)", str(path)) from None
            except UnidentifiedImageError:
                raise ImageDecodeError("not a readable image", str(path)) from None
            except Exception as e:  # noqa: BLE001 - any decoder failure is a skip, never a crash
                # A file cut inside its header fails here already; name it as truncation.
                reason = "truncated or corrupt image" if "truncat" in str(e).lower() else "not a readable image"
                raise ImageDecodeError(reason, f"{path}: {e}") from None
        w, h = img.size
        if w < 1 or h < 1:
            raise ImageDecodeError("image has no pixels", f"{w}x{h}")
        if w * h > self.max_pixels:
            raise ImageDecodeError("decompression bomb (too many pixels)", f"{w}x{h} > {self.max_pixels}")
        try:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return _to_rgb(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageDecodeError("decompression bomb (too many pixels)", f"{w}x{h}") from None
        except Exception as e:  # noqa: BLE001 - truncated data, bad EXIF, unsupported mode...
            raise ImageDecodeError("truncated or corrupt image", str(e)) from None

    def load_image(self, src: str | os.PathLike | Image.Image) -> torch.Tensor:
        """Decode, orient, crop and resize one image.

        Returns:
            uint8 tensor [3, S, S] (S = config.input_size), RGB.
        Raises:
            ImageDecodeError: with ``.reason`` one of "file not found", "permission denied",
            "is a directory", "cannot read file", "empty file", "not a readable image",
            "decompression bomb (too many pixels)", "image has no pixels",
            "truncated or corrupt image".
        """
        img = self.open_image(src)
        s = self.input_size
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

    def load_batch(self, images: Sequence[ImageSource]) -> torch.Tensor:
        """Files / PIL images / uint8 [3, H, W] tensors -> uint8 [B, 3, S, S] (no skipping:
        a bad file raises :class:`ImageDecodeError`)."""
        out = []
        for im in images:
            if isinstance(im, torch.Tensor):
                if im.dtype != torch.uint8 or im.shape != (3, self.input_size, self.input_size):
                    raise ValueError(
                        f"tensor images must be uint8 [3, {self.input_size}, {self.input_size}] "
                        f"(already preprocessed), got {im.dtype} {tuple(im.shape)}"
                    )
                out.append(im)
            else:
                out.append(self.load_image(im))
        return torch.stack(out) if out else torch.empty(0, 3, self.input_size, self.input_size, dtype=torch.uint8)

    def __call__(self, images: Iterable[ImageSource]) -> torch.Tensor:
        """Files / PIL images -> float network input [B, C, S, S]."""
        return self.to_input(self.load_batch(list(images)))
