"""``metaug-train-vae``: train the IDAA-shaped VAE that IDAA and A2 generate views with.

    metaug-train-vae ../shared/data/cifar10-jpeg.tar.gz -o runs/vae-cifar10 --epochs 5

Only parses options and calls :func:`metaug_training.vae_train.train_vae`; the options' defaults
are that function's and :class:`~metaug_training.vae.VAEConfig`'s.
"""

from __future__ import annotations

from pathlib import Path

import click

from metaug_training.vae import VAEConfig
from metaug_training.vae_train import train_vae

from ._common import (
    command,
    device_option,
    handle_errors,
    normalised,
    output_option,
    quiet_option,
    signature_defaults,
)

_FIT = signature_defaults(train_vae)


@command("metaug-train-vae")
@click.argument("data_path")
@output_option("VAE folder to write (config.json, model.safetensors, report.json).", required=True,
               legacy_argument="out_dir")
@click.option("--epochs", default=_FIT["epochs"], show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=_FIT["batch_size"], show_default=True, type=click.IntRange(2))
@click.option("--lr", default=_FIT["lr"], show_default=True, type=click.FloatRange(0, min_open=True),
              help="Adam learning rate.")
@click.option("--seed", default=_FIT["seed"], show_default=True, type=click.IntRange(0))
@click.option("--limit", default=_FIT["limit"], show_default=True, type=click.IntRange(0),
              help="Use the first N training images (0 = all).")
@click.option("--image-size", default=VAEConfig.image_size, show_default=True, type=click.IntRange(4),
              help="Side of the images (multiple of 4).")
@click.option("--latent-dim", default=VAEConfig.latent_dim, show_default=True, type=click.IntRange(1))
@click.option("--kl-weight", default=VAEConfig.kl_weight, show_default=True, type=click.FloatRange(0))
@click.option("--eval-split", default=_FIT["eval_split"], show_default=True,
              help="Split the PSNR is measured on; without one, a held-out 2% of the training images.")
@device_option()
@click.option("--resume", is_flag=True, help="Continue from <output>/train_state.pt (the last whole epoch).")
@quiet_option("No per-epoch lines; print only the final one.")
@handle_errors(on_interrupt="interrupted; run the same command with --resume to continue from the last whole epoch")
def main(data_path: str, output: Path, epochs: int, batch_size: int, lr: float, seed: int, limit: int,
         image_size: int, latent_dim: int, kl_weight: float, eval_split: str, device: str, resume: bool,
         quiet: bool) -> None:
    """Train a VAE on the images of DATA_PATH (folder or CIFAR-10 archive); save it to the folder
    --output (config.json + model.safetensors) and report its reconstruction PSNR. (The folder
    may also be given as a second argument, DATA_PATH DIR, as older scripts do.)"""
    cfg = VAEConfig(image_size=image_size, latent_dim=latent_dim, kl_weight=kl_weight)
    report = train_vae(data_path, output, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, limit=limit,
                       eval_split=eval_split, device=device, config=cfg, resume=resume,
                       log=None if quiet else click.echo)
    if quiet:
        click.echo(f"VAE saved to {normalised(output)}: PSNR {report['test_psnr_db']:.2f} dB on the "
                   f"{report['psnr_measured_on']}")


if __name__ == "__main__":
    main()
