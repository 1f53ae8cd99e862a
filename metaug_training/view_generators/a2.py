"""A2's generated views (docs/METHODS.md section 9): VAE decodes of perturbed or searched
latents, scored by one of the A2 losses; the searched-latent cache of ``metaug-a2-search``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from metaug_features.errors import ConfigError

from ..a2_losses import A2_LOSS_FNS
from ..augment import apply_crops
from ..data import step_generator
from ..vae import IDAAVAE, load_vae, vae_digest
from .a2_calibration import calibrate_from_model
from .contract import (
    ContrastiveFn,
    Features,
    GeneratorBatch,
    ViewGenerator,
    check_vae_size,
)


class A2Views(ViewGenerator):
    """A2 with a VAE generator (docs/METHODS.md section 9), labelled as such everywhere.

    perturb: x_gen = G(mu(x) + sigma * noise) of the batch's crops;
    search: x_gen = the batch's crop of decode(w), w one of the image's searched latents
    (``latents`` ``[N, K, D]`` float16 from ``metaug-a2-search``), chosen at random.
    """

    name = "a2"
    needs_encoder = False

    def __init__(self, vae: IDAAVAE, *, mode: str, sigma: float, loss: str, alpha: float, tau: float, weight: float,
                 seed: int, latents: Tensor | None = None) -> None:
        # No defaults here: the ``a2`` config section defines them (build_view_generators).
        super().__init__(vae, weight)
        if mode not in ("perturb", "search"):
            raise ConfigError(f"config key 'a2.mode' must be 'perturb' or 'search', got {mode!r}")
        if mode == "search" and latents is None:
            raise ConfigError("A2 search mode needs the searched latents (config key 'a2.cache')")
        self.mode, self.sigma, self.loss_name = mode, float(sigma), loss
        self.alpha, self.tau, self.seed = float(alpha), float(tau), int(seed)
        if loss not in A2_LOSS_FNS:
            raise ConfigError(f"config key 'a2.loss' must be one of {sorted(A2_LOSS_FNS)}, got {loss!r}")
        self.loss_fn = A2_LOSS_FNS[loss]
        self.__dict__["latents"] = latents
        #: the sigma calibration record (set by ``build_view_generators``), or None.
        self.calibration: dict[str, Any] | None = None

    def get_extra_state(self) -> dict[str, Any]:
        # The calibrated sigma travels with the checkpoint, so a resume uses the same one.
        return {"sigma": self.sigma}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.sigma = float(state["sigma"])

    def _draw(self, batch: GeneratorBatch, shape_tail: tuple[int, ...], kind: str) -> Tensor:
        g = step_generator(self.seed, f"a2-{kind}", batch.step)
        if kind == "noise":
            full = torch.randn(batch.global_size, *shape_tail, generator=g)
        else:
            full = torch.randint(0, shape_tail[0], (batch.global_size,), generator=g)
        return full[batch.rows.cpu()]

    @torch.no_grad()
    def generate(self, batch: GeneratorBatch, attack: Callable[[Tensor], Tensor] | None) -> Tensor:
        vae = self.vae
        if self.mode == "perturb":
            self._check_size(batch.rgb)
            mu = vae.encode(batch.rgb)[0]
            noise = self._draw(batch, (mu.shape[1],), "noise").to(mu.device, mu.dtype)
            return vae.decode(mu + self.sigma * noise)
        latents = self.latents
        k = self._draw(batch, (latents.shape[1],), "choice")
        w = latents[batch.idx.cpu(), k].to(batch.rgb.device, torch.float32)
        return apply_crops(vae.decode(w), batch.crops, batch.rgb.shape[-1])

    def loss(self, z: Features, z_gen: Features, contrastive: ContrastiveFn) -> Tensor:
        views = list(z)
        return self.loss_fn([z[v] for v in views], [z_gen[v] for v in views], self.alpha, self.tau)

    def describe(self) -> dict[str, Any]:
        rec = {"name": self.name, "generator": "VAE (not the paper's StyleGAN2)", "mode": self.mode,
               "loss": self.loss_name, "alpha": self.alpha, "tau": self.tau, "weight": self.weight}
        if self.mode == "perturb":
            rec["sigma"] = self.sigma
        return rec


def read_latent_cache(path: str | Path) -> tuple[Tensor, dict[str, Any]]:
    """(latents ``[N, K, D]`` float16, metadata) of a ``metaug-a2-search`` cache file."""
    p = Path(path).expanduser()
    meta_path = p.with_suffix(".json")
    if not p.is_file() or not meta_path.is_file():
        raise ConfigError(f"config key 'a2.cache': no latent cache at {p} (with {meta_path.name}); "
                          "make one with metaug-a2-search")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    latents = load_file(str(p))["latents"]
    return latents, meta


#: ``(cfg, encoder, images_u8, fingerprint, device) -> ViewGenerator | None`` (None: its
#: config section switches it off).
GeneratorBuilder = Callable[[Any, nn.Module, Tensor, str, torch.device], "ViewGenerator | None"]


def build_a2(cfg: Any, encoder: nn.Module, images_u8: Tensor, fingerprint: str,
             device: torch.device) -> ViewGenerator | None:
    """A2's generated views when ``a2.enabled`` (docs/METHODS.md section 9): the searched
    latents checked against this dataset and VAE, sigma calibrated when ``a2.sigma`` is 0."""
    a = cfg.a2
    if not a.enabled:
        return None
    check_vae_size("a2", a.vae, encoder)
    vae = load_vae(a.vae, device)
    latents = None
    if a.mode == "search":
        latents, meta = read_latent_cache(a.cache)
        if meta.get("fingerprint") != fingerprint or latents.shape[0] != images_u8.shape[0]:
            raise ConfigError(f"config key 'a2.cache': {a.cache} was searched on other images "
                              f"({meta.get('num_images')} images); run metaug-a2-search on this dataset")
        if meta.get("vae_sha256") != vae_digest(a.vae):
            raise ConfigError(f"config key 'a2.cache': {a.cache} was searched with another VAE than {a.vae}")
    gen = A2Views(vae, mode=a.mode, sigma=a.sigma, loss=a.loss, alpha=a.alpha, tau=a.tau, weight=a.weight,
                  seed=cfg.run.seed, latents=latents).to(device)
    if a.mode == "perturb" and a.sigma == 0:
        gen.calibration = calibrate_from_model(vae, a.calibration_model, images_u8, a.target_cosine,
                                               a.calibration_images, cfg.run.seed, device)
        gen.sigma = gen.calibration["sigma"]
    return gen
