"""The sections of the training config that say how a run reads data, builds its encoder and
memory bank, optimises and executes: ``data``, ``model``, ``bank``, ``optim``, ``run``.

Each section is a frozen dataclass whose defaults are the ones docs/METHODS.md names (the
official code's where it picks the code's reading) and which validates itself on construction:
a bad value is a :class:`~metaug_features.errors.ConfigError` naming the dotted key. The losses'
sections are in :mod:`~metaug_training.config.loss_sections`, the view generators' in
:mod:`~metaug_training.config.generator_sections`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metaug_features.config import EncoderConfig
from metaug_features.device import DEVICE_SPECS, check_device_spec
from metaug_features.errors import ConfigError, MetAugError

from .checks import check_at_least, check_choice, check_non_empty, check_positive

#: ``bank.scoring`` values (docs/METHODS.md section 3).
BANK_SCORINGS = ("full", "gather", "shared")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "cosine")
PRECISIONS = ("fp32", "bf16")
META_GRAD_MODES = ("jvp", "double_backward")

#: Where decoded training images are cached: ``data.cache_dir``'s default, and the cache of
#: ``metaug-train-vae`` and ``metaug-a2-search`` (the same images decode once for all three).
DATASET_CACHE_DIR = "~/.cache/metaug-features/datasets"

#: The library's encoder defaults, read from ``EncoderConfig`` itself: ``ModelConfig`` repeats
#: none of them, so a training run and ``EncoderConfig()`` build the same encoder.
_ENCODER_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(EncoderConfig)}


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are augmented (docs/METHODS.md section 1).

    path: an image folder (class sub-folders give labels, a flat folder gives none) or the
        CIFAR-10 JPEG archive (``.tar.gz`` with ``<top>/<split>/<class>/<file>.jpg``).
    split: sub-folder used when ``path`` holds one of that name (``train`` of CIFAR-10); a
        folder without it is used whole.
    cache_dir: where the decoded uint8 array [N, S, S, 3] is cached (``~`` expanded).
    cache_size: side S of the cached images; 0 = the encoder's ``resize_size`` (32 for
        alexnet32, 256 for alexnet224). CIFAR-10 images stay 32 x 32 and are upsampled by
        the crop when the encoder wants more.
    limit: use only the first ``limit`` images (sorted by path); 0 = all.
    num_workers: decoding processes for image folders (0 decodes in the main process).
    crop_scale, crop_ratio: RandomResizedCrop area fraction and aspect-ratio ranges.
    flip: random horizontal flip with probability 0.5.
    """

    path: str = "data/cifar10-jpeg.tar.gz"
    split: str = "train"
    cache_dir: str = DATASET_CACHE_DIR
    cache_size: int = 0
    limit: int = 0
    num_workers: int = 2
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip: bool = True

    def __post_init__(self) -> None:
        check_non_empty("data.path", self.path, "name an image folder or the CIFAR-10 archive")
        for name in ("cache_size", "limit", "num_workers"):
            check_at_least(f"data.{name}", getattr(self, name), 0)
        lo, hi = self.crop_scale
        if not (0 < lo <= hi <= 1):
            raise ConfigError(f"config key 'data.crop_scale' must satisfy 0 < min <= max <= 1, got {list(self.crop_scale)}")
        if not (0 < self.crop_ratio[0] <= self.crop_ratio[1]):
            raise ConfigError(f"config key 'data.crop_ratio' must satisfy 0 < min <= max, got {list(self.crop_ratio)}")


@dataclass(frozen=True)
class ModelConfig:
    """The encoder (docs/METHODS.md section 2); these become the exported ``EncoderConfig``.

    Each field means what the ``EncoderConfig`` field of the same name means, and its default is
    that field's default (read from the library, never repeated here).
    """

    architecture: str = _ENCODER_DEFAULTS["architecture"]
    width: float = _ENCODER_DEFAULTS["width"]
    views: tuple[str, ...] = _ENCODER_DEFAULTS["views"]
    ori_space: str = _ENCODER_DEFAULTS["ori_space"]
    embedding_dim: int = _ENCODER_DEFAULTS["embedding_dim"]
    stem: str = _ENCODER_DEFAULTS["stem"]

    def __post_init__(self) -> None:
        # The encoder fields are validated by the library's own EncoderConfig; re-key its errors.
        try:
            self.encoder_config()
        except ConfigError as e:
            raise ConfigError(f"model: {e}".replace("config key '", "config key 'model.")) from None
        if len(self.views) < 2:
            raise ConfigError(f"config key 'model.views' needs at least two views for contrastive training, got {list(self.views)}")

    def encoder_config(self, provenance: Mapping[str, Any] | None = None) -> EncoderConfig:
        """The library's ``EncoderConfig`` of this encoder (``provenance`` recorded in it)."""
        return EncoderConfig(
            architecture=self.architecture,
            width=float(self.width),
            views=tuple(self.views),
            ori_space=self.ori_space,
            embedding_dim=self.embedding_dim,
            stem=self.stem,
            provenance=dict(provenance or {}),
        )


@dataclass(frozen=True)
class BankConfig:
    """Memory bank (docs/METHODS.md section 3). scoring: "full" = exact per-anchor scores via
    ``z @ bank.T`` (docs/METHODS.md section 3(a)), "gather" = naive reference, "shared" = one set of K negatives
    for the whole batch (docs/METHODS.md section 3(b), a change of sampling)."""

    num_negatives: int = 4096
    momentum: float = 0.5
    scoring: str = "full"

    def __post_init__(self) -> None:
        check_at_least("bank.num_negatives", self.num_negatives, 1)
        if not (0 <= self.momentum < 1):
            raise ConfigError(f"config key 'bank.momentum' must be in [0, 1), got {self.momentum}")
        check_choice("bank.scoring", self.scoring, BANK_SCORINGS)


@dataclass(frozen=True)
class OptimConfig:
    """Encoder optimiser and schedule (docs/METHODS.md section 6, the code's SGD).

    optimizer: "sgd" (official code, default) or "adam" (the paper's text); applies to the
        encoder and the MAGs. Adam uses ``lr`` and ``weight_decay`` (L2, as torch.optim.Adam)
        and ignores ``momentum``.

    batch_size: global batch (all ranks and accumulation steps together); each forward sees
        ``batch_size / (world_size * accum_steps)`` images.
    schedule: "step" (x ``lr_decay`` at each epoch of ``milestones``) or "cosine" (to 0 over
        ``epochs``, per step). warmup_epochs: linear warm-up from 0, per step.
    accum_steps: micro-batches per step (gradients averaged; the bank is updated once per step).
    """

    optimizer: str = "sgd"
    batch_size: int = 64
    epochs: int = 300
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"
    milestones: tuple[int, ...] = (120, 160, 200)
    lr_decay: float = 0.1
    warmup_epochs: float = 0.0
    accum_steps: int = 1

    def __post_init__(self) -> None:
        check_choice("optim.optimizer", self.optimizer, OPTIMIZERS)
        check_at_least("optim.batch_size", self.batch_size, 2)
        check_at_least("optim.epochs", self.epochs, 1)
        for name in ("lr", "momentum", "weight_decay", "warmup_epochs"):
            check_positive(f"optim.{name}", getattr(self, name), allow_zero=True)
        check_choice("optim.schedule", self.schedule, SCHEDULES)
        if list(self.milestones) != sorted(self.milestones) or any(x < 1 for x in self.milestones):
            raise ConfigError(f"config key 'optim.milestones' must be increasing positive epochs, got {list(self.milestones)}")
        check_positive("optim.lr_decay", self.lr_decay)
        if self.accum_steps < 1 or self.batch_size % self.accum_steps:
            raise ConfigError(f"config key 'optim.accum_steps' must be >= 1 and divide optim.batch_size "
                              f"({self.batch_size}), got {self.accum_steps}")
        if self.batch_size // self.accum_steps < 2:
            raise ConfigError("config key 'optim.accum_steps' leaves fewer than 2 images per micro-batch (batch norm needs 2)")


@dataclass(frozen=True)
class RunConfig:
    """How the run is executed and recorded (never changes the maths, so a resume may change it).

    device: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:N".
    precision: "fp32" or "bf16" (autocast on CUDA only).
    num_threads: torch CPU threads per process; 0 = the cores this process may use divided by
        the processes on this machine.
    ckpt_every: write ``checkpoints/last.pt`` every this many steps (and at the end).
    max_steps: stop after this global step; the schedule still spans ``optim.epochs``. null (the
        default) runs all epochs. 0 is refused: it once meant "no limit", which a user asking
        for a dry run did not expect; ``run.max_steps=1`` is the quickest check that a run
        starts. A config saved with 0 (before 0 was refused) reads as null
        (:mod:`~metaug_training.config.upgrades`).
    stop_after_minutes: wall-clock deadline; the run stops cleanly, checkpoints and exports.
    export: write ``export/`` (the inference model folder) when the run stops.
    warm_start: a compact-state folder (``metaug_training/compact_state.py``, written by
        ``metaug-compact-state``) that ``--resume`` continues from when there is no full
        checkpoint in ``out_dir`` (a run continued on another machine). Not bit-exact: the
        memory bank is rebuilt and the optimiser momentum restarts. "" = none.

    Speed settings (benchmarks/train_speed.py measures each, "Training speed" in
    benchmarks/RESULTS.md; none changes the maths beyond float rounding,
    tests/training/test_train_speed_settings.py checks it). Defaults are what won on the 2-core CPU:
    channels_last: keep conv weights and inputs in NHWC (oneDNN's fast layout on CPUs). On.
    prefetch: prepare the next step's batch (gather, crop, flip, Lab) in a worker thread while
        the current step computes. On: the data path is only a few per cent of a CPU step, but
        the worker keeps it off the critical path (and matters more where the step runs on a GPU).
    meta_grad: "jvp" (default) computes the meta step's second-order term as a Jacobian-vector
        product through the encoder and a double backward through the loss head only;
        "double_backward" differentiates the whole inner backward (the textbook route).
    compile: ``torch.compile`` the encoder forward of the encoder step (inductor). Off: slower
        than eager here, and it compiles at the first step.
    keep_freed_memory: keep freed blocks in glibc's heap instead of returning them to the
        kernel, so a step does not page-fault its tensors in again (metaug_features/malloc_settings.py). On.
    """

    out_dir: str = "runs/default/full"
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    num_threads: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    max_steps: int | None = None
    stop_after_minutes: float = 0.0
    export: bool = True
    warm_start: str = ""
    quiet: bool = False
    channels_last: bool = True
    prefetch: bool = True
    meta_grad: str = "jvp"
    compile: bool = False
    keep_freed_memory: bool = True

    def __post_init__(self) -> None:
        check_non_empty("run.out_dir", self.out_dir, "not be empty")
        try:
            check_device_spec(self.device)
        except MetAugError:
            raise ConfigError(f"config key 'run.device' must be {DEVICE_SPECS}, got {self.device!r}") from None
        check_choice("run.precision", self.precision, PRECISIONS)
        check_choice("run.meta_grad", self.meta_grad, META_GRAD_MODES)
        for name in ("num_threads", "seed"):
            check_at_least(f"run.{name}", getattr(self, name), 0)
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"config key 'run.max_steps' must be >= 1 or null, got {self.max_steps}: null (the default) "
                              "runs all optim.epochs, and run.max_steps=1 is the quickest check that a run starts")
        for name in ("log_every", "ckpt_every"):
            check_at_least(f"run.{name}", getattr(self, name), 1)
        check_positive("run.stop_after_minutes", self.stop_after_minutes, allow_zero=True)

    def end_step(self, total_steps: int) -> int:
        """The global step the run stops at, of a schedule of ``total_steps``: ``max_steps`` when
        it is set and earlier, else ``total_steps`` (all epochs)."""
        return total_steps if self.max_steps is None else min(total_steps, self.max_steps)
