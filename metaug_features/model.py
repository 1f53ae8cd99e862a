"""The split encoder users hold: one half-network per view, plus its preprocessing.

Input of every forward: the normalised network input of :meth:`Preprocessor.to_input`,
float32 [B, C, S, S] with C = 3 (Lab) or 6 (Lab + RGB when the ori view is RGB). Each view
takes its channels: l = Lab[0], ab = Lab[1:3], ori = Lab (or the RGB channels). Features of
the views are concatenated in the fixed order (l, ab, ori).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Sequence

import torch
from torch import nn

from .config import VIEW_CHANNELS, EncoderConfig
from .encoders.alexnet import AlexNetHalf
from .encoders.resnet import ResNet50Half
from .preprocess import ImageSource, Preprocessor


def _build_half(config: EncoderConfig, view: str) -> nn.Module:
    cin = VIEW_CHANNELS[view]
    if config.architecture.startswith("alexnet"):
        return AlexNetHalf(cin, config.architecture, config.width, config.embedding_dim, config.kept_layers)
    return ResNet50Half(cin, config.stem, config.embedding_dim, config.kept_layers)


class MetAugEncoder(nn.Module):
    """Split encoder with named feature layers and the preprocessing of its config.

    Attributes:
        config: the :class:`EncoderConfig` it was built from.
        halves: ``nn.ModuleDict`` view -> half-network, in view order.
        preprocess: :class:`Preprocessor` (file/PIL -> uint8 -> network input).
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.halves = nn.ModuleDict({v: _build_half(config, v) for v in config.views})
        self.preprocess = Preprocessor(config)

    # ------------------------------------------------------------------ layer facts
    @property
    def layers(self) -> tuple[str, ...]:
        """Feature layers this encoder can return (the projection head is not one)."""
        return self.config.feature_layers

    def feature_dim(self, layer: str | None = None) -> int:
        """Dimension of the concatenated feature of ``layer`` (default: the config's)."""
        layer = self._check_layer(layer)
        return sum(h.feature_dim(layer) for h in self.halves.values())

    def _check_layer(self, layer: str | None) -> str:
        layer = self.config.default_layer if layer is None else layer
        if layer not in self.layers:
            extra = ""
            if self.config.truncate_after is not None:
                extra = f" (this model keeps weights up to {self.config.truncate_after!r} only)"
            raise ValueError(f"unknown feature layer {layer!r}{extra}; available: {list(self.layers)}")
        return layer

    # ------------------------------------------------------------------ forwards
    def split_views(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Network input [B, C, S, S] -> {view: [B, C_view, S, S]}."""
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.input_channels:
            raise ValueError(
                f"expected network input [B, {cfg.input_channels}, {cfg.input_size}, {cfg.input_size}] "
                f"(use encoder.preprocess to make it), got shape {tuple(x.shape)}"
            )
        out = {}
        for v in cfg.views:
            if v == "l":
                out[v] = x[:, 0:1]
            elif v == "ab":
                out[v] = x[:, 1:3]
            else:
                out[v] = x[:, 3:6] if cfg.input_channels == 6 else x[:, 0:3]
        return out

    def forward_views(self, x: torch.Tensor, layer: str | None = None) -> dict[str, torch.Tensor]:
        """Per-view features: {view: [B, d_view]}."""
        layer = self._check_layer(layer)
        return {v: self.halves[v](xv, layer) for v, xv in self.split_views(x).items()}

    def forward(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """Frozen features: network input [B, C, S, S] -> [B, feature_dim(layer)], the views'
        features concatenated in the order (l, ab, ori)."""
        return torch.cat(list(self.forward_views(x, layer).values()), dim=1)

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Projection-head output per view, L2-normalised: {view: [B, embedding_dim]}.
        Used by training (contrastive scores); never a frozen feature."""
        if not self.config.has_head:
            raise ValueError("this encoder was saved without its projection head (truncate_after is set)")
        return {v: self.halves[v](xv, "head") for v, xv in self.split_views(x).items()}

    # ------------------------------------------------------------------ convenience
    @torch.inference_mode()
    def extract(self, images: Sequence[ImageSource], layer: str | None = None, batch_size: int = 64) -> torch.Tensor:
        """Features of a list of images (paths, PIL images or uint8 [3, S, S] tensors).

        Runs in eval mode (BN running statistics) on the encoder's device and restores the
        previous mode afterwards. Returns float32 [N, feature_dim(layer)] on the CPU. A file
        that cannot be decoded raises :class:`~metaug_features.errors.ImageDecodeError`
        (``metaug-extract`` skips and reports such files instead).
        """
        layer = self._check_layer(layer)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            out = []
            for start in range(0, len(images), batch_size):
                pixels = self.preprocess.load_batch(images[start : start + batch_size]).to(device)
                out.append(self(self.preprocess.to_input(pixels), layer).float().cpu())
            if not out:
                return torch.empty(0, self.feature_dim(layer))
            return torch.cat(out)
        finally:
            self.train(was_training)

    def truncated(self, after: str) -> "MetAugEncoder":
        """A copy that keeps weights up to feature layer ``after`` only (for a smaller release);
        its default layer becomes ``after`` unless the current default is still available."""
        cfg = self.config
        keep_default = cfg.default_layer
        probe = dataclasses.replace(cfg, truncate_after=after, default_layer=after)
        if keep_default in probe.feature_layers:
            probe = dataclasses.replace(probe, default_layer=keep_default)
        small = MetAugEncoder(probe)
        own = self.state_dict()
        small.load_state_dict({k: own[k] for k in small.state_dict()}, strict=True)
        return small.to(next(self.parameters()).device).train(self.training)

    def extra_repr(self) -> str:
        c = self.config
        return f"architecture={c.architecture}, width={c.width}, views={list(c.views)}, input_size={c.input_size}"


def build_encoder(config: EncoderConfig | None = None, **overrides) -> MetAugEncoder:
    """A randomly initialised encoder. ``build_encoder(architecture="alexnet32", width=0.5)``
    is shorthand for ``build_encoder(EncoderConfig(architecture="alexnet32", width=0.5))``."""
    if config is None:
        config = EncoderConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    return MetAugEncoder(config)
