"""What a training step mutates: :class:`TrainState`, the :class:`Embedder` DDP wraps, and the
optimiser factory every method's state uses (docs/METHODS.md sections 3-6)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from metaug_features.model import MetAugEncoder

from ..memory_bank import MemoryBank
from ..phase_timer import NO_TIMER
from ..view_generators import ViewGenerator


class Embedder(nn.Module):
    """``forward(x) = encoder.embed(x)``: the module DDP wraps, so that the training forward
    (the projection-head embeddings, not the frozen features) goes through DDP's hooks."""

    def __init__(self, encoder: MetAugEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.encoder.embed(x)


def make_optimizer(kind: str, params, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with momentum (official code) or Adam (the paper's text; momentum unused)."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@dataclass
class TrainState:
    """Everything a step mutates. ``model`` is the ``Embedder`` (DDP-wrapped under torchrun)
    around ``encoder``; ``extra`` holds the method's own pieces by checkpoint key (``Method.build``:
    ``mags`` + ``mag_optimizer`` for metaug, ``nce`` for cmc + NCE, nothing for oucl)."""

    encoder: MetAugEncoder
    model: nn.Module
    bank: MemoryBank
    opt: torch.optim.Optimizer
    #: the method's pieces: ``nn.Module``s (checkpointed, frozen during the encoder step) and
    #: optimisers (checkpointed), each under the key its ``state_dict()`` is saved with.
    extra: dict[str, Any] = field(default_factory=dict)
    #: device bool scalar: became True if any loss so far was NaN/inf (checked at log steps).
    nonfinite: Tensor | None = None
    #: phase timer (``with timer("forward"):``); a no-op unless a benchmark sets a PhaseTimer.
    timer: Any = NO_TIMER
    #: the encoder-step forward ``x -> {view: [b, d]}``: ``model`` itself, or its
    #: ``torch.compile``d version (``run.compile``); same parameters either way.
    forward: Any = None
    #: the view generators (``view_generators.VIEW_GENERATORS``: IDAA, A2), applied in this order each step.
    generators: list[ViewGenerator] = field(default_factory=list)

    # Read-only shortcuts to the shipped methods' pieces (tests and benchmarks read them).
    @property
    def mags(self) -> nn.ModuleDict | None:
        return self.extra.get("mags")

    @property
    def mag_opt(self) -> torch.optim.Optimizer | None:
        return self.extra.get("mag_optimizer")

    @property
    def nce(self) -> nn.Module | None:
        return self.extra.get("nce")

    def extra_modules(self) -> list[nn.Module]:
        """The ``nn.Module`` pieces of ``extra`` (not the optimisers), in insertion order."""
        return [m for m in self.extra.values() if isinstance(m, nn.Module)]

    def rank_synced_tensors(self) -> list[Tensor]:
        """Every trained tensor that must be identical on all DDP ranks: encoder, extra-module
        (MAG) and generator parameters and the memory bank. BN running statistics are not: DDP
        broadcasts rank 0's at each forward, and each rank then updates them with its own batch."""
        tensors = list(self.encoder.parameters()) + [self.bank.bank]
        tensors += [p for m in self.extra_modules() for p in m.parameters()]
        return tensors + [p for g in self.generators for p in g.parameters()]


@contextlib.contextmanager
def frozen(modules: Iterable[nn.Module]) -> Iterator[None]:
    """The method's extra modules frozen for the encoder step (docs/METHODS.md section 6,
    step 1): no weight gradients are computed for them (gradients still flow *through* them
    into the encoder)."""
    flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
