"""IDAA's adversarial views (docs/METHODS.md section 8): a VAE-latent attack on the method's own
contrastive loss, optionally embedded through a separate copy of the encoder's BN layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..meta import _MethodCall
from ..vae import IDAAVAE, load_vae
from .contract import (
    ContrastiveFn,
    Features,
    GeneratorBatch,
    ViewGenerator,
    check_vae_size,
)


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


def build_idaa(cfg: Any, encoder: nn.Module, images_u8: Tensor, fingerprint: str,
               device: torch.device) -> ViewGenerator | None:
    """IDAA's adversarial views when ``idaa.enabled`` (docs/METHODS.md section 8)."""
    i = cfg.idaa
    if not i.enabled:
        return None
    check_vae_size("idaa", i.vae, encoder)
    return IDAAViews(load_vae(i.vae, device), eps=i.eps, steps=i.steps, weight=i.weight,
                     separate_bn_of=encoder if i.separate_bn else None).to(device)
