"""``metaug-train``: train an encoder (cmc | oucl | metaug) from a recipe.

    metaug-train --config training/recipes/cifar10-metaug.json data.path=... optim.epochs=10
    torchrun --nproc_per_node 2 -m metaug_cli.train --config cifar10-cmc run.device=cpu

Only parses options and calls :func:`metaug_training.trainer.train`.
"""

from __future__ import annotations

import click

from metaug_features.errors import MetAugError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", required=True,
              help="Recipe file (JSON), or the name of a shipped recipe (cifar10-cmc, cifar10-oucl, cifar10-metaug).")
@click.option("--resume", is_flag=True,
              help="Continue from <run.out_dir>/checkpoints/last.pt if it exists (else start from scratch).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no log lines on stdout (the JSONL log is still written).")
@click.argument("overrides", nargs=-1)
def main(config_path: str, resume: bool, quiet: bool, overrides: tuple[str, ...]) -> None:
    """Train with the recipe CONFIG; OVERRIDES are dotted key=value pairs (optim.lr=0.05)."""
    from metaug_training.config import load_config
    from metaug_training.trainer import train

    try:
        cfg = load_config(config_path, list(overrides) + (["run.quiet=true"] if quiet else []))
        result = train(cfg, resume=resume)
    except MetAugError as e:
        raise click.ClickException(str(e)) from None
    if not quiet:
        click.echo(f"{result.status}: step {result.step}, checkpoint {result.checkpoint}, export {result.export_dir}")


if __name__ == "__main__":
    main()
