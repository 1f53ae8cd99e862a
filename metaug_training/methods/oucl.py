"""``oucl``: MetAug's OUCL loss on the bank scores, without generators (docs/METHODS.md section 4)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metaug_features.model import MetAugEncoder

from ..config import TrainConfig
from ..objective import NegativeDraw, ObjectiveConfig, metaug_objective
from .interface import Features, Method
from .state import TrainState


def build(cfg: TrainConfig, encoder: MetAugEncoder, num_samples: int, device: torch.device) -> dict[str, Any]:
    """OUCL keeps no state beyond the encoder and the bank."""
    return {}


def contrastive_loss(cfg: TrainConfig, state: TrainState, z: Features, sample_idx: Tensor,
                     objective: ObjectiveConfig) -> Tensor:
    """OUCL over all pair scores of ``z`` ``{view: [b, d]}`` against the bank rows ``sample_idx``
    ``[b, K+1]``: ``L(z)`` of L_tot, no MAG terms (MetAug's generated views score with it too)."""
    loss, _ = metaug_objective(z, None, state.bank, sample_idx, objective, phase="encoder")
    return loss


def encoder_loss(cfg: TrainConfig, state: TrainState, z: Features, sample_idx: Tensor, objective: ObjectiveConfig,
                 draw: NegativeDraw | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The encoder update's loss: :func:`contrastive_loss` (no other term)."""
    loss = contrastive_loss(cfg, state, z, sample_idx, objective)
    return loss, {"loss": loss.detach()}


def provenance(cfg: TrainConfig) -> dict[str, Any]:
    """The OUCL options (MetAug records the same, plus its meta step's)."""
    return {"loss": f"oucl (beta={cfg.loss.beta}, margin={cfg.loss.margin}, weighting={cfg.loss.weighting})"}


OUCL = Method(name="oucl", build=build, encoder_loss=encoder_loss, contrastive_loss=contrastive_loss,
              provenance=provenance)
