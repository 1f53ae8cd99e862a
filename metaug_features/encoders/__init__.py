"""The half-networks of the split encoder, one family per file, and their table (registry.py).

A half-network is what one view (l, ab or ori) runs through. Every family provides:

- a builder ``build_half(config, in_channels) -> nn.Module`` (a class whose ``__init__`` takes
  those two arguments is one), which builds only the layers in ``config.kept_layers``: a
  truncated release holds no weights past ``config.truncate_after``;
- on the module: ``forward(x, layer)``, float [B, in_channels, S, S] -> [B, dim(layer)], for
  every feature layer and for ``"head"`` (the projection head's output, L2-normalised, used by
  training only), and an attribute ``head`` (the projection head, None when not kept), whose
  first ``nn.Linear`` gives the MAGs their hidden width (metaug_training.mag);
- a function ``layer_dims(config) -> {layer: dim}`` giving each layer's output dimension for
  one view, the table's promise about what ``forward`` returns.

This package never imports :mod:`metaug_features.config` (config.py reads the table), so the
builders see the config through :class:`HalfConfig`, the fields they may read.
"""

from __future__ import annotations

from typing import Protocol


class HalfConfig(Protocol):
    """The fields of :class:`metaug_features.config.EncoderConfig` a builder may read."""

    architecture: str
    width: float
    stem: str
    input_size: int
    embedding_dim: int

    @property
    def kept_layers(self) -> tuple[str, ...]: ...
