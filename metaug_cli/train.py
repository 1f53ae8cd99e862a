"""``metaug-train``: train an encoder (cmc | oucl | metaug) from a recipe.

    metaug-train --config metaug_training/recipes/cifar10-metaug.json data.path=... optim.epochs=10
    torchrun --nproc_per_node 2 -m metaug_cli.train --config cifar10-cmc --device cpu

Only parses options and calls :func:`metaug_training.trainer.train`. Options that stand for a
config key (``CONFIG_OPTIONS``) override the recipe only when given; their defaults, shown in
``--help``, are the config dataclasses' own.
"""

from __future__ import annotations

from pathlib import Path

import click

from metaug_features.errors import MetAugError
from metaug_training.config import RunConfig, shipped_recipes

from ._common import (
    command,
    device_option,
    handle_errors,
    interrupted,
    normalised,
    output_option,
    quiet_option,
    threads_option,
)

RESUME_HINT = "run the same command with --resume to continue from the last checkpoint"

#: Options that set one config key: option name -> dotted key. Given, an option overrides the
#: recipe; left out, the recipe's value stands, and the key's dataclass default where the recipe
#: has none (tests/training/test_train_config_cli.py checks each option against its key).
CONFIG_OPTIONS: dict[str, str] = {"output": "run.out_dir", "device": "run.device", "threads": "run.num_threads",
                                  "quiet": "run.quiet"}


def recipes_epilog() -> str:
    """The ``--help`` paragraph that lists every shipped recipe with its one-line summary, read
    from ``metaug_training/recipes/`` (``\\b``: click keeps the lines as written)."""
    recipes = shipped_recipes()
    width = max(map(len, recipes), default=0)
    lines = [f"  {name:<{width}}  {summary}".rstrip() for name, summary in recipes.items()]
    return "\b\nShipped recipes (--config NAME):\n" + "\n".join(lines)


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


@command("metaug-train", epilog=recipes_epilog())
@click.option("--config", "config_path", required=True, metavar="RECIPE",
              help="Recipe file (JSON), or the name of a shipped recipe (listed below).")
@click.option("--resume", is_flag=True,
              help="Continue from <run.out_dir>/checkpoints/last.pt if it exists (else start from scratch).")
@output_option(f"Run folder (checkpoints, log.jsonl, export); sets run.out_dir [default: the recipe's, "
               f"else {RunConfig.out_dir}].")
@device_option(default=None, help=f"Sets run.device [default: the recipe's, else {RunConfig.device}].")
@threads_option(f"Torch CPU threads per process; sets run.num_threads [default: the recipe's, else "
                f"{RunConfig.num_threads}: the usable cores divided by the processes on this machine].")
@quiet_option("No progress bar and no log lines on stdout (the JSONL log is still written); sets run.quiet.",
              default=RunConfig.quiet)
@click.argument("overrides", nargs=-1)
@handle_errors(on_interrupt=f"interrupted; {RESUME_HINT}")
def main(config_path: str, resume: bool, output: Path | None, device: str | None, threads: int | None,
         quiet: bool, overrides: tuple[str, ...]) -> None:
    """Train with the recipe given to --config; OVERRIDES are dotted key=value pairs (optim.lr=0.05).

    run.max_steps=N stops after step N (null, the default: all optim.epochs; N=1 checks that a
    run starts). SIGTERM or Ctrl-C stops at the next step, saves and exports, and exits 130; a
    second one aborts at once."""
    from metaug_training.config import load_config
    from metaug_training.methods import method_for
    from metaug_training.trainer import train

    given = {"output": None if output is None else str(output), "device": device,
             "threads": None if threads is None else str(threads), "quiet": "true" if quiet else None}
    shortcuts = {CONFIG_OPTIONS[name]: value for name, value in given.items()}
    cfg = load_config(config_path, _with_shortcuts(overrides, shortcuts))
    result = train(cfg, resume=resume)
    # The status line is the command's result and prints even with --quiet (as metaug-eval's
    # results do); --quiet drops the hint below, an info line.
    shown = [normalised(p) if p is not None else None for p in (result.checkpoint, result.export_dir)]
    click.echo(f"{result.status}: step {result.step}, checkpoint {shown[0]}, export {shown[1]}")
    if not cfg.run.quiet:
        if method_for(cfg.method).meta_diagnostics:
            click.echo(f"meta diagnostics (do the MAGs augment anything?): metaug-meta-diagnostics "
                       f"{normalised(Path(cfg.run.out_dir))}")
    if result.status == "signal":
        raise interrupted(f"stopped by a signal at step {result.step}; {RESUME_HINT}")


if __name__ == "__main__":
    main()
