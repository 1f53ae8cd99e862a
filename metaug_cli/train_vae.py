"""``metaug-train-vae``: train the IDAA-shaped VAE that IDAA and A2 generate views with.

    metaug-train-vae ../shared/data/cifar10-jpeg.tar.gz -o runs/vae-cifar10 --epochs 5

Only parses options and calls :func:`metaug_training.vae_train.train_vae`.
"""

from __future__ import annotations

from pathlib import Path

import click

from ._common import command, device_option, handle_errors, output_option


@command("metaug-train-vae")
@click.argument("data_path")
@output_option("VAE folder to write (config.json, model.safetensors, report.json).", required=True,
               legacy_argument="out_dir")
@click.option("--epochs", default=5, show_default=True, type=click.IntRange(1))
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(2))
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(0, min_open=True), help="Adam learning rate.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--limit", default=0, show_default=True, type=click.IntRange(0), help="Use the first N training images (0 = all).")
@click.option("--image-size", default=32, show_default=True, type=click.IntRange(4), help="Side of the images (multiple of 4).")
@click.option("--latent-dim", default=512, show_default=True, type=click.IntRange(1))
@click.option("--kl-weight", default=0.1, show_default=True, type=click.FloatRange(0))
@click.option("--eval-split", default="test", show_default=True,
              help="Split the PSNR is measured on; without one, a held-out 2% of the training images.")
@device_option()
@click.option("--resume", is_flag=True, help="Continue from <output>/train_state.pt (the last whole epoch).")
@handle_errors(on_interrupt="interrupted; run the same command with --resume to continue from the last whole epoch")
def main(data_path: str, output: Path, epochs: int, batch_size: int, lr: float, seed: int, limit: int,
         image_size: int, latent_dim: int, kl_weight: float, eval_split: str, device: str, resume: bool) -> None:
    """Train a VAE on the images of DATA_PATH (folder or CIFAR-10 archive); save it to the folder
    --output (config.json + model.safetensors) and report its reconstruction PSNR. (The folder
    may also be given as a second argument, DATA_PATH DIR, as older scripts do.)"""
    from metaug_training.vae import VAEConfig
    from metaug_training.vae_train import train_vae

    cfg = VAEConfig(image_size=image_size, latent_dim=latent_dim, kl_weight=kl_weight)
    train_vae(data_path, output, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, limit=limit,
              eval_split=eval_split, device=device, config=cfg, resume=resume, log=click.echo)


if __name__ == "__main__":
    main()
