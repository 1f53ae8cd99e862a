"""The learning-rate schedule: one pure function of the global step, used by the training loop
and by the release tooling (which reports how far down the cosine a leg's model was taken).

docs/METHODS.md section 6: the paper's step schedule is x0.1 at epochs 120/160/200 of 300; the
CPU recipes use the cosine schedule.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the schedule needs only the optimiser section's fields
    from metaug_training.config import TrainConfig


def cosine_factor(progress: float) -> float:
    """``(1 + cos(pi * t / T)) / 2`` at ``progress = t / T`` (clamped to [0, 1]): 1 at the start,
    0 at the end of the schedule."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def lr_factor(cfg: TrainConfig, step: int, spe: int) -> float:
    """Multiplier of the base learning rates at global step ``step`` (0-based), ``spe`` steps per epoch.

    "step": ``lr_decay ** (number of milestones <= epoch)`` with epoch = step // spe; "cosine":
    :func:`cosine_factor` per step over T = epochs * spe. A linear warm-up over ``warmup_epochs``
    multiplies either.
    """
    o = cfg.optim
    total = o.epochs * spe
    if o.schedule == "cosine":
        f = cosine_factor(step / total)
    else:
        epoch = step // spe
        f = o.lr_decay ** sum(epoch >= m for m in o.milestones)
    warm = o.warmup_epochs * spe
    if warm > 0 and step < warm:
        f *= (step + 1) / warm
    return f
