"""``metaug-a2-search``: make A2's "search" views offline, as a cache of float16 latents.

    metaug-a2-search ../shared/data/cifar10-jpeg.tar.gz runs/vae-cifar10 -o runs/a2-latents.safetensors

then train with ``a2.enabled=true a2.mode=search a2.cache=runs/a2-latents.safetensors``.
Only parses options and calls :func:`metaug_training.a2_search.build_latent_cache`.
"""

from __future__ import annotations

from pathlib import Path

import click

from ._common import command, device_option, handle_errors, normalised, output_option


@command("metaug-a2-search")
@click.argument("data_path")
@click.argument("vae_dir")
@output_option("Latent cache to write (FILE.safetensors + FILE.json; resumable).", required=True,
               file=True, legacy_argument="out")
@click.option("--model", default="cifar10-conv", show_default=True,
              help="Frozen encoder f of the search objective: a model folder, alias or Hub id (the default is "
                   "the alias of the shipped model).")
@click.option("--split", default="train", show_default=True, help="Split of DATA_PATH (the one you train on).")
@click.option("--limit", default=0, show_default=True, type=click.IntRange(0), help="First N images (must match data.limit).")
@click.option("--views", default=2, show_default=True, type=click.IntRange(1), help="Latents searched per image (K).")
@click.option("--steps", default=5, show_default=True, type=click.IntRange(1), help="Adam steps per batch.")
@click.option("--lr", default=0.05, show_default=True, type=click.FloatRange(0, min_open=True))
@click.option("--eps1", default=0.55, show_default=True, type=float, help="Target feature distance to the reconstruction.")
@click.option("--eps2", default=0.55, show_default=True, type=float, help="Minimum mean distance among the K views.")
@click.option("--lambda", "lam", default=1.0, show_default=True, type=float, help="Weight of the spread term.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@device_option()
@handle_errors(on_interrupt="interrupted; run the same command again to resume the search")
def main(data_path: str, vae_dir: str, output: Path, model: str, split: str, limit: int, views: int, steps: int,
         lr: float, eps1: float, eps2: float, lam: float, batch_size: int, seed: int, device: str) -> None:
    """Search K latents per image of DATA_PATH with the VAE in VAE_DIR; write the cache --output.
    (The cache may also be given as a third argument, as older scripts do.)"""
    import torch

    from metaug_training.a2_search import build_latent_cache
    from metaug_training.data import load_image_array
    from metaug_training.vae import read_vae_config

    size = read_vae_config(vae_dir).image_size
    data = load_image_array(data_path, split=split, size=size, cache_dir="~/.cache/metaug-features/datasets",
                            limit=limit)
    build_latent_cache(vae_dir, model, torch.from_numpy(data.images), data.fingerprint, output, views=views,
                       steps=steps, lr=lr, eps1=eps1, eps2=eps2, lam=lam, batch_size=batch_size, seed=seed,
                       device=device, log=click.echo)
    click.echo(f"wrote {normalised(output.with_suffix('.safetensors'))} and its .json")


if __name__ == "__main__":
    main()
