"""``metaug-export CHECKPOINT OUT_DIR``: a training checkpoint -> an inference model folder
(config.json + model.safetensors + README.md) that ``load_encoder`` and ``metaug-extract`` read.

Only parses options and calls :func:`metaug_training.export.export_checkpoint`.
"""

from __future__ import annotations

import click

from metaug_features.errors import MetAugError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--card-metrics", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSON with measured 'metrics' (+ optional recipe, budget, hardware, comparison, repo_id): "
                   "render the release model card from model_cards/ instead of the minimal one.")
@click.option("--default-layer", default=None,
              help="Feature layer the folder returns by default (e.g. conv, fc); default: the architecture's.")
@click.option("--truncate-after", default=None,
              help="Keep weights up to this layer only (a smaller folder; kept layers give identical features).")
@click.option("--dtype", "weights_dtype", type=click.Choice(["float32", "float16"]), default=None,
              help="Storage dtype of model.safetensors (default float32; float16 halves the folder).")
def main(checkpoint: str, out_dir: str, card_metrics: str | None, default_layer: str | None,
         truncate_after: str | None, weights_dtype: str | None) -> None:
    """Export the encoder of CHECKPOINT (a metaug-train last.pt) to the folder OUT_DIR."""
    from metaug_training.export import export_checkpoint
    from metaug_training.model_card import card_renderer_from_json

    try:
        card = card_renderer_from_json(card_metrics) if card_metrics else None
        folder = export_checkpoint(checkpoint, out_dir, card=card, default_layer=default_layer,
                                   truncate_after=truncate_after, weights_dtype=weights_dtype)
    except MetAugError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"exported {checkpoint} -> {folder}")


if __name__ == "__main__":
    main()
