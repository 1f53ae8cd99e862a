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
def main(checkpoint: str, out_dir: str) -> None:
    """Export the encoder of CHECKPOINT (a metaug-train last.pt) to the folder OUT_DIR."""
    from metaug_training.export import export_checkpoint

    try:
        folder = export_checkpoint(checkpoint, out_dir)
    except MetAugError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"exported {checkpoint} -> {folder}")


if __name__ == "__main__":
    main()
