"""The view generators by config section: one row per generator (docs/EXTENDING.md, "Add a view
generator"), a visible dict literal, never filled at import time (docs/DESIGN.md)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .a2 import build_a2
from .contract import GeneratorBuilder, ViewGenerator
from .idaa import build_idaa

#: The view generators by config section, applied in this order each step: one row per
#: generator (docs/EXTENDING.md, "Add a view generator").
VIEW_GENERATORS: dict[str, GeneratorBuilder] = {
    "idaa": build_idaa,
    "a2": build_a2,
}


def build_view_generators(cfg: Any, encoder: nn.Module, images_u8: Tensor, fingerprint: str,
                          device: torch.device) -> list[ViewGenerator]:
    """The generators of :data:`VIEW_GENERATORS` that ``cfg`` switches on, in table order (on ``device``).

    Args:
        cfg: the TrainConfig.
        encoder: the run's encoder (IDAA's separate BN copies its BN layers).
        images_u8: uint8 ``[N, S, S, 3]`` training images (A2 calibration, cache checks).
        fingerprint: the dataset fingerprint (a search cache must have been made on it).
    """
    built = [build(cfg, encoder, images_u8, fingerprint, device) for build in VIEW_GENERATORS.values()]
    return [g for g in built if g is not None]
