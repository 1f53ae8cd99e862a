"""``cmc``: memory-bank CMC (docs/METHODS.md section 3): InfoNCE (or NCE) over the scores of
every ordered view pair against the bank."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metaug_features.model import MetAugEncoder

from ..config import TrainConfig
from ..losses import NCELoss, infonce_loss
from ..memory_bank import view_pairs
from ..objective import NegativeDraw, ObjectiveConfig
from .interface import Features, Method, StepInputs
from .state import TrainState


def build(cfg: TrainConfig, encoder: MetAugEncoder, num_samples: int, device: torch.device) -> dict[str, Any]:
    """The NCE constants (one per ordered view pair) when ``loss.cmc == "nce"``; nothing for InfoNCE."""
    if cfg.loss.cmc != "nce":
        return {}
    return {"nce": NCELoss(num_samples, len(view_pairs(cfg.model.views)), cfg.loss.temperature).to(device)}


def contrastive_loss(cfg: TrainConfig, state: TrainState, z: Features, sample_idx: Tensor,
                     objective: ObjectiveConfig) -> Tensor:
    """Sum over the ordered view pairs of InfoNCE at temperature T (or NCE) of embeddings ``z``
    ``{view: [b, d]}`` as anchors against the bank rows ``sample_idx`` ``[b, K+1]``."""
    bank = state.bank
    scores = bank.scores(z, sample_idx)
    tensors = [scores[p] for p in bank.pairs]
    if cfg.loss.cmc == "nce":
        return state.extra["nce"](tensors)
    return infonce_loss(tensors, cfg.loss.temperature)


def encoder_loss(cfg: TrainConfig, state: TrainState, z: Features, sample_idx: Tensor, objective: ObjectiveConfig,
                 draw: NegativeDraw | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The encoder update's loss: :func:`contrastive_loss` (no other term)."""
    loss = contrastive_loss(cfg, state, z, sample_idx, objective)
    return loss, {"loss": loss.detach()}


def after_bank_update(cfg: TrainConfig, state: TrainState, inputs: StepInputs) -> dict[str, Tensor]:
    """NCE's constant Z is estimated from the first batch: under DDP all ranks keep rank 0's."""
    nce = state.extra.get("nce")
    if nce is not None and inputs.ctx.distributed and inputs.step == 0:
        torch.distributed.broadcast(nce.normalizers, 0)
    return {}


def provenance(cfg: TrainConfig) -> dict[str, Any]:
    return {"loss": f"{cfg.loss.cmc} (T={cfg.loss.temperature})"}


CMC = Method(name="cmc", build=build, encoder_loss=encoder_loss, contrastive_loss=contrastive_loss,
             provenance=provenance, after_bank_update=after_bank_update)
