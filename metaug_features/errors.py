"""Exceptions raised by metaug_features.

Every error a user can cause derives from :class:`MetAugError`, so a caller (or the CLI)
can catch one type and print the message, which always says what went wrong and what to do.
"""

from __future__ import annotations


class MetAugError(Exception):
    """Base class of every user-facing error of the toolkit."""


class ConfigError(MetAugError, ValueError):
    """A model config (config.json) or a training config is missing a key, has an unknown
    key, or holds a value of the wrong type or range."""


class WeightsError(MetAugError):
    """Model weights are absent, not safetensors, or do not match the config
    (missing / unexpected tensors, wrong shape or dtype)."""


class ModelNotFoundError(MetAugError):
    """A model reference resolves to nothing: no such folder, alias or Hub repo, or the Hub
    cannot be reached and the model is not cached."""


class ImageDecodeError(MetAugError):
    """One image file cannot be turned into pixels. ``reason`` is a short, stable phrase
    written to the skipped-files list (e.g. ``"truncated or corrupt image"``)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class FeatureFileError(MetAugError):
    """A feature folder written by metaug-extract is missing files or is inconsistent."""


class EvaluationInputError(MetAugError, ValueError):
    """Arrays given to an evaluator are inconsistent (counts, dimensions, NaN, labels)."""
