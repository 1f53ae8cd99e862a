"""A2's noise scale: the sigma whose perturbed VAE views keep a target feature cosine
(docs/METHODS.md section 9), calibrated against a released model's frozen features."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from metaug_features.errors import ConfigError

from ..vae import IDAAVAE


@torch.no_grad()
def calibrate_sigma(vae: IDAAVAE, feature_fn: Callable[[Tensor], Tensor], rgb: Tensor, target: float,
                    seed: int = 0, lo: float = 1e-3, hi: float = 100.0, iterations: int = 20) -> dict[str, Any]:
    """The sigma whose perturbed views have mean cosine ``target`` with the reconstruction.

    cos(sigma) = mean_i cos(f(G(mu_i + sigma * n_i)), f(G(mu_i))) for fixed noise n; it falls
    from 1 as sigma grows, and a bisection in log sigma over [lo, hi] finds the target. The
    cosine is taken against the reconstruction G(x), not the image x: the VAE's blur alone
    already moves the features (``cosine_image_vs_reconstruction`` records by how much), so
    a target above that is unreachable against x.

    Args:
        feature_fn: frozen features of RGB ``[n, 3, S, S]`` -> ``[n, F]``.
        rgb: float ``[n, 3, S, S]`` calibration images in [0, 1].
    """
    mu = vae.encode(rgb)[0]
    noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed)).to(mu.device)
    f0 = nn.functional.normalize(feature_fn(vae.decode(mu)).float(), dim=1)
    f_img = nn.functional.normalize(feature_fn(rgb).float(), dim=1)

    def cos(sigma: float) -> float:
        f = nn.functional.normalize(feature_fn(vae.decode(mu + sigma * noise)).float(), dim=1)
        return float((f * f0).sum(1).mean())

    a, b = math.log(lo), math.log(hi)
    c_hi = cos(hi)
    if c_hi > target:
        warnings.warn(f"A2 calibration: even sigma={hi} keeps cosine {c_hi:.3f} > target {target}; using sigma={hi}",
                      stacklevel=2)
        sigma, achieved = hi, c_hi
    else:
        for _ in range(iterations):
            m = (a + b) / 2
            if cos(math.exp(m)) > target:
                a = m
            else:
                b = m
        sigma = math.exp((a + b) / 2)
        achieved = cos(sigma)
    return {"sigma": sigma, "cosine": round(achieved, 4), "target_cosine": target, "against": "reconstruction G(x)",
            "cosine_image_vs_reconstruction": round(float((f_img * f0).sum(1).mean()), 4), "images": int(rgb.shape[0])}


def calibrate_from_model(vae: IDAAVAE, model_ref: str, images_u8: Tensor, target: float, n: int, seed: int,
                         device: torch.device) -> dict[str, Any]:
    """:func:`calibrate_sigma` with a released model's default features, on ``n`` images drawn
    (seeded) from ``images_u8``; the record names the model."""
    from metaug_features import load_encoder

    f = load_encoder(model_ref).to(device).eval()
    pick = torch.randperm(images_u8.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    rgb = images_u8[pick].to(device).permute(0, 3, 1, 2).float().div(255.0)
    if rgb.shape[-1] != vae.config.image_size:
        raise ConfigError(f"A2 calibration: images are {rgb.shape[-1]} px, the VAE's {vae.config.image_size} px")

    def features(x: Tensor) -> Tensor:
        return torch.cat([f(f.preprocess.to_input(part)) for part in x.split(256)])

    rec = calibrate_sigma(vae, features, rgb, target, seed=seed)
    rec["model"] = str(model_ref)
    return rec
