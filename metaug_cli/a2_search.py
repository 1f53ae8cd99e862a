"""``metaug-a2-search``: make A2's "search" views offline, as a cache of float16 latents.

    metaug-a2-search ../shared/data/cifar10-jpeg.tar.gz runs/vae-cifar10 -o runs/a2-latents.safetensors

then train with ``a2.enabled=true a2.mode=search a2.cache=runs/a2-latents.safetensors``.
Only parses options and calls :func:`metaug_training.a2_search.build_latent_cache_for`, which
reads the VAE, decodes the dataset and searches; the options' defaults are that function's (the
encoder ``A2_FEATURE_MODEL``, the one frozen encoder A2 measures views with; the split and limit)
and, for the search settings it passes on, :func:`~metaug_training.a2_search.build_latent_cache`'s.
"""

from __future__ import annotations

from pathlib import Path

import click

from metaug_training.a2_search import build_latent_cache, build_latent_cache_for

from ._common import (
    command,
    device_option,
    handle_errors,
    normalised,
    output_option,
    quiet_option,
    signature_defaults,
)

_SEARCH = signature_defaults(build_latent_cache)
_DATA = signature_defaults(build_latent_cache_for)


@command("metaug-a2-search")
@click.argument("data_path")
@click.argument("vae_dir")
@output_option("Latent cache to write (FILE.safetensors + FILE.json; resumable).", required=True,
               file=True, legacy_argument="out")
@click.option("--model", default=_DATA["model"], show_default=True,
              help="Frozen encoder f of the search objective: a model folder, alias or Hub id (the default is "
                   "the alias of the shipped model).")
@click.option("--split", default=_DATA["split"], show_default=True, help="Split of DATA_PATH (the one you train on).")
@click.option("--limit", default=_DATA["limit"], show_default=True, type=click.IntRange(0),
              help="First N images (must match data.limit).")
@click.option("--views", default=_SEARCH["views"], show_default=True, type=click.IntRange(1),
              help="Latents searched per image (K).")
@click.option("--steps", default=_SEARCH["steps"], show_default=True, type=click.IntRange(1),
              help="Adam steps per batch.")
@click.option("--lr", default=_SEARCH["lr"], show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--eps1", default=_SEARCH["eps1"], show_default=True, type=float,
              help="Target feature distance to the reconstruction.")
@click.option("--eps2", default=_SEARCH["eps2"], show_default=True, type=float,
              help="Minimum mean distance among the K views.")
@click.option("--lambda", "lam", default=_SEARCH["lam"], show_default=True, type=float,
              help="Weight of the spread term.")
@click.option("--batch-size", default=_SEARCH["batch_size"], show_default=True, type=click.IntRange(1))
@click.option("--seed", default=_SEARCH["seed"], show_default=True, type=click.IntRange(0))
@device_option()
@quiet_option("No progress lines; print only the written file.")
@handle_errors(on_interrupt="interrupted; run the same command again to resume the search")
def main(data_path: str, vae_dir: str, output: Path, model: str, split: str, limit: int, views: int, steps: int,
         lr: float, eps1: float, eps2: float, lam: float, batch_size: int, seed: int, device: str,
         quiet: bool) -> None:
    """Search K latents per image of DATA_PATH with the VAE in VAE_DIR; write the cache --output.
    (The cache may also be given as a third argument, as older scripts do.)"""
    build_latent_cache_for(data_path, vae_dir, output, model=model, split=split, limit=limit, views=views,
                           steps=steps, lr=lr, eps1=eps1, eps2=eps2, lam=lam, batch_size=batch_size, seed=seed,
                           device=device, log=None if quiet else click.echo)
    click.echo(f"wrote {normalised(output.with_suffix('.safetensors'))} and its .json")


if __name__ == "__main__":
    main()
