"""Batched training augmentation (docs/METHODS.md section 1): RandomResizedCrop + horizontal flip.

The official recipe is ``RandomResizedCrop(size, scale=(0.2, 1))`` + ``RandomHorizontalFlip``,
applied per image by PIL in DataLoader workers. Here the crop parameters of a whole batch are
drawn at once by the library's sampler (:func:`metaug_features.crops.sample_crop_params`, draw
order ``"batched"``: torchvision's acceptance rule, up to 10 tries of area fraction and log-
aspect ratio, then a centre-crop fallback) and one ``grid_sample`` call crops, resizes and flips
every image on the training device. Lab conversion and normalisation follow in the encoder's
``preprocess.to_input``; the views L / ab / ori are channel slices of that one crop.

Resampling: bilinear with ``align_corners=False`` (pixel centres at +0.5), i.e. output pixel k of
a crop [left, left + w) maps to input x = left + (k + 0.5) * w / S. This equals torchvision's
bilinear ``resized_crop(antialias=False)`` except on the outermost output pixels when
upsampling, where torchvision clamps to the crop's own edge and this reads the neighbouring
pixel of the full image (``padding_mode="border"`` only at the image edge). Downscaling uses no
antialiasing; for the cached CIFAR-10 (32 px, crops upsampled) it never downsamples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The sampler lives in the library (one RandomResizedCrop rule for training and the paper probe);
# re-exported here because the training modules and tests import it from this module.
from metaug_features.crops import CropParams, sample_crop_params

__all__ = ["BatchAugment", "CropParams", "apply_crops", "crop_grid", "sample_crop_params"]


def crop_grid(params: CropParams, height: int, width: int, out_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sampling grid ``[B, S, S, 2]`` (normalised x, y) that crops, resizes and flips.

    For align_corners=False, input normalised x = (2 * x_pix / W) - 1 with x_pix the continuous
    coordinate (pixel centres at +0.5); output u in [-1, 1] maps to x_pix = left + (u + 1)/2 * w,
    so x = (w / W) * u + (2 * left + w) / W - 1; a flip negates the u coefficient.
    """
    b = params.boxes.to(device=device, dtype=torch.float32)
    top, left, h, w = b.unbind(dim=1)
    sx = w / width
    sx = torch.where(params.flip.to(device), -sx, sx)
    tx = (2 * left + w) / width - 1
    sy = h / height
    ty = (2 * top + h) / height - 1
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)  # [B, 2, 3]
    return F.affine_grid(theta, [b.shape[0], 1, out_size, out_size], align_corners=False)


def apply_crops(images: torch.Tensor, params: CropParams, out_size: int) -> torch.Tensor:
    """Crop, resize and flip a batch.

    Args:
        images: uint8 ``[B, 3, H, W]`` (or float in [0, 1]) on the target device.
        params: from :func:`sample_crop_params` for the same B, H, W.
        out_size: side S of the output.
    Returns:
        float32 ``[B, 3, S, S]`` RGB in [0, 1].
    """
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    grid = crop_grid(params, x.shape[2], x.shape[3], out_size, device=x.device)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class BatchAugment:
    """The training augmentation of one run: ``aug(images_u8, generator) -> float RGB``.

    Parameters are drawn on the CPU from ``generator`` (a few hundred numbers) and the pixels
    are processed on the images' device.
    """

    def __init__(self, out_size: int, scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> None:
        self.out_size = int(out_size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.flip = bool(flip)

    def sample(self, n: int, height: int, width: int, generator: torch.Generator | None = None) -> CropParams:
        return sample_crop_params(n, height, width, self.scale, self.ratio, self.flip, generator)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 params: CropParams | None = None) -> torch.Tensor:
        if params is None:
            params = self.sample(images.shape[0], images.shape[2], images.shape[3], generator)
        return apply_crops(images, params, self.out_size)
