"""The contract every view generator fills (IDAA, A2, a new one; docs/METHODS.md sections 8-9).

The contract (:class:`ViewGenerator`) is deliberately small, so that the training step has no
special case per generator (``methods.step.generated_view_loss`` is the only caller):

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metaug_features.errors import ConfigError

from ..augment import CropParams
from ..meta import _MethodCall
from ..vae import IDAAVAE, read_vae_config

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

    def chunk(self, n: int) -> list[GeneratorBatch]:
        """``n`` micro-batches (the same split as ``Tensor.chunk`` of the network input)."""
        out, lo = [], 0
        for part in self.rgb.chunk(n):
            hi = lo + part.shape[0]
            out.append(GeneratorBatch(part, self.idx[lo:hi], self.rows[lo:hi], self.global_size, self.step,
                                      self.crops[lo:hi]))
            lo = hi
        return out


class ViewGenerator(nn.Module, abc.ABC):
    """Base class of the contract above. Subclasses set ``name``, ``needs_encoder`` and
    ``weight`` and implement ``generate`` and ``loss``."""

    name = "generator"
    needs_encoder = False

    def __init__(self, vae: IDAAVAE | None, weight: float) -> None:
        """``vae``: the frozen VAE the generator decodes with (None for a generator without one)."""
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


#: ``(cfg, encoder, images_u8, fingerprint, device) -> ViewGenerator | None`` (None: its
#: config section switches it off).
GeneratorBuilder = Callable[[Any, nn.Module, Tensor, str, torch.device], "ViewGenerator | None"]


def check_vae_size(section: str, vae_path: str, encoder: nn.Module) -> None:
    """The VAE must work on the encoder's training crops (a ConfigError naming the fix)."""
    vae_size, size = read_vae_config(vae_path).image_size, encoder.config.input_size
    if vae_size != size:
        raise ConfigError(f"config key '{section}.vae': the VAE works on {vae_size} px images but the encoder's "
                          f"training crops are {size} px; train a VAE at {size} px (metaug-train-vae --image-size)")
