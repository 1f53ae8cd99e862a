"""One ResNet-50 trunk per view (docs/METHODS.md section 2), from torchvision's definition.

The first convolution takes 1 / 2 / 3 channels; the "cifar" stem replaces the 7x7/2 conv and
max-pool with a 3x3/1 conv (the usual CIFAR adaptation). The projection head is
Linear 2048 -> 2048, ReLU, Linear 2048 -> 128, L2-normalised (training only).
Feature layers: "layer3_pool" (1024-d, global average of layer3) and "pool" (2048-d, global
average of layer4, the usual ResNet feature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import HalfConfig

#: Feature width of layer3 (1024) and layer4 (2048) of ResNet-50, whatever the input size.
_TRUNK_DIMS = {"layer3_pool": 1024, "pool": 2048}


def layer_dims(config: HalfConfig) -> dict[str, int]:
    """The table's ``layer_dims`` (metaug_features.encoders.registry): one view's dimensions."""
    return {**_TRUNK_DIMS, "head": config.embedding_dim}


class ResNet50Half(nn.Module):
    """One view's ResNet-50 trunk (``stem``: "imagenet" or "cifar") and projection head."""

    def __init__(self, in_channels: int, stem: str, embedding_dim: int, kept_layers: tuple[str, ...]) -> None:
        super().__init__()
        # Imported here: torchvision.models costs seconds at import, and most users load AlexNets.
        from torchvision.models import resnet50

        trunk = resnet50(weights=None)
        if stem == "cifar":
            trunk.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            trunk.maxpool = nn.Identity()
        else:
            trunk.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool)
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        self.layer4 = trunk.layer4 if "pool" in kept_layers else None
        self.head = (
            nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(inplace=True), nn.Linear(2048, embedding_dim))
            if "head" in kept_layers
            else None
        )
        self._dims = {**_TRUNK_DIMS, "head": embedding_dim}

    @classmethod
    def from_config(cls, config: HalfConfig, in_channels: int) -> ResNet50Half:
        """The table's ``build_half``: the trunk of ``config.stem`` taking ``in_channels``."""
        return cls(in_channels, config.stem, config.embedding_dim, config.kept_layers)

    def feature_dim(self, layer: str) -> int:
        return self._dims[layer]

    def forward(self, x: torch.Tensor, layer: str = "head") -> torch.Tensor:
        """[B, C_in, H, W] -> [B, feature_dim(layer)]."""
        h = self.layer3(self.layer2(self.layer1(self.stem(x))))
        if layer == "layer3_pool":
            return h.mean(dim=(2, 3))
        h = self.layer4(h).mean(dim=(2, 3))
        if layer == "pool":
            return h
        return F.normalize(self.head(h), dim=1)
