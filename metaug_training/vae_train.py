"""Training the IDAA-shaped VAE (``metaug-train-vae``) on any image folder or the CIFAR-10 archive.

The images are decoded once into a uint8 array (the trainer's cache, ``metaug_training/data.py``),
each epoch visits them in a seeded random order with random horizontal flips, and the model is
trained with Adam on :func:`~metaug_training.vae.vae_loss`. At the end the reconstruction
quality of ``G(x) = decode(mu(x))`` is measured as the mean per-image PSNR on the evaluation
split (``test`` of CIFAR-10); a source without that split holds out a seeded 2% of its images
instead (also when the source has no ``train`` split to train on apart from it), and the report
says which.

Resume: the optimiser state is saved after every epoch in ``<out>/train_state.pt`` (weights
only, loaded with ``weights_only=True``, with the random state); ``resume=True`` continues from
the last whole epoch and gives the weights an uninterrupted run gives (same device).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from metaug_features.atomic import atomic_write_text
from metaug_features.device import resolve_device
from metaug_features.errors import ConfigError

from .checkpoint import CheckpointError, git_commit, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import DATASET_CACHE_DIR
from .data import ImageArray, load_image_array, split_exists
from .vae import IDAAVAE, VAEConfig, VAEError, psnr, save_vae, vae_loss


class VAEDivergedError(VAEError, FloatingPointError):
    """The VAE loss became NaN or infinite (a smaller learning rate usually fixes it)."""


STATE_NAME = "train_state.pt"
HOLDOUT_FRACTION = 0.02


def _images(data: ImageArray, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """float RGB ``[b, 3, S, S]`` in [0, 1] of rows ``idx``."""
    x = torch.from_numpy(data.images[idx.numpy()]).to(device)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def evaluate_psnr(vae: IDAAVAE, data: ImageArray, rows: torch.Tensor, device: torch.device,
                  batch_size: int = 500) -> float:
    """Mean PSNR (dB) of ``G(x) = decode(mu(x))`` over the images ``rows`` (eval-mode BN)."""
    was = vae.training
    vae.eval()
    total = 0.0
    for lo in range(0, len(rows), batch_size):
        x = _images(data, rows[lo:lo + batch_size], device)
        total += float(psnr(vae.reconstruct(x), x).sum())
    vae.train(was)
    return total / max(len(rows), 1)


def train_vae(
    path: str,
    out_dir: str | Path,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    limit: int = 0,
    eval_split: str = "test",
    device: str = "auto",
    cache_dir: str | None = DATASET_CACHE_DIR,
    config: VAEConfig | None = None,
    resume: bool = False,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Train a VAE on the ``train`` split of ``path`` and save it to ``out_dir``.

    Returns the report (also stored as ``config.json``'s ``record``): images, epochs, seconds,
    ``test_psnr_db`` and which images it was measured on.
    """
    started = time.monotonic()
    dev = resolve_device(device)
    cfg = config or VAEConfig()
    out = Path(out_dir)
    train = load_image_array(path, split="train", size=cfg.image_size, cache_dir=cache_dir, limit=limit)
    if train.images.shape[1] != cfg.image_size or train.images.shape[2] != cfg.image_size:
        raise ConfigError(f"images are {train.images.shape[1]}x{train.images.shape[2]}, the VAE wants {cfg.image_size}")
    n = len(train)
    all_rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if eval_split == "train" or not split_exists(path, eval_split) or not split_exists(path, "train"):
        # No separate evaluation split: hold out a seeded 2% of the training images.
        k = max(1, int(round(HOLDOUT_FRACTION * n)))
        eval_data, eval_rows, train_rows = train, all_rows[:k].sort().values, all_rows[k:].sort().values
        eval_name = f"held-out {k} of {n} training images"
    else:
        test = load_image_array(path, split=eval_split, size=cfg.image_size, cache_dir=cache_dir)
        eval_data, eval_rows, train_rows = test, torch.arange(len(test)), torch.arange(n)
        eval_name = f"{eval_split} split ({len(test)} images)"

    torch.manual_seed(seed)
    vae = IDAAVAE(cfg).to(dev).train()
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    start_epoch = 0
    state_path = out / STATE_NAME
    if resume and state_path.is_file():
        st = load_checkpoint(state_path)
        if st.get("fingerprint") != train.fingerprint:
            raise CheckpointError(f"cannot resume {state_path}: it was trained on other images")
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        start_epoch = int(st["epoch"])
        set_rng_state(st["rng"])  # the sampling noise continues where it stopped: a bit-exact resume
        if log:
            log(f"resuming VAE training at epoch {start_epoch}")
    m = len(train_rows)
    steps = m // batch_size
    if steps < 1:
        raise ConfigError(f"batch_size {batch_size} is larger than the {m} training images")
    for epoch in range(start_epoch, epochs):
        g = torch.Generator().manual_seed(seed * 1000003 + epoch)
        order = train_rows[torch.randperm(m, generator=g)]
        flips = torch.rand(m, generator=g) < 0.5
        sums = torch.zeros(3, device=dev)
        t0 = time.perf_counter()
        for s in range(steps):
            sel = slice(s * batch_size, (s + 1) * batch_size)
            x = _images(train, order[sel], dev)
            f = flips[sel].to(dev)
            x = torch.where(f[:, None, None, None], x.flip(3), x)
            x_rec, mu, logvar = vae(x)
            loss, mse, kl = vae_loss(x, x_rec, mu, logvar, cfg.kl_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach(), mse.detach(), kl.detach()])
        loss_m, mse_m, kl_m = (sums / steps).tolist()
        if not torch.isfinite(torch.tensor(loss_m)):
            raise VAEDivergedError(f"VAE loss became {loss_m} in epoch {epoch}; lower --lr")
        save_checkpoint(state_path, {"model": vae.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                                     "fingerprint": train.fingerprint, "rng": rng_state()})
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {loss_m:.5f} mse {mse_m:.5f} kl/elem {kl_m:.5f} "
                f"({m / (time.perf_counter() - t0):.0f} img/s)")
    test_psnr = evaluate_psnr(vae, eval_data, eval_rows, dev)
    report = {
        "dataset": Path(path).name, "fingerprint": train.fingerprint, "num_train": int(m), "epochs": epochs,
        "batch_size": batch_size, "lr": lr, "seed": seed, "device": str(dev),
        "seconds": round(time.monotonic() - started, 1), "test_psnr_db": round(test_psnr, 3),
        "psnr_measured_on": eval_name, "git_sha": git_commit(),
    }
    vae.config = replace(vae.config, record=report)
    save_vae(vae, out)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    if log:
        log(f"VAE saved to {out}: PSNR {test_psnr:.2f} dB on the {eval_name}")
    return report
