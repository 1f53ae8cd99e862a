"""The IDAA-shaped VAE that IDAA and A2 use as their image generator (docs/METHODS.md sections 8-9).

Architecture (for S x S RGB in [0, 1], S divisible by 4; CIFAR-10: S = 32)::

    encoder  conv 4x4/2 3 -> C/2, BN, ReLU | conv 4x4/2 C/2 -> C, BN, ReLU      [C, S/4, S/4]
             2 residual blocks (ReLU, conv 3x3, BN, ReLU, conv 3x3, + skip)
             flatten -> Linear -> mu [latent],  Linear -> logvar [latent]
    decoder  Linear latent -> C * (S/4)^2, reshape, 2 residual blocks,
             convT 4x4/2 C -> C/2, BN, ReLU | convT 4x4/2 C/2 -> 3, sigmoid       [3, S, S]

with C = 128 and latent 512 by default (docs/METHODS.md section 8: two stride-2 4x4 convolutions to 128x8x8, two
residual blocks, latent 512, a mirrored decoder). Training loss per image batch:

    L = mean((x_rec - x)^2) + kl_weight * KL(q(z|x) || N(0, I)) / (3 * S * S)

i.e. the KL of each image is divided by its number of pixel values so that both terms are
per-element (kl_weight 0.1). The generator both methods use is the deterministic
``G(x) = decode(mu(x))`` with the VAE frozen in eval mode.

A trained VAE is a folder: ``config.json`` (format "metaug-vae", the architecture, how it was
trained and its test PSNR) + ``model.safetensors`` (float32 weights).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn

from metaug_features.atomic import atomic_write_bytes, atomic_write_text
from metaug_features.errors import ConfigError, MetAugError

VAE_FORMAT = "metaug-vae"
VAE_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class VAEError(MetAugError):
    """A VAE folder is missing, malformed or does not fit its use."""


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of :class:`IDAAVAE` (``record`` holds how it was trained; not architecture)."""

    image_size: int = 32
    channels: int = 128
    latent_dim: int = 512
    kl_weight: float = 0.1
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_size < 4 or self.image_size % 4:
            raise ConfigError(f"VAE image_size must be a multiple of 4 (>= 4), got {self.image_size}")
        if self.channels < 2 or self.channels % 2:
            raise ConfigError(f"VAE channels must be an even number >= 2, got {self.channels}")
        if self.latent_dim < 1:
            raise ConfigError(f"VAE latent_dim must be >= 1, got {self.latent_dim}")
        if not (self.kl_weight >= 0 and math.isfinite(self.kl_weight)):
            raise ConfigError(f"VAE kl_weight must be a finite number >= 0, got {self.kl_weight}")


class _Residual(nn.Module):
    """x + conv3x3(ReLU(BN(conv3x3(ReLU(x))))), channels unchanged."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
            nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class IDAAVAE(nn.Module):
    """Convolutional VAE of docs/METHODS.md section 8 (see the module docstring for the layers)."""

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or VAEConfig()
        c, f = cfg.channels, cfg.image_size // 4
        self._grid = (c, f, f)
        self.features = nn.Sequential(
            nn.Conv2d(3, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(),
            nn.Conv2d(c // 2, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            _Residual(c), _Residual(c), nn.ReLU(),
        )
        self.to_mu = nn.Linear(c * f * f, cfg.latent_dim)
        self.to_logvar = nn.Linear(c * f * f, cfg.latent_dim)
        self.from_latent = nn.Linear(cfg.latent_dim, c * f * f)
        self.decoder = nn.Sequential(
            _Residual(c), _Residual(c), nn.ReLU(),
            nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(),
            nn.ConvTranspose2d(c // 2, 3, 4, 2, 1),
        )

    def _check(self, x: Tensor) -> None:
        s = self.config.image_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"the VAE takes RGB [B, 3, {s}, {s}] in [0, 1], got shape {tuple(x.shape)}")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """RGB ``[B, 3, S, S]`` in [0, 1] -> (mu, logvar), each ``[B, latent_dim]``."""
        self._check(x)
        h = self.features(x).flatten(1)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        """Latent ``[B, latent_dim]`` -> RGB ``[B, 3, S, S]`` in (0, 1)."""
        h = self.from_latent(z).view(z.shape[0], *self._grid)
        return torch.sigmoid(self.decoder(h))

    def reconstruct(self, x: Tensor) -> Tensor:
        """The deterministic generator G(x) = decode(mu(x))."""
        return self.decode(self.encode(x)[0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: (reconstruction from a sampled latent, mu, logvar)."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


def vae_loss(x: Tensor, x_rec: Tensor, mu: Tensor, logvar: Tensor, kl_weight: float) -> tuple[Tensor, Tensor, Tensor]:
    """(total, mse, kl_per_element) of the module docstring's formula; all scalars.

    kl_per_element = mean over images of sum_j -1/2 (1 + logvar_j - mu_j^2 - exp(logvar_j)),
    divided by the pixel values per image (3 * S * S)."""
    mse = F.mse_loss(x_rec, x)
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean() / x[0].numel()
    return mse + kl_weight * kl, mse, kl


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Per-image PSNR in dB of images in [0, 1]: ``10 log10(1 / mse)``; ``[B]``."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(1.0 / mse)


# ---------------------------------------------------------------------- folder I/O


def save_vae(vae: IDAAVAE, folder: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (atomic each); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}
    # Weights first, config second: a folder whose config.json exists is loadable.
    atomic_write_bytes(folder / WEIGHTS_NAME, safetensors_save(tensors, metadata={"format": "pt"}))
    cfg = {"format": VAE_FORMAT, "version": VAE_VERSION, **asdict(vae.config)}
    atomic_write_text(folder / CONFIG_NAME, json.dumps(cfg, indent=2) + "\n")
    return folder


def read_vae_config(folder: str | Path) -> VAEConfig:
    """The folder's :class:`VAEConfig`; VAEError if it is not a metaug VAE folder."""
    folder = Path(folder).expanduser()
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise VAEError(f"no VAE at {folder}: {CONFIG_NAME} is missing (train one with metaug-train-vae)")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VAEError(f"{path} is not readable JSON: {e}") from None
    if not isinstance(d, dict) or d.get("format") != VAE_FORMAT:
        raise VAEError(f"{path} is not a metaug VAE config (format {d.get('format') if isinstance(d, dict) else None!r})")
    if d.get("version") != VAE_VERSION:
        raise VAEError(f"{path}: VAE format version {d.get('version')!r} is not supported (expected {VAE_VERSION})")
    keys = ("image_size", "channels", "latent_dim", "kl_weight")
    try:
        kwargs = {k: d[k] for k in keys}
        for k in ("image_size", "channels", "latent_dim"):
            if not isinstance(kwargs[k], int) or isinstance(kwargs[k], bool) or kwargs[k] > 1 << 16:
                raise VAEError(f"{path}: {k} must be an integer <= 65536, got {kwargs[k]!r}")
        record = d.get("record", {})
        return VAEConfig(record=dict(record) if isinstance(record, dict) else {}, **kwargs)
    except KeyError as e:
        raise VAEError(f"{path} lacks the key {e.args[0]!r}") from None
    except (ConfigError, TypeError) as e:
        raise VAEError(f"{path}: {e}") from None


def load_vae(folder: str | Path, device: torch.device | str = "cpu") -> IDAAVAE:
    """A frozen VAE: eval mode, ``requires_grad`` off on every parameter, on ``device``.

    Raises VAEError for a missing/malformed folder or weights that do not match the config."""
    folder = Path(folder).expanduser()
    cfg = read_vae_config(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise VAEError(f"no VAE weights at {weights}")
    vae = IDAAVAE(cfg)
    try:
        tensors = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise VAEError(f"{weights} is not a readable safetensors file: {e}") from None
    want = vae.state_dict()
    if set(tensors) != set(want) or any(tensors[k].shape != want[k].shape for k in want):
        raise VAEError(f"{weights} does not hold the weights of the VAE described by {folder / CONFIG_NAME}")
    vae.load_state_dict(tensors)
    return freeze(vae.to(device))


def freeze(vae: IDAAVAE) -> IDAAVAE:
    """Eval mode and no parameter gradients, ever (docs/METHODS.md section 8: the VAE never accumulates gradients)."""
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae


def vae_digest(folder: str | Path) -> str:
    """sha256 of the weights file (first 16 hex digits): recorded with every run that uses it."""
    h = hashlib.sha256()
    with open(Path(folder).expanduser() / WEIGHTS_NAME, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
