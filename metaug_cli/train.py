"""``metaug-train``: train an encoder (cmc | oucl | metaug) from a recipe.

    metaug-train --config metaug_training/recipes/cifar10-metaug.json data.path=... optim.epochs=10
    torchrun --nproc_per_node 2 -m metaug_cli.train --config cifar10-cmc --device cpu

Only parses options and calls :func:`metaug_training.trainer.train`.
"""

from __future__ import annotations

from pathlib import Path

import click

from metaug_features.errors import MetAugError

from ._common import command, device_option, handle_errors, interrupted, normalised, output_option

RESUME_HINT = "run the same command with --resume to continue from the last checkpoint"


def _with_shortcuts(overrides: tuple[str, ...], shortcuts: dict[str, str | None]) -> list[str]:
    """``overrides`` plus ``key=value`` for each shortcut option given; an override that sets the
    same key to another value is an error."""
    from metaug_training.config import parse_override

    given = dict(parse_override(o) for o in overrides)
    out = list(overrides)
    for key, value in shortcuts.items():
        if value is None:
            continue
        if key in given and str(given[key]) != value:
            raise MetAugError(f"{key} is set twice: {key}={given[key]} and the option for it ({value}); give one")
        out.append(f"{key}={value}")
    return out


@command("metaug-train")
@click.option("--config", "config_path", required=True,
              help="Recipe file (JSON), or the name of a shipped recipe (cifar10-cmc, cifar10-oucl, cifar10-metaug).")
@click.option("--resume", is_flag=True,
              help="Continue from <run.out_dir>/checkpoints/last.pt if it exists (else start from scratch).")
@output_option("Run folder (checkpoints, log.jsonl, export); sets run.out_dir.")
@device_option(default=None, help="Sets run.device [default: the recipe's run.device].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no log lines on stdout (the JSONL log is still written).")
@click.argument("overrides", nargs=-1)
@handle_errors(on_interrupt=f"interrupted; {RESUME_HINT}")
def main(config_path: str, resume: bool, output: Path | None, device: str | None, quiet: bool,
         overrides: tuple[str, ...]) -> None:
    """Train with the recipe CONFIG; OVERRIDES are dotted key=value pairs (optim.lr=0.05).

    SIGTERM or Ctrl-C stops at the next step, saves and exports, and exits 130; a second one
    aborts at once."""
    from metaug_training.config import load_config
    from metaug_training.trainer import train

    shortcuts = {"run.out_dir": None if output is None else str(output), "run.device": device}
    cfg = load_config(config_path, _with_shortcuts(overrides, shortcuts) + (["run.quiet=true"] if quiet else []))
    result = train(cfg, resume=resume)
    if not quiet:
        shown = [normalised(p) if p is not None else None for p in (result.checkpoint, result.export_dir)]
        click.echo(f"{result.status}: step {result.step}, checkpoint {shown[0]}, export {shown[1]}")
        if cfg.method == "metaug":
            click.echo(f"meta diagnostics (do the MAGs augment anything?): metaug-meta-diagnostics "
                       f"{normalised(Path(cfg.run.out_dir))}")
    if result.status == "signal":
        raise interrupted(f"stopped by a signal at step {result.step}; {RESUME_HINT}")


if __name__ == "__main__":
    main()
