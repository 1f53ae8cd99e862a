"""Numeric precision of the step: scores, losses and meta gradients never run in a 16-bit type."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from ..config import TrainConfig


def at_least_float32(t: Tensor) -> Tensor:
    """``t`` in float32 when it is of a lower floating precision (bf16 autocast outputs, half
    inputs), otherwise ``t`` unchanged.

    The casts exist so that scores, losses and meta gradients never run in a 16-bit type. They
    must not narrow float64: the numerical tests run a whole step in float64 (in float32 the
    second-order MAG gradient moves by a few percent on 1-ulp differences of the encoder
    weights, so two paths that round differently can only be compared in float64). For a
    float32 tensor this returns ``t`` itself, exactly as ``t.float()`` does.
    """
    if t.is_floating_point() and torch.finfo(t.dtype).bits < 32:
        return t.float()
    return t


def autocast(cfg: TrainConfig, device: torch.device):
    """bf16 autocast on CUDA when ``run.precision == "bf16"``; a no-op otherwise."""
    if cfg.run.precision == "bf16" and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def accumulate(acc: dict[str, Tensor], new: dict[str, Tensor], weight: float) -> None:
    """``acc[k] += weight * new[k]`` for every key (a missing key starts at ``weight * new[k]``)."""
    for k, v in new.items():
        acc[k] = acc[k] + v * weight if k in acc else v * weight
