"""Range and choice checks the config sections use to validate themselves.

Every check raises :class:`~metaug_features.errors.ConfigError` naming the dotted key
(``"loss.beta"``), so a bad recipe or override says exactly which setting to fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from metaug_features.errors import ConfigError


def check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"config key {key!r} must be one of {list(choices)}, got {value!r}")


def check_positive(key: str, value: float, allow_zero: bool = False) -> None:
    """``value`` must be finite and > 0 (>= 0 with ``allow_zero``)."""
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"config key {key!r} must be a finite number {bound}, got {value!r}")


def check_at_least(key: str, value: int, low: int) -> None:
    """Integer ``value`` must be >= ``low``."""
    if value < low:
        raise ConfigError(f"config key {key!r} must be >= {low}, got {value}")


def check_non_empty(key: str, value: str, what: str) -> None:
    """String ``value`` must not be empty; ``what`` says what it should name."""
    if not value:
        raise ConfigError(f"config key {key!r} must {what}")
