"""The encoder configuration: everything needed to rebuild a network and its preprocessing.

One frozen dataclass, :class:`EncoderConfig`, is the single source of truth. It is written to a
model folder as ``config.json`` (with every field spelled out, so a folder never depends on this
version's defaults) and read back strictly: an unknown key, a missing key or a value of the wrong
type or range is a :class:`~metaug_features.errors.ConfigError` that names the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .encoders.registry import ENCODERS, encoder_architecture
from .errors import ConfigError

FORMAT_VERSION = 1
MODEL_TYPE = "metaug-encoder"

#: Views in their fixed concatenation order, and the input channels each half-network takes.
VIEW_ORDER: tuple[str, ...] = ("l", "ab", "ori")
VIEW_CHANNELS: dict[str, int] = {"l": 1, "ab": 2, "ori": 3}

#: Lab normalisation (docs/METHODS.md section 1): (L, a, b) -> [-1, 1]-ish, as the CMC code does.
LAB_MEAN: tuple[float, float, float] = (50.0, 6.025, -6.6895)
LAB_STD: tuple[float, float, float] = (50.0, 92.208, 101.1675)
#: RGB normalisation for ``ori_space="rgb"`` (the usual ImageNet statistics).
RGB_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
RGB_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Architecture name -> feature layers, default sizes and checks: the encoder table
#: (metaug_features.encoders.registry), re-exported under its old name for older imports.
ARCHITECTURES = ENCODERS
#: Layers whose weights are shared with an earlier layer (no weights of their own).
_WEIGHTLESS_ALIASES = {"conv_pool": "conv"}

# Bounds that refuse absurd configs before any large allocation.
_MAX_INPUT_SIZE = 1024
_MAX_WIDTH = 4.0
_MAX_EMBEDDING_DIM = 4096


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture and preprocessing of a split (one half-network per view) encoder.

    Attributes:
        architecture: a name of the encoder table (metaug_features.encoders.registry.ENCODERS):
            "alexnet224" (paper geometry, 224 input), "alexnet32" (CIFAR-native: conv1 5x5
            stride 1) or "resnet50" (one ResNet-50 trunk per view).
        width: channel / fc-width multiplier of the AlexNet halves (ResNet-50: must be 1.0).
        views: the views, a non-empty subset of ("l", "ab", "ori") in that order.
        ori_space: colour space of the "ori" view: "lab" (official code) or "rgb" (paper text).
        input_size: side of the square crop fed to the network (default: the table row's, per
            stem).
        resize_size: eval preprocessing resizes the shorter side to this, then centre-crops
            ``input_size`` (the two equal: the whole image is resized to the square). Default:
            the row's for its default input; for another input, the input itself up to 64 px,
            else ``input_size * 256 / 224`` (the usual ImageNet ratio).
        embedding_dim: output dimension of the projection head (training only).
        stem: ResNet-50 first layers: "imagenet" (7x7/2 conv + max-pool) or "cifar"
            (3x3/1 conv, no max-pool). AlexNet: must be "imagenet" (unused). The stems an
            architecture accepts are the keys of its row's ``sizes``.
        truncate_after: None keeps every layer including the projection head; a layer name
            keeps the weights up to that feature layer only (a smaller release folder).
        default_layer: the feature layer returned when none is asked for.
        weights_dtype: dtype of the tensors in model.safetensors ("float32" or "float16");
            weights are always used in float32.
        lab_mean, lab_std, rgb_mean, rgb_std: input normalisation (never passed by users).
        provenance: free-form training record (method, dataset, epochs, git SHA, ...).
    """

    architecture: str = "alexnet32"
    width: float = 1.0
    views: tuple[str, ...] = VIEW_ORDER
    ori_space: str = "lab"
    input_size: int | None = None
    resize_size: int | None = None
    embedding_dim: int = 128
    stem: str = "imagenet"
    truncate_after: str | None = None
    default_layer: str | None = None
    weights_dtype: str = "float32"
    lab_mean: tuple[float, float, float] = LAB_MEAN
    lab_std: tuple[float, float, float] = LAB_STD
    rgb_mean: tuple[float, float, float] = RGB_MEAN
    rgb_std: tuple[float, float, float] = RGB_STD
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Normalise sequences given as lists (e.g. from JSON) to tuples, then fill the
        # architecture-dependent defaults, then validate. object.__setattr__ because frozen.
        for name in ("views", "lab_mean", "lab_std", "rgb_mean", "rgb_std"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        arch = encoder_architecture(self.architecture)
        if not isinstance(self.stem, str) or self.stem not in arch.sizes:
            raise ConfigError(f"config key 'stem' must be one of {list(arch.sizes)} for {self.architecture}, got {self.stem!r}")
        default_input, default_resize = arch.sizes[self.stem]
        if self.input_size is None:
            object.__setattr__(self, "input_size", default_input)
        if self.resize_size is None:
            if self.input_size == default_input:
                resize = default_resize
            elif isinstance(self.input_size, (int, float)):
                resize = self.input_size if self.input_size <= 64 else round(self.input_size * 256 / 224)
            else:
                resize = self.input_size  # a wrong type: _validate names it
            object.__setattr__(self, "resize_size", resize)
        if self.default_layer is None:
            object.__setattr__(self, "default_layer", arch.default_layer)
        if not isinstance(self.provenance, Mapping):
            raise ConfigError(f"config key 'provenance' must be a JSON object, got {type(self.provenance).__name__}")
        object.__setattr__(self, "provenance", dict(self.provenance))
        self._validate()

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        _check_type("width", self.width, (int, float))
        if not (0 < float(self.width) <= _MAX_WIDTH) or not math.isfinite(self.width):
            raise ConfigError(f"config key 'width' must be in (0, {_MAX_WIDTH}], got {self.width}")
        arch = ENCODERS[self.architecture]
        if not arch.width_multiplier and self.width != 1.0:
            raise ConfigError(f"config key 'width' must be 1.0 for {self.architecture} (no width multiplier)")
        if not isinstance(self.views, tuple) or not self.views:
            raise ConfigError(f"config key 'views' must be a non-empty list of {list(VIEW_ORDER)}, got {self.views!r}")
        for v in self.views:
            if v not in VIEW_ORDER:
                raise ConfigError(f"config key 'views': unknown view {v!r}; choose from {list(VIEW_ORDER)}")
        if list(self.views) != [v for v in VIEW_ORDER if v in self.views]:
            raise ConfigError(f"config key 'views' must be in the order {list(VIEW_ORDER)} without repeats, got {list(self.views)}")
        _check_choice("ori_space", self.ori_space, ("lab", "rgb"))
        for name in ("input_size", "resize_size", "embedding_dim"):
            _check_type(name, getattr(self, name), (int,))
        if not (16 <= self.input_size <= _MAX_INPUT_SIZE):
            raise ConfigError(f"config key 'input_size' must be in [16, {_MAX_INPUT_SIZE}], got {self.input_size}")
        if not (self.input_size <= self.resize_size <= 2 * _MAX_INPUT_SIZE):
            raise ConfigError(f"config key 'resize_size' must be in [input_size, {2 * _MAX_INPUT_SIZE}], got {self.resize_size}")
        fixed_size = arch.sizes[self.stem][0]
        if arch.fixed_input_size and self.input_size != fixed_size:
            raise ConfigError(
                f"config key 'input_size' must be {fixed_size} for {self.architecture} "
                f"(its layers after the convolutions are sized for that input), got {self.input_size}"
            )
        if not (1 <= self.embedding_dim <= _MAX_EMBEDDING_DIM):
            raise ConfigError(f"config key 'embedding_dim' must be in [1, {_MAX_EMBEDDING_DIM}], got {self.embedding_dim}")
        layers = arch.layers
        if self.truncate_after is not None:
            _check_choice("truncate_after", self.truncate_after, layers[:-1])
        _check_choice("default_layer", self.default_layer, self.feature_layers)
        _check_choice("weights_dtype", self.weights_dtype, ("float32", "float16"))
        for name in ("lab_mean", "lab_std", "rgb_mean", "rgb_std"):
            value = getattr(self, name)
            if not (isinstance(value, tuple) and len(value) == 3 and all(isinstance(x, (int, float)) and math.isfinite(x) for x in value)):
                raise ConfigError(f"config key {name!r} must be a list of 3 finite numbers, got {value!r}")
            if name.endswith("std") and min(value) <= 0:
                raise ConfigError(f"config key {name!r} must be positive, got {value!r}")

    # ------------------------------------------------------------------ derived facts
    @property
    def kept_layers(self) -> tuple[str, ...]:
        """Layers (in network order, "head" included when kept) whose weights this config holds."""
        layers = ENCODERS[self.architecture].layers
        if self.truncate_after is None:
            return layers
        return layers[: layers.index(self.truncate_after) + 1]

    @property
    def feature_layers(self) -> tuple[str, ...]:
        """Feature layers available from this config ("head" is never a feature)."""
        return tuple(layer for layer in self.kept_layers if layer != "head")

    @property
    def has_head(self) -> bool:
        return "head" in self.kept_layers

    @property
    def input_channels(self) -> int:
        """Channels of the network input tensor: Lab (3), plus normalised RGB (3) when the
        ori view is RGB."""
        return 6 if (self.ori_space == "rgb" and "ori" in self.views) else 3

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready, plus the format header."""
        d: dict[str, Any] = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            d[f.name] = list(value) if isinstance(value, tuple) else value
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], strict: bool = True) -> EncoderConfig:
        """Build a config from a dict (e.g. a parsed config.json).

        With ``strict`` (used for model folders) every field must be present; unknown keys are
        always an error. The header keys ``model_type`` and ``format_version`` are checked
        when present (and required when strict).
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"config must be a JSON object, got {type(d).__name__}")
        d = dict(d)
        for header in ("model_type", "format_version"):
            if strict and header not in d:
                raise ConfigError(f"config is missing key {header!r}")
        model_type = d.pop("model_type", None)
        if model_type is not None and model_type != MODEL_TYPE:
            raise ConfigError(f"config key 'model_type' is {model_type!r}; this loader reads {MODEL_TYPE!r} folders only")
        version = d.pop("format_version", None)
        if version is not None and version != FORMAT_VERSION:
            raise ConfigError(
                f"config key 'format_version' is {version!r}; this version of metaug-features reads format {FORMAT_VERSION} "
                "(upgrade metaug-features to read newer folders)"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r}; known keys: {', '.join(names)}")
        if strict:
            missing = [n for n in names if n not in d]
            if missing:
                raise ConfigError(f"config is missing key {missing[0]!r}")
        _check_type("architecture", d.get("architecture", cls.architecture), (str,))
        return cls(**d)

    @classmethod
    def from_json(cls, text: str, strict: bool = True) -> EncoderConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config.json is not valid JSON: {e}") from None
        return cls.from_dict(d, strict=strict)


def _check_type(name: str, value: Any, types: tuple[type, ...]) -> None:
    # bool is an int subclass; a flag where a number belongs is always a mistake.
    if isinstance(value, bool) or not isinstance(value, types):
        expected = " or ".join(t.__name__ for t in types)
        raise ConfigError(f"config key {name!r} must be {expected}, got {type(value).__name__} {value!r}")


def _check_choice(name: str, value: Any, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"config key {name!r} must be one of {list(choices)}, got {value!r}")


def layer_weights_source(layer: str) -> str:
    """The layer whose weights a feature layer needs ("conv_pool" reuses "conv")."""
    return _WEIGHTLESS_ALIASES.get(layer, layer)
