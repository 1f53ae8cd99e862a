"""The encoder table: one row per architecture name, read by EncoderConfig and MetAugEncoder.

A new family or geometry is one file in this package (its half-network, its ``layer_dims``)
and one row in :data:`ENCODERS` (docs/EXTENDING.md, "Add an encoder family or geometry").
The table is a plain dict literal, read top to bottom; nothing registers itself at import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from . import HalfConfig, alexnet, resnet


@dataclass(frozen=True)
class EncoderArchitecture:
    """What the library needs to know about one architecture name.

    Attributes:
        build_half: ``(config, in_channels) -> nn.Module``, one view's half-network
            (interface in :mod:`metaug_features.encoders`).
        layers: feature layers in network order, ``"head"`` (the projection head) last.
        layer_dims: ``config -> {layer: dim}`` for one view, every name of ``layers``; an
            encoder's feature has ``len(views) * dim`` values.
        default_layer: the feature layer returned when none is asked for.
        sizes: per accepted ``stem``, the default (input_size, resize_size). Its keys are the
            stems the architecture accepts (AlexNet: "imagenet" only, a name without effect).
        fixed_input_size: the layers after the convolutions are sized for the default input, so
            another ``input_size`` is refused (AlexNet's fc6).
        width_multiplier: False when the family has no width multiplier (``width`` must be 1.0).
    """

    build_half: Callable[[HalfConfig, int], nn.Module]
    layers: tuple[str, ...]
    layer_dims: Callable[[HalfConfig], dict[str, int]]
    default_layer: str
    sizes: Mapping[str, tuple[int, int]]
    fixed_input_size: bool = False
    width_multiplier: bool = True


#: Architecture name -> its row. ``EncoderConfig.architecture`` must be one of these keys.
ENCODERS: dict[str, EncoderArchitecture] = {
    # The paper's geometry: conv1 11x11/4 on a 224 input; fc6 takes 128 x 6 x 6.
    "alexnet224": EncoderArchitecture(
        build_half=alexnet.AlexNetHalf.from_config,
        layers=("conv_pool", "conv", "fc6", "fc", "head"),
        layer_dims=alexnet.layer_dims,
        default_layer="conv",
        sizes={"imagenet": (224, 256)},
        fixed_input_size=True,
    ),
    # CIFAR-native: conv1 5x5/1 on a 32 input; fc6 takes 128 x 3 x 3 (the shipped models).
    "alexnet32": EncoderArchitecture(
        build_half=alexnet.AlexNetHalf.from_config,
        layers=("conv_pool", "conv", "fc6", "fc", "head"),
        layer_dims=alexnet.layer_dims,
        default_layer="conv",
        sizes={"imagenet": (32, 32)},
        fixed_input_size=True,
    ),
    # One torchvision ResNet-50 trunk per view; the "cifar" stem (3x3/1 conv, no max-pool)
    # defaults to 32-px input.
    "resnet50": EncoderArchitecture(
        build_half=resnet.ResNet50Half.from_config,
        layers=("layer3_pool", "pool", "head"),
        layer_dims=resnet.layer_dims,
        default_layer="pool",
        sizes={"imagenet": (224, 256), "cifar": (32, 32)},
        width_multiplier=False,
    ),
}


def encoder_architecture(name: object) -> EncoderArchitecture:
    """The row of ``name``.

    Raises:
        ConfigError: ``name`` is not in :data:`ENCODERS`; the message lists the known names.
    """
    if not isinstance(name, str) or name not in ENCODERS:
        raise ConfigError(
            f"config key 'architecture' must be one of {list(ENCODERS)}, got {name!r} "
            "(a new architecture is one row of metaug_features.encoders.registry.ENCODERS)"
        )
    return ENCODERS[name]
