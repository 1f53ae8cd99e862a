"""sRGB -> CIE Lab (D65) on batched torch tensors.

The conversion is the fixed formula used by scikit-image's ``rgb2lab`` (and by the CMC / MetAug
code through it): sRGB gamma expansion, a 3x3 matrix to XYZ, division by the D65 white point,
the CIE f(t) (cube root above a small threshold, linear below), then L, a, b. Doing it in torch
keeps it batched and on whatever device the caller chose, instead of per image in numpy.
"""

from __future__ import annotations

import torch

# sRGB (linear) -> XYZ, D65; the matrix scikit-image uses.
_RGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
# D65 reference white (2 degree observer), scikit-image's values.
_WHITE_D65 = (0.95047, 1.0, 1.08883)
# CIE f(t) constants: above EPS use the cube root, below the tangent line KAPPA * t + 16/116.
_EPS = 0.008856
_KAPPA = 7.787


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """Undo the sRGB transfer curve. ``rgb``: float in [0, 1], any shape."""
    return torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp_min(0).pow(2.4), rgb / 12.92)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """Convert sRGB to CIE Lab (D65).

    Args:
        rgb: float tensor [B, 3, H, W] (or [3, H, W]) with values in [0, 1].
    Returns:
        Lab tensor of the same shape: L in [0, 100], a in about [-86.2, 98.2],
        b in about [-107.9, 94.5].
    """
    if rgb.shape[-3] != 3:
        raise ValueError(f"rgb_to_lab expects 3 channels in dim -3, got shape {tuple(rgb.shape)}")
    if not rgb.is_floating_point():
        raise TypeError("rgb_to_lab expects a float tensor in [0, 1]; divide uint8 images by 255 first")
    linear = srgb_to_linear(rgb)
    matrix = torch.tensor(_RGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device)
    white = torch.tensor(_WHITE_D65, dtype=rgb.dtype, device=rgb.device)
    # [..., 3, H, W] -> XYZ / white, contracting the channel dim with the matrix rows.
    xyz = torch.einsum("ij,...jhw->...ihw", matrix, linear) / white.view(3, 1, 1)
    f = torch.where(xyz > _EPS, xyz.clamp_min(_EPS).pow(1.0 / 3.0), _KAPPA * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(dim=-3)
    L = 116.0 * fy - 16.0
    a = 500.0 * (fx - fy)
    b = 200.0 * (fy - fz)
    return torch.stack((L, a, b), dim=-3)


def normalize_channels(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(x - mean) / std per channel; ``x`` [B, C, H, W], ``mean``/``std`` length C."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
