"""The paper's linear-evaluation protocol (docs/METHODS.md section 7), for users who have the encoder and
the images.

Unlike the rest of :mod:`metaug_features.evaluation` this module runs a network: a frozen
encoder (eval mode, BN running statistics, no gradients) under one trainable linear layer.

    for epoch in 1..E:                              E = 60
        for each batch of 256 train images:
            x = flip(RandomResizedCrop(img, size, scale=(0.2, 1)))   train-time augmentation
            f = encoder(encoder.preprocess.to_input(x), layer)        frozen features [B, D]
            loss = cross_entropy(W f + b, y)                          W: [C, D]
            SGD step (lr 0.1, momentum 0.9), lr x 0.2 after epochs 30, 40, 50
    test accuracy (centre-cropped images, as given) after each of the last ``average_last`` epochs

The reported number of one seed is the mean test top-1 of the last ``average_last`` epochs; over
several seeds, the mean and a 95% Student-t interval. Every setting is a field of
:class:`PaperProbeConfig`; a run with fewer epochs than the paper says so in its protocol string.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..crops import sample_crop_box, sample_crop_params
from ..decode_pool import DEFAULT_DECODE_TIME_LIMIT_S, Decoding, default_workers
from ..errors import EvaluationInputError
from ..file_decode import decode_paths
from .checks import check_labels

__all__ = ["PaperProbeConfig", "PaperProbeResult", "augment_batch", "paper_linear_probe", "sample_crop_box"]


@dataclass(frozen=True)
class PaperProbeConfig:
    """Settings of the paper's linear probe (defaults = docs/METHODS.md section 7)."""

    epochs: int = 60
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 256
    milestones: tuple[int, ...] = (30, 40, 50)
    gamma: float = 0.2
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    average_last: int = 1
    seeds: tuple[int, ...] = (0,)
    eval_batch_size: int = 256

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise EvaluationInputError("epochs, batch_size and eval_batch_size must be >= 1")
        if not 1 <= self.average_last <= self.epochs:
            raise EvaluationInputError(f"average_last must be in [1, epochs={self.epochs}], got {self.average_last}")
        if not (0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
            raise EvaluationInputError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        if not self.seeds:
            raise EvaluationInputError("give at least one seed")
        if self.lr <= 0:
            raise EvaluationInputError(f"lr must be > 0, got {self.lr}")

    @property
    def is_paper_budget(self) -> bool:
        return self == PaperProbeConfig(seeds=self.seeds, average_last=self.average_last,
                                        eval_batch_size=self.eval_batch_size)


def augment_batch(
    images: torch.Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float], flip: bool,
    gen: torch.Generator,
) -> torch.Tensor:
    """Train-time augmentation of uint8 images [B, 3, H, W] -> uint8 [B, 3, size, size]:
    one random resized crop (bilinear, antialiased) and a horizontal flip with probability 1/2
    per image. Boxes and flips come from the library's one sampler in its ``"per_image"`` draw
    order (:mod:`metaug_features.crops`), which keeps this probe's seeded results unchanged."""
    from torchvision.transforms.v2 import functional as TF

    params = sample_crop_params(images.shape[0], images.shape[-2], images.shape[-1], scale, ratio, flip, gen,
                                draws="per_image")
    out = torch.empty(images.shape[0], 3, size, size, dtype=torch.uint8)
    for i, (top, left, h, w) in enumerate(params.boxes.long().tolist()):
        crop = TF.resized_crop(images[i], top, left, h, w, [size, size], antialias=True)
        out[i] = crop.flip(-1) if params.flip[i] else crop
    return out


@dataclass
class PaperProbeResult:
    """Outcome of :func:`paper_linear_probe`.

    Attributes:
        per_seed: {seed: mean test top-1 (%) over the last ``average_last`` epochs}.
        mean, ci95: mean over seeds and half-width of its 95% t-interval (None with one seed).
        history: per seed, per epoch: lr, mean train loss, train accuracy on augmented
            batches, and test top-1 when measured.
        params: the config, the layer, counts.
    """

    per_seed: dict[int, float]
    mean: float
    ci95: float | None
    history: dict[int, list[dict[str, Any]]]
    params: dict[str, Any]
    protocol: str
    seconds: float = 0.0
    classes: list = field(default_factory=list)

    def report_entry(self) -> dict[str, Any]:
        metrics = {"top1_mean": self.mean}
        if self.ci95 is not None:
            metrics["top1_ci95"] = self.ci95
        for s, v in self.per_seed.items():
            metrics[f"top1_seed{s}"] = v
        # The per-epoch history goes into the report too: the learning curve and the test top-1 of
        # each averaged epoch are what tells a converged probe from a lucky or diverging one.
        return {"name": "paper_probe", "protocol": self.protocol, "params": dict(self.params, seconds=self.seconds),
                    "metrics": metrics, "history": {str(s): h for s, h in self.history.items()}}


def _as_uint8_images(images: Any, encoder: nn.Module, name: str) -> torch.Tensor:
    """uint8 [N, 3, S, S] tensor, or paths / PIL images decoded with the encoder's eval
    preprocessing (resize + centre crop to its input size), once."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise EvaluationInputError(f"{name}: expected a uint8 tensor [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        return images
    images = list(images)
    if not images:
        raise EvaluationInputError(f"{name}: no images")
    if all(isinstance(im, (str, os.PathLike)) for im in images):
        return _decode_files(images, encoder, name)
    return encoder.preprocess.load_batch(images)


def _decode_files(paths: Sequence[str | os.PathLike], encoder: nn.Module, name: str) -> torch.Tensor:
    """Image files -> uint8 [N, 3, S, S] through the library's decode pool (per-file time limit,
    crash isolation, the reasons ``metaug-extract`` gives). Every file must decode: a skipped
    image would leave its label without an image, so any skip is an error that lists them."""
    decoded, _, bad = decode_paths([os.fspath(p) for p in paths], encoder.preprocess.load_image,
                                   Decoding(default_workers(), DEFAULT_DECODE_TIME_LIMIT_S))
    if bad:
        listed = "; ".join(f"{os.fspath(paths[i])}: {r}" for i, r in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise EvaluationInputError(f"{name}: {len(bad)} of {len(paths)} image file(s) could not be decoded ({listed}); "
                                   "remove or fix them (metaug-extract lists the same reasons in skipped.csv)")
    return decoded


def _t_quantile_975(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


@torch.no_grad()
def _evaluate(encoder, linear, images, y, layer, batch_size, device) -> float:
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        x = encoder.preprocess.to_input(images[start : start + batch_size].to(device))
        logits = linear(encoder(x, layer))
        correct += int((logits.argmax(1).cpu() == y[start : start + batch_size]).sum())
    return 100.0 * correct / images.shape[0]


def paper_linear_probe(
    encoder: nn.Module,
    train_images: torch.Tensor | Sequence,
    train_labels: Sequence | np.ndarray,
    test_images: torch.Tensor | Sequence,
    test_labels: Sequence | np.ndarray,
    layer: str | None = None,
    config: PaperProbeConfig = PaperProbeConfig(),
    progress: bool = False,
) -> PaperProbeResult:
    """Train a linear classifier on the frozen ``encoder``'s ``layer`` features (module docstring).

    Args:
        encoder: a built :class:`~metaug_features.MetAugEncoder`; it stays frozen: it is put in
            eval mode during the probe (its previous mode is restored) and none of its
            parameters or buffers change. The probe runs on the encoder's device.
        train_images, test_images: uint8 [N, 3, H, W] tensors, or paths / PIL images (decoded
            once with the encoder's eval preprocessing). Test images are used as given
            (centre crop), train images are augmented each epoch.
        train_labels, test_labels: one label per image (str or int).
        layer: feature layer (default: the encoder's default layer).
        config: :class:`PaperProbeConfig`.
        progress: show a tqdm bar over epochs (quiet when not a terminal).
    """
    from tqdm.auto import tqdm

    config.validate()
    tr = _as_uint8_images(train_images, encoder, "train images")
    te = _as_uint8_images(test_images, encoder, "test images")
    ytr_raw = check_labels(train_labels, tr.shape[0], "train labels")
    yte_raw = check_labels(test_labels, te.shape[0], "test labels")
    classes = np.unique(ytr_raw)
    if classes.size < 2:
        raise EvaluationInputError("train labels: only one class; classification needs at least two")
    if np.setdiff1d(np.unique(yte_raw), classes).size:
        raise EvaluationInputError("test labels hold classes absent from the train set")
    ytr = torch.from_numpy(np.searchsorted(classes, ytr_raw).astype(np.int64))
    yte = torch.from_numpy(np.searchsorted(classes, yte_raw).astype(np.int64))
    layer = layer if layer is not None else encoder.config.default_layer
    dim = encoder.feature_dim(layer)
    size = encoder.config.input_size
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    t0 = time.perf_counter()
    per_seed: dict[int, float] = {}
    history: dict[int, list[dict[str, Any]]] = {}
    try:
        for seed in config.seeds:
            gen = torch.Generator().manual_seed(int(seed))
            torch.manual_seed(int(seed))
            linear = nn.Linear(dim, int(classes.size)).to(device)
            # As CMC's linear classifier: small Gaussian weights, zero bias.
            nn.init.normal_(linear.weight, 0.0, 0.01)
            nn.init.zeros_(linear.bias)
            opt = torch.optim.SGD(linear.parameters(), lr=config.lr, momentum=config.momentum,
                                  weight_decay=config.weight_decay)
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(config.milestones), gamma=config.gamma)
            hist: list[dict[str, Any]] = []
            test_accs: list[float] = []
            bar = tqdm(range(config.epochs), desc=f"paper probe seed {seed}", disable=not progress, leave=False)
            for epoch in bar:
                lr = opt.param_groups[0]["lr"]
                perm = torch.randperm(tr.shape[0], generator=gen)
                loss_sum, correct = 0.0, 0
                for start in range(0, tr.shape[0], config.batch_size):
                    idx = perm[start : start + config.batch_size]
                    x = augment_batch(tr[idx], size, config.crop_scale, config.crop_ratio, config.flip, gen)
                    with torch.no_grad():
                        f = encoder(encoder.preprocess.to_input(x.to(device)), layer)
                    logits = linear(f)
                    y = ytr[idx].to(device)
                    loss = F.cross_entropy(logits, y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += float(loss.detach()) * idx.numel()
                    correct += int((logits.argmax(1) == y).sum())
                sched.step()
                rec: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / tr.shape[0],
                                           "train_top1": 100.0 * correct / tr.shape[0]}
                if epoch >= config.epochs - config.average_last:
                    rec["test_top1"] = _evaluate(encoder, linear, te, yte, layer, config.eval_batch_size, device)
                    test_accs.append(rec["test_top1"])
                hist.append(rec)
            per_seed[int(seed)] = float(np.mean(test_accs))
            history[int(seed)] = hist
    finally:
        encoder.train(was_training)
    vals = np.array(list(per_seed.values()))
    ci = None
    if vals.size >= 2:
        ci = float(_t_quantile_975(vals.size - 1) * vals.std(ddof=1) / math.sqrt(vals.size))
    budget = "paper budget" if config.is_paper_budget else "REDUCED budget (not the paper's schedule)"
    protocol = (
        f"paper linear probe (docs/METHODS.md section 7; {budget}): frozen encoder, one linear layer on '{layer}', "
        f"SGD lr {config.lr} momentum {config.momentum}, batch {config.batch_size}, {config.epochs} epochs, "
        f"lr x{config.gamma} at {list(config.milestones)}, RandomResizedCrop scale {tuple(config.crop_scale)} + flip; "
        f"test top-1 averaged over the last {config.average_last} epoch(s), mean over {vals.size} seed(s)"
    )
    params = dict(asdict(config), layer=layer, dim=int(dim), num_train=int(tr.shape[0]), num_test=int(te.shape[0]),
                  num_classes=int(classes.size))
    return PaperProbeResult(per_seed=per_seed, mean=float(vals.mean()), ci95=ci, history=history, params=params,
                            protocol=protocol, seconds=time.perf_counter() - t0,
                            classes=[c.item() for c in classes])
