"""``metaug-compact-state``: write the small, committable resume state of a training run.

    metaug-compact-state runs/X/full/checkpoints/last.pt -o runs/X/state --reuse hub/cifar10-fc
    metaug-train --config RECIPE --resume run.warm_start=runs/X/state   # on another machine

Only parses options and calls :func:`metaug_training.compact_state.save_compact_state`.
"""

from __future__ import annotations

from pathlib import Path

import click

from metaug_training.compact_state import save_compact_state

from ._common import (
    command,
    handle_errors,
    normalised,
    output_option,
    signature_defaults,
)


@command("metaug-compact-state")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@output_option("State folder to write (state.json + the weights it does not reuse).", required=True,
               legacy_argument="state_dir")
@click.option("--reuse", "reuse", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="A model folder (e.g. a release) whose model.safetensors already holds encoder tensors: "
                   "they are referenced by sha256 instead of stored twice. Repeatable.")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16", "float32"]),
              default=signature_defaults(save_compact_state)["dtype"], show_default=True,
              help="Storage dtype of the weights the state holds itself.")
@handle_errors()
def main(checkpoint: str, output: Path, reuse: tuple[str, ...], dtype: str) -> None:
    """Write the compact state of CHECKPOINT (a full training checkpoint) into the folder --output.

    It keeps the encoder and MAG weights, the step and the config; the memory bank, optimiser
    momentum and RNG states are rebuilt by a warm restart (metaug-train --resume with
    run.warm_start=DIR when no full checkpoint is on the machine). (The folder may also be
    given as a second argument, CHECKPOINT DIR, as older scripts do.)"""
    from metaug_training.checkpoint import load_checkpoint

    summary = save_compact_state(load_checkpoint(checkpoint), output, reuse=reuse, dtype=dtype)
    click.echo(f"compact state of step {summary.step} (epoch {summary.epoch:.2f}) in {normalised(summary.state_dir)}: "
               f"{len(summary.stored)} tensors stored ({summary.stored_bytes / 1e6:.1f} MB, {dtype}), "
               f"{len(summary.reused)} reused from {', '.join(reuse) or 'no folder'}")


if __name__ == "__main__":
    main()
