"""Training checkpoint -> inference model folder (config.json + model.safetensors + README.md).

The folder is written with the library's ``save_pretrained``, so ``load_encoder`` and
``metaug-extract`` read exactly what training produced. The encoder's ``EncoderConfig`` gets a
``provenance`` record: method, dataset, epochs and steps trained, the git commit of the run,
and the options that change what the features mean (loss, meta_every, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metaug_features.config import EncoderConfig
from metaug_features.errors import ConfigError
from metaug_features.model import MetAugEncoder
from metaug_features.model_io import save_pretrained

from .checkpoint import load_checkpoint
from .config import TrainConfig
from .methods import method_for
from .model_card import card_renderer_from_json


def provenance(cfg: TrainConfig, step: int, steps_per_epoch: int, git_commit: str, dataset: dict[str, Any]) -> dict[str, Any]:
    """The training record stored in the exported config (plain JSON values)."""
    rec: dict[str, Any] = {
        "method": cfg.method,
        "dataset": dataset.get("name", Path(cfg.data.path).name),
        "split": cfg.data.split,
        "num_samples": int(dataset.get("num_samples", 0)),
        "epochs": round(step / max(steps_per_epoch, 1), 3),
        "steps": int(step),
        "batch_size": cfg.optim.batch_size,
        "git_sha": git_commit,
        "num_negatives": cfg.bank.num_negatives,
        "seed": cfg.run.seed,
    }
    # The method's own entries: "loss" for every method, MetAug's meta-step options.
    rec.update(method_for(cfg.method).provenance(cfg))
    if cfg.idaa.enabled:
        i = cfg.idaa
        rec["idaa"] = {"eps": i.eps, "steps": i.steps, "weight": i.weight, "separate_bn": i.separate_bn}
    if cfg.a2.enabled:
        a = cfg.a2
        rec["a2"] = {"generator": "VAE (not the paper's StyleGAN2)", "mode": a.mode, "loss": a.loss,
                     "alpha": a.alpha, "tau": a.tau, "weight": a.weight}
    return rec


#: A model card for the exported folder: the text itself, or a function of the exported
#: encoder's config and encoder (see ``model_card.card_renderer_from_json``).
CardSpec = str | Callable[[EncoderConfig, MetAugEncoder], str] | None


def release_view(encoder: MetAugEncoder, default_layer: str | None = None,
                 truncate_after: str | None = None) -> MetAugEncoder:
    """The encoder as a release folder presents it: weights after ``truncate_after`` dropped
    (a smaller folder; the kept layers' features are bit-identical) and ``default_layer`` as the
    feature ``extract()`` returns. Either None leaves that aspect unchanged. Raises ConfigError
    for a layer the (truncated) encoder does not have."""
    out = encoder.truncated(truncate_after) if truncate_after else encoder
    if default_layer is not None and default_layer != out.config.default_layer:
        if default_layer not in out.layers:
            raise ConfigError(f"default layer {default_layer!r} is not among the exported layers {list(out.layers)}"
                              + (f" (truncated after {truncate_after!r})" if truncate_after else ""))
        relabelled = MetAugEncoder(dataclasses.replace(out.config, default_layer=default_layer))
        relabelled.load_state_dict(out.state_dict(), strict=True)
        out = relabelled
    return out


def export_encoder(encoder: MetAugEncoder, cfg: TrainConfig, out_dir: str | Path, prov: dict[str, Any],
                   card: CardSpec = None, default_layer: str | None = None, truncate_after: str | None = None,
                   weights_dtype: str | None = None) -> Path:
    """Write ``encoder``'s weights with ``cfg``'s encoder config plus ``prov`` as a model folder.
    ``card``: README.md text or a renderer; None writes the library's minimal card.
    ``default_layer`` / ``truncate_after``: see :func:`release_view`; ``weights_dtype``:
    "float32" (default) or "float16" storage."""
    config: EncoderConfig = cfg.encoder_config(provenance=prov)
    clean = MetAugEncoder(config)
    # Same architecture, new config (provenance); weights copied exactly, on the CPU.
    clean.load_state_dict({k: v.detach().cpu() for k, v in encoder.state_dict().items()}, strict=True)
    clean = release_view(clean, default_layer, truncate_after)
    stored = dataclasses.replace(clean.config, weights_dtype=weights_dtype) if weights_dtype else clean.config
    text = card(stored, clean) if callable(card) else card
    return save_pretrained(clean.eval(), out_dir, card=text, weights_dtype=weights_dtype)


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, card: CardSpec = None,
                      default_layer: str | None = None, truncate_after: str | None = None,
                      weights_dtype: str | None = None, card_metrics: str | Path | None = None) -> Path:
    """``metaug-export CHECKPOINT -o OUT_DIR``: rebuild the encoder of a training checkpoint and
    save it as an inference model folder (the other arguments: as in :func:`export_encoder`).
    ``card_metrics``: a card-metrics JSON (see ``model_card.card_renderer_from_json``) whose
    release card the folder gets, instead of ``card``. Returns ``out_dir``.

    Raises:
        ConfigError: both ``card`` and ``card_metrics`` given, or an unreadable card-metrics JSON
            (checked before the checkpoint is read, so nothing is written).
    """
    if card_metrics is not None:
        if card is not None:
            raise ConfigError("export_checkpoint: give card= (the card itself) or card_metrics= (a JSON to render "
                              "it from), not both")
        card = card_renderer_from_json(card_metrics)
    ckpt = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(ckpt["config"])
    encoder = MetAugEncoder(cfg.encoder_config())
    encoder.load_state_dict(ckpt["encoder"], strict=True)
    prov = provenance(cfg, int(ckpt["step"]), int(ckpt["steps_per_epoch"]), str(ckpt.get("git_commit", "unknown")),
                      dict(ckpt.get("dataset", {})))
    return export_encoder(encoder, cfg, out_dir, prov, card=card, default_layer=default_layer,
                          truncate_after=truncate_after, weights_dtype=weights_dtype)
