"""``metaug-export CHECKPOINT -o DIR``: a training checkpoint -> an inference model folder
(config.json + model.safetensors + README.md) that ``load_encoder`` and ``metaug-extract`` read.

Only parses options and calls :func:`metaug_training.export.export_checkpoint`, which also
renders the release card from ``--card-metrics``.
"""

from __future__ import annotations

from pathlib import Path

import click

from ._common import command, handle_errors, normalised, output_option


@command("metaug-export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@output_option("Model folder to write (config.json, model.safetensors, README.md).", required=True,
               legacy_argument="out_dir")
@click.option("--card-metrics", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSON with measured 'metrics' (+ optional recipe, budget, hardware, comparison, repo_id): "
                   "render the release model card from metaug_training/model_cards/ instead of the minimal one.")
@click.option("--default-layer", default=None,
              help="Feature layer the folder returns by default (e.g. conv, fc); default: the architecture's.")
@click.option("--truncate-after", default=None,
              help="Keep weights up to this layer only (a smaller folder; kept layers give identical features).")
@click.option("--dtype", "weights_dtype", type=click.Choice(["float32", "float16"]), default=None,
              help="Storage dtype of model.safetensors (default float32; float16 halves the folder).")
@handle_errors()
def main(checkpoint: str, output: Path, card_metrics: str | None, default_layer: str | None,
         truncate_after: str | None, weights_dtype: str | None) -> None:
    """Export the encoder of CHECKPOINT (a metaug-train last.pt) to the model folder --output.

    (The folder may also be given as a second argument, CHECKPOINT DIR, as older scripts do.)"""
    from metaug_training.export import export_checkpoint

    folder = export_checkpoint(checkpoint, output, card_metrics=card_metrics, default_layer=default_layer,
                               truncate_after=truncate_after, weights_dtype=weights_dtype)
    click.echo(f"exported {normalised(checkpoint)} -> {normalised(folder)}")


if __name__ == "__main__":
    main()
