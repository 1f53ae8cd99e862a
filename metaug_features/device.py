"""Device specs: the one parser of ``auto | cpu | cuda | cuda:N`` for the library, the training
code and every command's ``--device`` option.

``auto`` is the first CUDA GPU when one is visible, else the CPU. A malformed spec, or a CUDA
device that this machine does not have, is a :class:`~metaug_features.errors.MetAugError`
that says what is available.
"""

from __future__ import annotations

import re

import torch

from .errors import MetAugError

DEVICE_SPECS = "auto | cpu | cuda | cuda:N"
"""The accepted forms, as the help texts and error messages spell them."""

_SPEC = re.compile(r"auto|cpu|cuda(?::(\d+))?")


def check_device_spec(spec: str) -> str:
    """Return ``spec`` (surrounding spaces removed) if it is one of ``auto``, ``cpu``, ``cuda``,
    ``cuda:N``; raise :class:`MetAugError` otherwise. Does not look at the hardware."""
    text = str(spec).strip()
    if not _SPEC.fullmatch(text):
        raise MetAugError(f"unknown device {str(spec)!r}: use {DEVICE_SPECS}")
    return text


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(spec: str | torch.device) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (or a ``torch.device``) -> the torch device.

    ``auto`` is ``cuda`` when a CUDA GPU is visible, else ``cpu``. Raises :class:`MetAugError`
    for any other spec, and for a CUDA device this machine does not have (naming how many
    GPUs it has).
    """
    text = check_device_spec(str(spec))  # str(torch.device("cuda:1")) == "cuda:1"
    count = _cuda_count()
    if text == "auto":
        return torch.device("cuda" if count else "cpu")
    device = torch.device(text)
    if device.type == "cuda":
        if not count:
            raise MetAugError(f"device {text!r} asked for, but no CUDA GPU is available; use cpu or auto")
        if device.index is not None and device.index >= count:
            raise MetAugError(f"device {text!r} asked for, but this machine has {count} CUDA GPU(s) "
                              f"(cuda:0 to cuda:{count - 1})")
    return device


__all__ = ["DEVICE_SPECS", "check_device_spec", "resolve_device"]
