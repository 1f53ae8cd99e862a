"""Half of the split AlexNet of CMC / MetAug (docs/METHODS.md section 2): one such network per view.

Block structure (channels at width 1.0; every count is scaled by ``width``)::

    conv1  k x k / s -> 48,  BN, ReLU, maxpool 3/2     alexnet224: 11x11/4 pad 2; alexnet32: 5x5/1 pad 2
    conv2  5x5 pad 2 -> 128, BN, ReLU, maxpool 3/2
    conv3  3x3 pad 1 -> 192, BN, ReLU
    conv4  3x3 pad 1 -> 192, BN, ReLU
    conv5  3x3 pad 1 -> 128, BN, ReLU, maxpool 3/2     -> [128, 6, 6] (224 input) / [128, 3, 3] (32 input)
    fc6    Linear -> 2048, BN1d, ReLU
    fc7    Linear 2048 -> 2048, BN1d, ReLU
    head   Linear 2048 -> 128 (fc8), then L2-normalise (training only)

Convolutions have no bias (BN follows). Feature layers: "conv" (conv5 output flattened),
"conv_pool" (conv5 output averaged over space), "fc6", "fc" (fc7 output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import HalfConfig

BASE_CHANNELS = (48, 128, 192, 192, 128)
BASE_FC = 2048
GEOMETRIES = {
    # name: (conv1 kernel, conv1 stride, conv1 padding, spatial side after conv5's max-pool)
    "alexnet224": (11, 4, 2, 6),
    "alexnet32": (5, 1, 2, 3),
}


def scaled(n: int, width: float) -> int:
    """Channel count ``n`` scaled by ``width`` (at least 1)."""
    return max(1, round(n * width))


def half_dims(geometry: str, width: float, embedding_dim: int) -> dict[str, int]:
    """Output dimension of each layer of one half: conv = c5 x side x side, conv_pool = c5,
    fc6 = fc = the fc width, head = ``embedding_dim``."""
    side = GEOMETRIES[geometry][3]
    c5, fc = scaled(BASE_CHANNELS[-1], width), scaled(BASE_FC, width)
    return {"conv_pool": c5, "conv": c5 * side * side, "fc6": fc, "fc": fc, "head": embedding_dim}


def layer_dims(config: HalfConfig) -> dict[str, int]:
    """The table's ``layer_dims`` (metaug_features.encoders.registry) for both geometries."""
    return half_dims(config.architecture, config.width, config.embedding_dim)


def _conv_block(cin: int, cout: int, k: int, stride: int, pad: int, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(3, 2))
    return nn.Sequential(*layers)


def _fc_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class AlexNetHalf(nn.Module):
    """One view's half-network.

    Args:
        in_channels: 1 (L), 2 (ab) or 3 (ori).
        geometry: "alexnet224" or "alexnet32".
        width: multiplier of every channel count and of the fc width.
        embedding_dim: output of the projection head.
        kept_layers: which of ("conv", "conv_pool", "fc6", "fc", "head") to build; layers after
            the last kept one are not constructed at all (a truncated release has no fc weights).
    """

    def __init__(self, in_channels: int, geometry: str, width: float, embedding_dim: int, kept_layers: tuple[str, ...]) -> None:
        super().__init__()
        k, stride, pad, _ = GEOMETRIES[geometry]
        c1, c2, c3, c4, c5 = (scaled(c, width) for c in BASE_CHANNELS)
        dims = half_dims(geometry, width, embedding_dim)
        fc = dims["fc"]
        self.conv_dim = dims["conv"]
        self.fc_dim = fc
        self.pool_dim = c5
        self.conv1 = _conv_block(in_channels, c1, k, stride, pad, pool=True)
        self.conv2 = _conv_block(c1, c2, 5, 1, 2, pool=True)
        self.conv3 = _conv_block(c2, c3, 3, 1, 1, pool=False)
        self.conv4 = _conv_block(c3, c4, 3, 1, 1, pool=False)
        self.conv5 = _conv_block(c4, c5, 3, 1, 1, pool=True)
        self.fc6 = _fc_block(self.conv_dim, fc) if "fc6" in kept_layers else None
        self.fc7 = _fc_block(fc, fc) if "fc" in kept_layers else None
        self.head = nn.Linear(fc, embedding_dim) if "head" in kept_layers else None

    @classmethod
    def from_config(cls, config: HalfConfig, in_channels: int) -> AlexNetHalf:
        """The table's ``build_half``: the half of ``config``'s geometry taking ``in_channels``."""
        return cls(in_channels, config.architecture, config.width, config.embedding_dim, config.kept_layers)

    def feature_dim(self, layer: str) -> int:
        return {"conv": self.conv_dim, "conv_pool": self.pool_dim, "fc6": self.fc_dim, "fc": self.fc_dim, "head": self.head_dim}[layer]

    @property
    def head_dim(self) -> int:
        return self.head.out_features if self.head is not None else 0

    def conv_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> conv5 map [B, c5, side, side]."""
        return self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))

    def forward(self, x: torch.Tensor, layer: str = "head") -> torch.Tensor:
        """[B, C_in, H, W] -> [B, feature_dim(layer)]; computes only what ``layer`` needs.
        ``layer="head"`` gives the L2-normalised embedding used in training."""
        h = self.conv_features(x)
        if layer == "conv_pool":
            return h.mean(dim=(2, 3))
        h = torch.flatten(h, 1)
        if layer == "conv":
            return h
        h = self.fc6(h)
        if layer == "fc6":
            return h
        h = self.fc7(h)
        if layer == "fc":
            return h
        return F.normalize(self.head(h), dim=1)
