"""A2 "search" views, made offline into a cache of float16 latents (``metaug-a2-search``).

For each training image x (whole image, no crop) with w0 = mu(x), K latents w_1..w_K start at
w0 + 0.1 * noise and take ``steps`` Adam steps (lr ``lr``) on (docs/METHODS.md section 9)

    sum_k (||f(G(w_k)) - f(G(w0))|| - eps1)^2 + lambda * relu(eps2 - mean_{j<k} ||f(G(w_j)) - f(G(w_k))||)

where f gives L2-normalised frozen features of a released model (so distances lie in [0, 2];
eps1 = 0.55 is a cosine of about 0.85) and G is the frozen VAE's decoder. The first term keeps
each view at a set distance from the image's reconstruction, the second pushes the K views
apart. Only the latents get gradients.

The cache is ``<name>.safetensors`` (``latents``: float16 ``[N, K, D]``) + ``<name>.json``
(dataset fingerprint, VAE digest, settings). It is built in chunks; ``<name>.partial.safetensors``
holds the chunks done so far, so an interrupted search resumes where it stopped.

:func:`build_latent_cache_for` is the whole ``metaug-a2-search`` step: it reads the VAE's image
size, decodes the dataset at that size and calls :func:`build_latent_cache`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_save
from torch import Tensor

from metaug_features.atomic import atomic_write_bytes, atomic_write_text
from metaug_features.device import resolve_device
from metaug_features.errors import ConfigError

from .config import A2_FEATURE_MODEL, DATASET_CACHE_DIR
from .data import load_image_array
from .vae import IDAAVAE, read_vae_config, vae_digest


def search_objective(f_views: Tensor, f_anchor: Tensor, eps1: float, eps2: float, lam: float) -> Tensor:
    """The search loss of the module docstring, summed over images.

    Args:
        f_views: ``[B, K, F]`` features of the K views of each image.
        f_anchor: ``[B, F]`` features of the image's reconstruction G(w0).
    """
    dist = (f_views - f_anchor[:, None]).norm(dim=2)  # [B, K]
    loss = ((dist - eps1) ** 2).sum(1)
    k = f_views.shape[1]
    if k > 1 and lam > 0:
        pair = torch.cdist(f_views, f_views)  # [B, K, K]
        iu = torch.triu_indices(k, k, 1)
        spread = pair[:, iu[0], iu[1]].mean(1)
        loss = loss + lam * torch.relu(eps2 - spread)
    return loss.sum()


def search_latents(vae: IDAAVAE, features: Callable[[Tensor], Tensor], rgb: Tensor, views: int = 2, steps: int = 5,
                   lr: float = 0.05, eps1: float = 0.55, eps2: float = 0.55, lam: float = 1.0,
                   generator: torch.Generator | None = None) -> Tensor:
    """Searched latents ``[B, K, D]`` (float32) of a batch of RGB images ``[B, 3, S, S]``."""
    with torch.no_grad():
        w0 = vae.encode(rgb)[0]
        f0 = torch.nn.functional.normalize(features(vae.decode(w0)), dim=1)
    b, d = w0.shape
    noise = torch.randn(b, views, d, generator=generator).to(w0.device)
    w = (w0[:, None] + 0.1 * noise).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        with torch.enable_grad():
            f = torch.nn.functional.normalize(features(vae.decode(w.reshape(b * views, d))), dim=1)
            loss = search_objective(f.view(b, views, -1), f0, eps1, eps2, lam)
            opt.zero_grad(set_to_none=True)
            (grad,) = torch.autograd.grad(loss, w)
        w.grad = grad
        opt.step()
    return w.detach()


def build_latent_cache(vae_dir: str | Path, model_ref: str, images_u8: Tensor, fingerprint: str, out: str | Path,
                       views: int = 2, steps: int = 5, lr: float = 0.05, eps1: float = 0.55, eps2: float = 0.55,
                       lam: float = 1.0, batch_size: int = 256, seed: int = 0, device: str | torch.device = "cpu",
                       log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Search latents for every image of ``images_u8`` (uint8 ``[N, S, S, 3]``) and write the
    cache ``out`` (+ its .json); resumes from ``<out>.partial.safetensors``. Returns the metadata."""
    from metaug_features import load_encoder

    from .vae import load_vae

    device = resolve_device(device)
    out = Path(out)
    if out.suffix != ".safetensors":
        out = out.with_suffix(".safetensors")
    partial = out.with_suffix(".partial.safetensors")
    vae = load_vae(vae_dir, device)
    f = load_encoder(model_ref).to(device).eval()
    for p in f.parameters():
        p.requires_grad_(False)

    def features(x: Tensor) -> Tensor:
        return f(f.preprocess.to_input(x))

    n = images_u8.shape[0]
    meta: dict[str, Any] = {"format": "metaug-a2-latents", "version": 1, "fingerprint": fingerprint, "num_images": n,
                            "views": views, "latent_dim": vae.config.latent_dim, "vae_sha256": vae_digest(vae_dir),
                            "model": str(model_ref), "steps": steps, "lr": lr, "eps1": eps1, "eps2": eps2,
                            "lambda": lam, "seed": seed, "generator": "VAE (not the paper's StyleGAN2)"}
    done = 0
    latents = torch.zeros(n, views, vae.config.latent_dim, dtype=torch.float16)
    if partial.is_file() and partial.with_suffix(".json").is_file():
        old = json.loads(partial.with_suffix(".json").read_text(encoding="utf-8"))
        if {k: v for k, v in old.items() if k != "done"} == meta:
            done = int(old["done"])
            latents[:done] = load_file(str(partial))["latents"][:done]
            if log:
                log(f"resuming the search at image {done} of {n}")
    every = max(batch_size, (n // 20) // batch_size * batch_size)  # save the partial cache ~20 times
    for lo in range(done, n, batch_size):
        hi = min(lo + batch_size, n)
        rgb = images_u8[lo:hi].to(device).permute(0, 3, 1, 2).float().div(255.0)
        g = torch.Generator().manual_seed(seed * 1000003 + lo)
        latents[lo:hi] = search_latents(vae, features, rgb, views, steps, lr, eps1, eps2, lam, g).cpu().half()
        if hi % every == 0 or hi == n:
            atomic_write_bytes(partial, safetensors_save({"latents": latents}))
            atomic_write_text(partial.with_suffix(".json"), json.dumps({**meta, "done": hi}) + "\n")
            if log:
                log(f"searched {hi}/{n} images")
    atomic_write_bytes(out, safetensors_save({"latents": latents}))
    atomic_write_text(out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    partial.unlink(missing_ok=True)
    partial.with_suffix(".json").unlink(missing_ok=True)
    return meta


#: The settings of :func:`build_latent_cache` that :func:`build_latent_cache_for` passes on (all
#: but the five arguments it fills in itself: the VAE, the model, the images and where to write).
SEARCH_SETTINGS = tuple(inspect.signature(build_latent_cache).parameters)[5:]


def build_latent_cache_for(data_path: str, vae_dir: str | Path, out: str | Path, *, model: str = A2_FEATURE_MODEL,
                           split: str = "train", limit: int = 0, cache_dir: str | None = DATASET_CACHE_DIR,
                           **search: Any) -> dict[str, Any]:
    """``metaug-a2-search DATA_PATH VAE_DIR -o OUT``: search latents for the images of a dataset
    and write the cache ``out``. Returns the cache's metadata.

    The images are decoded at the VAE's own image size (uint8 ``[N, S, S, 3]``, S from the
    folder's config.json), so the cache fits the VAE that searched it.

    Args:
        data_path: image folder or CIFAR-10 archive, as :func:`~metaug_training.data.load_image_array`
            reads it; ``split`` and ``limit`` must be the run's ``data.split`` / ``data.limit``
            (the trainer refuses a cache of other images).
        vae_dir: the frozen VAE's folder (``metaug-train-vae``).
        model: the frozen encoder f that measures views (a folder, alias or Hub id).
        cache_dir: the decoded dataset's ``.npy`` cache; None decodes without one.
        search: :func:`build_latent_cache`'s settings (views, steps, lr, eps1, eps2, lam,
            batch_size, seed, device, log).

    Raises:
        ConfigError: a setting :func:`build_latent_cache` does not take (the message lists those
            it does), or ``data_path`` holds no readable images.
        VAEError: ``vae_dir`` is not a VAE folder.
    """
    unknown = sorted(set(search) - set(SEARCH_SETTINGS))
    if unknown:
        # Caught before the VAE and the dataset load: a typo costs nothing.
        raise ConfigError(f"build_latent_cache_for: unknown search setting(s) {unknown}; "
                          f"the settings are {list(SEARCH_SETTINGS)}")
    size = read_vae_config(vae_dir).image_size
    data = load_image_array(data_path, split=split, size=size, cache_dir=cache_dir, limit=limit)
    return build_latent_cache(vae_dir, model, torch.from_numpy(data.images), data.fingerprint, out, **search)
