"""The split encoder users hold: one half-network per view, plus its preprocessing.

Input of every forward: the normalised network input of :meth:`Preprocessor.to_input`,
float32 [B, C, S, S] with C = 3 (Lab) or 6 (Lab + RGB when the ori view is RGB). Each view
takes its channels: l = Lab[0], ab = Lab[1:3], ori = Lab (or the RGB channels). Features of
the views are concatenated in the fixed order (l, ab, ori).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import torch
from torch import nn

from .config import VIEW_CHANNELS, EncoderConfig
from .encoders.registry import encoder_architecture
from .image_inputs import ImageSource, as_image_list
from .preprocess import Preprocessor


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
        # The architecture's row builds each view's half (metaug_features.encoders.registry).
        build_half = encoder_architecture(config.architecture).build_half
        self.halves = nn.ModuleDict({v: build_half(config, VIEW_CHANNELS[v]) for v in config.views})
        self.preprocess = Preprocessor(config)

    # ------------------------------------------------------------------ timm / open_clip habits
    @property
    def transform(self) -> Callable[[ImageSource], torch.Tensor]:
        """The per-sample transform for your own ``Dataset``: one image -> float32 [C, S, S],
        the network input (same as ``encoder.preprocess.transform``; picklable for workers)."""
        return self.preprocess.transform

    @property
    def input_size(self) -> int:
        """Side S of the square network input [B, C, S, S] (same as ``config.input_size``)."""
        return self.config.input_size

    # ------------------------------------------------------------------ layer facts
    @property
    def layers(self) -> tuple[str, ...]:
        """Feature layers this encoder can return (the projection head is not one)."""
        return self.config.feature_layers

    def feature_dim(self, layer: str | None = None) -> int:
        """Dimension of the concatenated feature of ``layer`` (default: the config's): the
        views times the one-view dimension the architecture's row gives."""
        layer = self._check_layer(layer)
        dims = encoder_architecture(self.config.architecture).layer_dims(self.config)
        return len(self.config.views) * dims[layer]

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
        """Network input [B, C, S, S] -> {view: [B, C_view, S, S]}, cast to the weights' dtype
        and device.

        Raises:
            ValueError: ``x`` is not [B, C, S, S] with the config's channels and input size.
                Another size would run through the convolutions and silently give features of
                another dimension than :meth:`feature_dim` (e.g. 139,968 instead of 1,728 for
                a 224 input to the 32-px network), so it is refused.
        """
        cfg = self.config
        expected = (cfg.input_channels, cfg.input_size, cfg.input_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"expected network input [B, {cfg.input_channels}, {cfg.input_size}, {cfg.input_size}], got shape "
                f"{tuple(x.shape)}; images of any size go through encoder.extract(images) or "
                "encoder.preprocess(images), which resize them to the model's input"
            )
        if not x.is_floating_point():
            raise TypeError(f"network input must be float (the output of encoder.preprocess), got {x.dtype}")
        weight = next(self.parameters())
        x = x.to(device=weight.device, dtype=weight.dtype)
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
    def extract(
        self, images: ImageSource | Iterable[ImageSource], layer: str | None = None, batch_size: int = 64
    ) -> torch.Tensor:
        """Features of one image or many.

        Args:
            images: one image or a list of them, each a path, a PIL image, a numpy array
                (uint8 [H, W, C]) or a tensor (uint8 [C, H, W]); float arrays and tensors are
                RGB in [0, 1]; a 4-D array or tensor is a batch. Any size: each is resized and
                centre-cropped as a file is (:mod:`metaug_features.image_inputs`).
            layer: feature layer (default: the config's ``default_layer``).
            batch_size: images per forward pass.
        Returns:
            float32 [N, feature_dim(layer)] on the CPU (N = 1 for a single image), whatever the
            weights' dtype and device: inputs are moved and cast to those of the weights.

        Runs in eval mode (BN running statistics) and restores the previous mode afterwards. A
        file that cannot be decoded raises :class:`~metaug_features.errors.ImageDecodeError`
        (``metaug-extract`` skips and reports such files instead).
        """
        layer = self._check_layer(layer)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = as_image_list(images)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            out = []
            for start in range(0, len(items), batch_size):
                pixels = self.preprocess.load_batch(items[start : start + batch_size]).to(device)
                # Lab conversion in float32 (accurate), then cast to the weights' dtype in forward.
                out.append(self(self.preprocess.to_input(pixels), layer).float().cpu())
            if not out:
                return torch.empty(0, self.feature_dim(layer))
            return torch.cat(out)
        finally:
            self.train(was_training)

    def truncated(self, after: str) -> MetAugEncoder:
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
