"""What users hand to ``encoder.extract`` / ``Preprocessor``, turned into one of two forms.

Accepted images (one, or a list / tuple of them, or a batch array / tensor):

=======================================  =====================================================
input                                    read as
=======================================  =====================================================
``str`` / ``os.PathLike``                an image file (decoded like ``metaug-extract`` does)
``PIL.Image.Image``                      any mode the decoder accepts (alpha on white, 16-bit
                                         scaled, ...)
``numpy`` uint8 ``[H, W]`` / ``[H, W, C]`` pixels 0..255, channels last (PIL / OpenCV order;
                                         C = 1 grey, 3 RGB, 4 RGBA); uint16 ``[H, W]`` is
                                         16-bit grey; ``[N, H, W, C]`` is a batch
``torch`` uint8 ``[C, H, W]``            pixels 0..255, channels first (torchvision order;
                                         C = 1, 3 or 4); ``[N, C, H, W]`` is a batch
float ``numpy`` / ``torch``, same shapes RGB(A) in **[0, 1]** (torchvision's ``ToTensor``
                                         convention); a value outside [0, 1] or not finite is
                                         an error, never clipped silently
=======================================  =====================================================

Every image, whatever its size, is preprocessed as a file would be: the central region that
"resize the shorter side, centre-crop" keeps is resampled to the model's input size. Integer
inputs become PIL images, so they follow the file path bit for bit; float inputs are resampled
in float (no 8-bit rounding) by :meth:`Preprocessor.load_float_image`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Union

import numpy as np
import torch
from PIL import Image

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class FloatImage:
    """Float RGB pixels in [0, 1], channels first: ``pixels`` float32 [3, H, W]."""

    pixels: np.ndarray


_CHANNELS = (1, 3, 4)


def as_image_list(images: ImageSource | Iterable[ImageSource]) -> list[ImageSource]:
    """One image or many -> a list of single images.

    A string or path is one file (never iterated letter by letter); a 4-D array or tensor is a
    batch; lists, tuples and other iterables are taken item by item.
    """
    if isinstance(images, (str, bytes, os.PathLike, Image.Image)):
        return [images]
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim == 4:
            return list(images)
        return [images]
    if isinstance(images, Iterable):
        return list(images)
    raise TypeError(f"expected an image or a list of images (paths, PIL images, arrays, tensors), got {type(images).__name__}")


def to_decodable(item: ImageSource) -> str | os.PathLike | Image.Image | FloatImage:
    """One image -> what the decoder takes: a path or PIL image (integer pixels) or a
    :class:`FloatImage`.

    Raises:
        TypeError: an unsupported type or dtype.
        ValueError: an unsupported shape, or float values outside [0, 1] / not finite.
    """
    if isinstance(item, (str, os.PathLike, Image.Image)):
        return item
    if isinstance(item, bytes):
        raise TypeError("bytes are not an image path; pass a str path, or PIL.Image.open(io.BytesIO(data))")
    if isinstance(item, torch.Tensor):
        arr = item.detach().cpu()
        if arr.ndim == 3:  # [C, H, W] -> [H, W, C]
            arr = arr.permute(1, 2, 0)
        arr = arr.float().numpy() if arr.dtype in (torch.float16, torch.bfloat16) else arr.numpy()
        return _from_channels_last(arr, "tensor", "[C, H, W]")
    if isinstance(item, np.ndarray):
        return _from_channels_last(item, "array", "[H, W, C]")
    raise TypeError(
        f"unsupported image type {type(item).__name__}: pass a path, a PIL image, a numpy array or a torch tensor"
    )


def _from_channels_last(arr: np.ndarray, kind: str, layout: str) -> Image.Image | FloatImage:
    """[H, W] or [H, W, C] pixels -> PIL image (integers) or FloatImage (floats in [0, 1])."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in _CHANNELS)):
        raise ValueError(f"an image {kind} must be {layout} with 1, 3 or 4 channels (or [H, W] grey), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image {kind} has no pixels: shape {arr.shape}")
    if arr.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(arr))
    if arr.dtype == np.uint16 and arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr))  # mode I;16, scaled to 8 bits like a 16-bit PNG
    if arr.dtype == np.bool_:
        return Image.fromarray(np.ascontiguousarray(arr).astype(np.uint8) * 255)
    if np.issubdtype(arr.dtype, np.floating):
        return FloatImage(_float_rgb(arr.astype(np.float32, copy=False), kind))
    raise TypeError(
        f"image {kind}s must be uint8 (0..255) or float (0..1); got dtype {arr.dtype} "
        "(uint16 is accepted for [H, W] grey only)"
    )


def _float_rgb(arr: np.ndarray, kind: str) -> np.ndarray:
    """Float [H, W] / [H, W, C] in [0, 1] -> float32 RGB [3, H, W]; alpha composited on white,
    as the decoder does for files."""
    if not np.isfinite(arr).all():
        raise ValueError(f"float image {kind} holds NaN or inf")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"float image {kind}s are read as RGB in [0, 1] (torchvision's ToTensor convention); got values in "
            f"[{lo:g}, {hi:g}]. Divide 0..255 data by 255, or pass it as uint8."
        )
    if arr.ndim == 2:
        rgb = np.repeat(arr[None], 3, axis=0)
    else:
        chw = np.moveaxis(arr, 2, 0)
        rgb = chw[:3] if chw.shape[0] == 3 else chw[:3] * chw[3:4] + (1.0 - chw[3:4])
    return np.ascontiguousarray(rgb, dtype=np.float32)
