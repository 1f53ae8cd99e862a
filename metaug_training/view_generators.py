"""View generators: IDAA and A2 as extra views that plug into any method (docs/METHODS.md sections 8-9).

The contract (:class:`ViewGenerator`) is deliberately small, so that the training step has no
special case per generator (``methods.generated_view_loss`` is the only caller):

- ``generate(batch, attack)`` turns the batch's RGB crops ``[b, 3, S, S]`` into one generated
  RGB view per image, without gradients into any parameter. A generator that
  ``needs_encoder`` (IDAA) receives ``attack``: a function RGB -> the method's contrastive loss
  under the *current* encoder (the adversary's objective); the others get None.
- ``embed(encoder, x)`` embeds the generated view's network input (IDAA with ``separate_bn``
  routes it through its own BN layers); ``loss(z, z_gen, contrastive)`` is the added term,
  weighted by ``weight`` and added to the method's encoder loss.
- ``parameters()`` are trainable extras (IDAA's separate BN) that the encoder's optimiser
  updates; ``state_dict()`` is what a checkpoint keeps. The frozen VAE is neither: it is
  loaded from its folder and never accumulates gradients.

Randomness (A2's noise, the choice of a searched latent) is drawn for the whole global batch
from a generator seeded with (seed, step) and sliced by the rows' positions, so a run with
several ranks or micro-batches draws the same numbers as one process.
"""

from __future__ import annotations

import abc
import json
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.func import functional_call

from metaug_features.errors import ConfigError

from .a2_losses import A2_LOSS_FNS
from .augment import CropParams, apply_crops
from .data import step_generator
from .meta import _MethodCall
from .vae import IDAAVAE, load_vae, read_vae_config, vae_digest

Features = dict[str, Tensor]
#: the method's contrastive loss of embeddings ``{view: [b, d]}`` of this batch's images.
ContrastiveFn = Callable[[Mapping[str, Tensor]], Tensor]


@dataclass
class GeneratorBatch:
    """What a generator may read about the rows of one (micro-)batch.

    rgb: float ``[b, 3, S, S]`` the augmented crops in [0, 1] (before Lab), on the device.
    idx: LongTensor ``[b]`` dataset indices.
    rows: LongTensor ``[b]`` positions of these rows in the global batch (for seeded draws).
    global_size: rows in the global batch.
    step: global step.
    crops: the crop boxes and flips that made ``rgb`` from the stored images.
    """

    rgb: Tensor
    idx: Tensor
    rows: Tensor
    global_size: int
    step: int
    crops: CropParams

    def chunk(self, n: int) -> list["GeneratorBatch"]:
        """``n`` micro-batches (the same split as ``Tensor.chunk`` of the network input)."""
        out, lo = [], 0
        for part in self.rgb.chunk(n):
            hi = lo + part.shape[0]
            out.append(GeneratorBatch(part, self.idx[lo:hi], self.rows[lo:hi], self.global_size, self.step,
                                      self.crops[lo:hi]))
            lo = hi
        return out


def _bn_state_names(module: nn.Module) -> tuple[list[str], list[str]]:
    """(parameter names, buffer names) of every BatchNorm layer of ``module``."""
    params, buffers = [], []
    for prefix, m in module.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params += [f"{prefix}.{n}" for n, _ in m.named_parameters(recurse=False)]
            buffers += [f"{prefix}.{n}" for n, _ in m.named_buffers(recurse=False)]
    return params, buffers


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict / buffer names may not hold dots


class ViewGenerator(nn.Module, abc.ABC):
    """Base class of the contract above. Subclasses set ``name``, ``needs_encoder`` and
    ``weight`` and implement ``generate`` and ``loss``."""

    name = "generator"
    needs_encoder = False

    def __init__(self, vae: IDAAVAE, weight: float) -> None:
        super().__init__()
        # Kept out of the module tree on purpose: not a parameter, not in state_dict.
        self.__dict__["vae"] = vae
        self.weight = float(weight)

    @abc.abstractmethod
    def generate(self, batch: GeneratorBatch, attack: Callable[[Tensor], Tensor] | None) -> Tensor:
        """One generated RGB view per row of ``batch.rgb``: float ``[b, 3, S, S]`` in [0, 1],
        computed without gradients into any parameter. ``attack`` (RGB -> the method's loss
        under the current encoder) is given iff ``needs_encoder``."""

    def embed(self, encoder: nn.Module, x: Tensor, update_bn: bool = True) -> Features:
        """``encoder.embed(x)``: the generated view's embeddings ``{view: [b, d]}``; with
        ``update_bn=False`` no BN running statistic changes."""
        if update_bn:
            return encoder.embed(x)
        # BN in train mode writes running stats into the buffers it is given: give it copies.
        copies = {"m." + n: b.clone() for n, b in encoder.named_buffers()}
        return functional_call(_MethodCall(encoder, "embed"), copies, (x,), strict=False)

    @abc.abstractmethod
    def loss(self, z: Features, z_gen: Features, contrastive: ContrastiveFn) -> Tensor:
        """The added term (unweighted) from the batch's embeddings ``z`` and the generated
        view's ``z_gen`` (``{view: [b, d]}`` each); ``contrastive`` scores embeddings with the
        method's own loss against the memory bank."""

    def describe(self) -> dict[str, Any]:
        """A JSON record of the generator (provenance, logs)."""
        return {"name": self.name}

    def _check_size(self, rgb: Tensor) -> None:
        s = self.vae.config.image_size
        if rgb.shape[-1] != s or rgb.shape[-2] != s:
            raise ConfigError(f"{self.name}: the VAE works on {s}x{s} images but the training crops are "
                              f"{rgb.shape[-2]}x{rgb.shape[-1]}; train a VAE at the encoder's input size")


class IDAAViews(ViewGenerator):
    """IDAA's adversarial latent view (docs/METHODS.md section 8): x_adv = x1 + G(z') - G(x1), z' the result of
    ``steps`` sign-gradient ascent steps of size eps / steps from z = mu(x1) on ``attack``."""

    name = "idaa"
    needs_encoder = True

    def __init__(self, vae: IDAAVAE, *, eps: float, steps: int, weight: float,
                 separate_bn_of: nn.Module | None = None) -> None:
        # No defaults here: the ``idaa`` config section defines them (build_view_generators).
        super().__init__(vae, weight)
        self.eps = float(eps)
        self.steps = int(steps)
        self.bn_params = nn.ParameterDict()
        self._bn_names: list[str] = []
        if separate_bn_of is not None:
            # Own BN for adversarial inputs, initialised from the encoder's (affine + running stats).
            pnames, bnames = _bn_state_names(separate_bn_of)
            state = dict(separate_bn_of.named_parameters()) | dict(separate_bn_of.named_buffers())
            for n in pnames:
                self.bn_params[_key(n)] = nn.Parameter(state[n].detach().clone())
            for n in bnames:
                self.register_buffer("bn_" + _key(n), state[n].detach().clone())
            self._bn_names = pnames + bnames

    @property
    def separate_bn(self) -> bool:
        return bool(self._bn_names)

    def _bn_overrides(self, clone_buffers: bool) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for n in self._bn_names:
            k = _key(n)
            if k in self.bn_params:
                out["m." + n] = self.bn_params[k]
            else:
                b = getattr(self, "bn_" + k)
                out["m." + n] = b.clone() if clone_buffers else b
        return out

    def embed(self, encoder: nn.Module, x: Tensor, update_bn: bool = True) -> Features:
        """Embeddings of adversarial inputs: through the separate BN when configured; with
        ``update_bn=False`` no BN running statistic changes (the attack's forwards)."""
        if not self.separate_bn:
            return super().embed(encoder, x, update_bn)
        overrides = self._bn_overrides(clone_buffers=not update_bn)
        return functional_call(_MethodCall(encoder, "embed"), overrides, (x,), strict=False)

    def generate(self, batch: GeneratorBatch, attack: Callable[[Tensor], Tensor] | None) -> Tensor:
        if attack is None:
            raise ValueError("IDAA needs the attack objective (it needs the current encoder)")
        rgb = batch.rgb
        self._check_size(rgb)
        vae = self.vae
        with torch.no_grad():
            z = vae.encode(rgb)[0]
            g0 = vae.decode(z)
        step = self.eps / self.steps
        for _ in range(self.steps):
            z = z.detach().requires_grad_(True)
            with torch.enable_grad():
                x_adv = (rgb + (vae.decode(z) - g0)).clamp(0.0, 1.0)
                # Gradient w.r.t. the latent only: autograd.grad fills no parameter's .grad.
                (grad,) = torch.autograd.grad(attack(x_adv), z)
            z = z.detach() + step * grad.sign()
        with torch.no_grad():
            # At eps = 0, z == mu(x1) exactly, so decode(z) - g0 is exactly 0 and x_adv == x1.
            return (rgb + (vae.decode(z) - g0)).clamp(0.0, 1.0)

    def loss(self, z: Features, z_gen: Features, contrastive: ContrastiveFn) -> Tensor:
        """The method's own contrastive loss of the adversarial view (scored like the
        batch: anchors against the memory bank at the batch's sample indices)."""
        return contrastive(z_gen)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "eps": self.eps, "steps": self.steps, "weight": self.weight,
                "separate_bn": self.separate_bn}


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


# ---------------------------------------------------------------------- A2 sigma calibration


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


# ---------------------------------------------------------------------- building from a config


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


def build_view_generators(cfg: Any, encoder: nn.Module, images_u8: Tensor, fingerprint: str,
                          device: torch.device) -> list[ViewGenerator]:
    """The generators ``cfg.idaa`` / ``cfg.a2`` switch on, in that order (on ``device``).

    Args:
        cfg: the TrainConfig.
        encoder: the run's encoder (IDAA's separate BN copies its BN layers).
        images_u8: uint8 ``[N, S, S, 3]`` training images (A2 calibration, cache checks).
        fingerprint: the dataset fingerprint (a search cache must have been made on it).
    """
    gens: list[ViewGenerator] = []
    size = encoder.config.input_size
    for section in ("idaa", "a2"):
        sec = getattr(cfg, section)
        if sec.enabled:
            vae_size = read_vae_config(sec.vae).image_size
            if vae_size != size:
                raise ConfigError(f"config key '{section}.vae': the VAE works on {vae_size} px images but the encoder's "
                                  f"training crops are {size} px; train a VAE at {size} px (metaug-train-vae --image-size)")
    if cfg.idaa.enabled:
        i = cfg.idaa
        gens.append(IDAAViews(load_vae(i.vae, device), eps=i.eps, steps=i.steps, weight=i.weight,
                              separate_bn_of=encoder if i.separate_bn else None).to(device))
    if cfg.a2.enabled:
        a = cfg.a2
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
        gens.append(gen)
    return gens


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
