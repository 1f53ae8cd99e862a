"""The contract of a training method: :class:`Method`, a frozen record of plain functions.

A method is one module (``cmc.py``, ``oucl.py``, ``metaug.py``) that builds one ``Method`` and
one row in ``table.METHODS``. The generic step (``step.py``) and the trainer call only these
functions, so nothing outside the method's own module tests the method's name:

- ``build``: the extra state the method trains or keeps (MAGs and their optimiser, the NCE
  constants), by checkpoint key; the trainer stores it in ``TrainState.extra`` and the
  checkpoint writes each piece's ``state_dict()`` under its key.
- ``encoder_loss``: the loss of the encoder update on one micro-batch (extra modules frozen).
- ``contrastive_loss``: the method's plain contrastive loss, without generators of any kind;
  view generators (IDAA's attack, its added term) score their views with it.
- ``after_bank_update``: what runs once per step after the memory-bank write (MetAug's meta
  step; the NCE constants' broadcast under DDP); returns values for the step's logs.
- ``provenance``: the entries an exported model records about the objective.
- ``negative_draw``, ``set_lr``, ``log_record``: optional hooks (fresh negatives per scoring
  call; the learning rates of the method's own optimisers; entries of each logged record).
- ``warm_start_keys``: the pieces of ``extra`` a compact state restores (weights only).

Plain functions on purpose (docs/DESIGN.md: no deep method-class inheritance): a method that
needs no hook leaves it None.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..distributed import DistContext
from ..objective import NegativeDraw, ObjectiveConfig

if TYPE_CHECKING:  # typing only: state.py does not need this module either
    from metaug_features.model import MetAugEncoder

    from ..config import TrainConfig
    from .state import TrainState

#: Prefix of the values in a step's logs that the trainer writes as one ``{"event": "meta", ...}``
#: record per step (docs/METHODS.md section 6, "Meta diagnostics"), not into the averaged logs.
META_PREFIX = "meta/"

Features = dict[str, Tensor]
#: ``(cfg, encoder, num_samples, device) -> {checkpoint key: nn.Module | Optimizer}``.
BuildFn = Callable[["TrainConfig", "MetAugEncoder", int, torch.device], dict[str, Any]]
#: ``(cfg, state, z {view: [b, d]}, sample_idx [b, K+1], objective, draw) -> (loss, detached terms)``;
#: the terms hold at least ``"loss"``.
EncoderLossFn = Callable[["TrainConfig", "TrainState", Features, Tensor, ObjectiveConfig, "NegativeDraw | None"],
                         "tuple[Tensor, dict[str, Tensor]]"]
#: ``(cfg, state, z {view: [b, d]}, sample_idx [b, K+1], objective) -> scalar loss``.
ContrastiveLossFn = Callable[["TrainConfig", "TrainState", Features, Tensor, ObjectiveConfig], Tensor]


@dataclass(frozen=True)
class StepInputs:
    """What ``after_bank_update`` may read about the step that just updated the bank.

    xs: the micro-batches' network inputs, each ``[b, C, S, S]``.
    sample_idxs: their ``[b, K+1]`` positive + negative bank rows.
    step: the global step (0-based); ctx: the process context; objective: the run's objective.
    """

    xs: tuple[Tensor, ...]
    sample_idxs: tuple[Tensor, ...]
    step: int
    ctx: DistContext
    objective: ObjectiveConfig


@dataclass(frozen=True)
class Method:
    """One training method as plain functions (see the module docstring for each one's job)."""

    name: str
    build: BuildFn
    encoder_loss: EncoderLossFn
    contrastive_loss: ContrastiveLossFn
    provenance: Callable[[TrainConfig], dict[str, Any]]
    #: ``(cfg, state, inputs) -> {log key: detached tensor}``, once per step after the bank write.
    after_bank_update: Callable[[TrainConfig, TrainState, StepInputs], dict[str, Tensor]] | None = None
    #: ``(cfg, state, sample_idx, step, ctx, phase, micro) -> NegativeDraw | None``.
    negative_draw: Callable[..., NegativeDraw | None] | None = None
    #: ``(cfg, state, factor)``: set the method's own optimisers to their base lr x ``factor``.
    set_lr: Callable[[TrainConfig, TrainState, float], None] | None = None
    #: ``(cfg, state, factor) -> {key: float}``: extra entries of each logged record.
    log_record: Callable[[TrainConfig, TrainState, float], Mapping[str, float]] | None = None
    warm_start_keys: tuple[str, ...] = ()
    #: the run's log carries meta-step records (``metaug-meta-diagnostics`` reads them).
    meta_diagnostics: bool = False
