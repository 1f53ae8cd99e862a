"""RandomResizedCrop + horizontal-flip parameters: the one sampler of the toolkit.

Used by training (``metaug_training.augment``, batched crops on the training device) and by the
paper's linear probe (:mod:`metaug_features.evaluation.paper_probe`, per-image crops with
torchvision). The rule is torchvision's ``RandomResizedCrop.get_params`` (Szegedy et al. 2015):

* attempt t (of :data:`ATTEMPTS`) draws an area fraction s ~ U(scale) and a log-aspect
  r ~ U(log ratio); w = round(sqrt(s H W e^r)), h = round(sqrt(s H W / e^r));
* the first attempt with 0 < w <= W and 0 < h <= H is taken, with top ~ U{0..H-h} and
  left ~ U{0..W-w};
* if all attempts fail, the largest centred crop whose aspect lies in ``ratio`` is used
  (:func:`fallback_box`).

Two *draw orders* exist, because seeded runs and tests of both users depend on their random
streams bit for bit (a resumed training run must draw exactly the numbers of an uninterrupted
one):

* ``"batched"`` (training): every uniform of every image and attempt is drawn at once as fixed-
  shape float32 tensors (scale ``[n, 10]``, ratio ``[n, 10]``, top ``[n]``, left ``[n]``,
  flip ``[n]``), so the same generator state always gives the same boxes whatever is accepted.
* ``"per_image"`` (paper probe): the flips of the batch ``[n]`` first, then per image and
  attempt two uniforms, and ``randint`` draws for top and left once an attempt fits; the
  arithmetic runs in Python floats (double precision).

Both give boxes with the same distribution; only the mapping from the generator's numbers
to boxes differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

#: torchvision tries this many (area, ratio) draws before falling back to a centre crop.
ATTEMPTS = 10

DrawOrder = Literal["batched", "per_image"]


@dataclass
class CropParams:
    """Crop boxes and flips of a batch (CPU tensors).

    boxes: float32 ``[B, 4]`` = (top, left, height, width) in pixels, whole numbers as torchvision.
    flip: bool ``[B]``.
    """

    boxes: torch.Tensor
    flip: torch.Tensor

    def __getitem__(self, sel) -> "CropParams":
        return CropParams(self.boxes[sel], self.flip[sel])


def fallback_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the largest centred crop whose aspect w / h lies in ``ratio``:
    torchvision's answer when no attempt fits (the image's own aspect clamped into range)."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_crop_box(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                    gen: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of one random resized crop, in the ``"per_image"`` draw order."""
    area = height * width
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(ATTEMPTS):
        u = torch.rand(2, generator=gen).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_r[0] + (log_r[1] - log_r[0]) * u[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
            left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
            return top, left, h, w
    return fallback_box(height, width, ratio)


def _sample_batched(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                    flip: bool, g: torch.Generator | None) -> CropParams:
    """All uniforms at once (fixed tensor shapes), then the first fitting attempt per image."""
    area = float(height * width)
    u_scale = torch.rand(n, ATTEMPTS, generator=g)
    u_ratio = torch.rand(n, ATTEMPTS, generator=g)
    u_top = torch.rand(n, generator=g)
    u_left = torch.rand(n, generator=g)
    u_flip = torch.rand(n, generator=g)
    target = area * (scale[0] + (scale[1] - scale[0]) * u_scale)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u_ratio)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = valid.to(torch.int8).argmax(dim=1, keepdim=True)  # first valid attempt (0 if none)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    found = valid.any(dim=1)
    f_top, f_left, fh, fw = fallback_box(height, width, ratio)
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    top = torch.where(found, torch.floor(u_top * (height - h + 1)), torch.full_like(h, f_top))
    left = torch.where(found, torch.floor(u_left * (width - w + 1)), torch.full_like(w, f_left))
    flips = (u_flip < 0.5) if flip else torch.zeros(n, dtype=torch.bool)
    return CropParams(torch.stack([top, left, h, w], dim=1).float(), flips)


def _sample_per_image(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                      flip: bool, g: torch.Generator | None) -> CropParams:
    """Flips of the batch first (drawn even when ``flip`` is off, so the stream is the same),
    then one :func:`sample_crop_box` per image."""
    u_flip = torch.rand(n, generator=g)
    boxes = [sample_crop_box(height, width, scale, ratio, g) for _ in range(n)]
    flips = (u_flip < 0.5) if flip else torch.zeros(n, dtype=torch.bool)
    return CropParams(torch.tensor(boxes, dtype=torch.float32).reshape(n, 4), flips)


def sample_crop_params(n: int, height: int, width: int, scale: tuple[float, float] = (0.2, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True,
                       generator: torch.Generator | None = None, draws: DrawOrder = "batched") -> CropParams:
    """Draw RandomResizedCrop boxes (+ flips) for ``n`` images of ``height`` x ``width``.

    Args:
        n: number of images B.
        height, width: image size H, W in pixels.
        scale: range of the crop's area fraction.
        ratio: range of the crop's aspect w / h (sampled log-uniformly).
        flip: draw horizontal flips with probability 1/2 (else none).
        generator: the random stream (None: torch's global generator).
        draws: ``"batched"`` (training) or ``"per_image"`` (paper probe); see the module docstring.

    Returns:
        :class:`CropParams` with boxes float32 ``[n, 4]`` and flips bool ``[n]``.
    """
    if draws == "batched":
        return _sample_batched(n, height, width, scale, ratio, flip, generator)
    if draws == "per_image":
        return _sample_per_image(n, height, width, scale, ratio, flip, generator)
    raise ValueError(f"draws must be 'batched' or 'per_image', got {draws!r}")


__all__ = ["ATTEMPTS", "CropParams", "fallback_box", "sample_crop_box", "sample_crop_params"]
