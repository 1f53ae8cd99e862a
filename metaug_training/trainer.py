"""The training loop: schedule, logging, checkpoints, deadline, export.

``train(cfg)`` runs a whole job (one process, or one rank under torchrun) and returns a
:class:`TrainResult`. The loop is built so that an interrupted run resumes *exactly*:

- a step's batch is a pure function of (seed, step) (``batches.py``), so nothing random
  depends on how many steps ran in this process;
- the learning rate is a pure function of the step (``schedule.lr_factor``);
- a checkpoint holds every tensor state (encoder, MAGs, optimisers, bank, NCE constant;
  ``resume.py`` writes and restores it, and warm-starts from a compact state).

So steps [0, T) in one process and steps [0, t) + resume + [t, T) give identical parameters on
the CPU with the same thread count (tests/training/test_train_resume.py). The global batch is split over
ranks and micro-batches the same way whatever the world size, so a DDP run matches a single-
process run with ``accum_steps = world_size`` (tests/training/test_train_ddp.py).

Loss values stay on the device between log steps (no host sync per step); a NaN or inf loss is
detected at the next log or checkpoint step, before anything is written, and stops the run with
:class:`TrainingDivergedError` naming the last good checkpoint.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from metaug_features.atomic import atomic_write_text
from metaug_features.errors import ConfigError, MetAugError
from metaug_features.malloc_settings import keep_freed_memory
from metaug_features.model import build_encoder

from .batches import StepBatch, StepBatches
from .checkpoint import checkpoint_path, git_commit, save_checkpoint
from .config import TrainConfig
from .data import ImageArray, load_image_array, steps_per_epoch
from .distributed import DistContext, any_rank, barrier, check_ranks_in_sync, cleanup, default_num_threads, init_distributed
from .export import export_encoder, provenance
from .memory_bank import MemoryBank
from .methods import META_PREFIX, Embedder, TrainState, make_optimizer, method_for, train_step
from .resume import checkpoint_contents, dataset_record, restore_checkpoint, resume_saved_state, warm_start
from .schedule import lr_factor
from .stop_signal import StopOnSignal
from .view_generators import build_view_generators


class TrainingDivergedError(MetAugError):
    """A loss became NaN or inf; the run stopped and kept its last good checkpoint."""


@dataclass
class TrainResult:
    """status: "finished" (all epochs), "max_steps", "deadline" (stop_after_minutes) or "signal"
    (SIGTERM / SIGINT: stopped at the next step, checkpoint and export written)."""

    status: str
    step: int
    checkpoint: Path | None
    export_dir: Path | None
    last_logs: dict[str, float] = field(default_factory=dict)


def build_state(cfg: TrainConfig, num_samples: int, ctx: DistContext) -> TrainState:
    """Fresh encoder, the method's extra state (MAGs, NCE: ``Method.build``), memory bank and
    optimiser on ``ctx.device`` (same init on every rank: everything is seeded from ``run.seed``)."""
    method = method_for(cfg.method)
    torch.manual_seed(cfg.run.seed)
    encoder = build_encoder(cfg.encoder_config()).to(ctx.device).train()
    if cfg.run.channels_last:
        # NHWC conv weights (and inputs, see batches.py): oneDNN's fast layout (NCHW takes
        # 1.19x the step, benchmarks/RESULTS.md). Same Parameter objects, so the optimisers
        # see them.
        encoder.to(memory_format=torch.channels_last)
    # Right after the encoder: MetAug's MAG initialisation draws from the seeded global RNG,
    # so this place fixes its weights (and keeps them those of earlier versions).
    extra = method.build(cfg, encoder, num_samples, ctx.device)
    bank_gen = torch.Generator().manual_seed(cfg.run.seed + 1)
    bank = MemoryBank(cfg.model.views, num_samples, cfg.model.embedding_dim, cfg.bank.num_negatives,
                      cfg.bank.momentum, cfg.bank.scoring, generator=bank_gen).to(ctx.device)
    o = cfg.optim
    opt = make_optimizer(o.optimizer, encoder.parameters(), o.lr, o.momentum, o.weight_decay)
    model: torch.nn.Module = Embedder(encoder)
    if ctx.distributed:
        model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    forward = torch.compile(model) if cfg.run.compile else model
    return TrainState(encoder=encoder, model=model, bank=bank, opt=opt, extra=extra, forward=forward)


class Trainer:
    """One run of ``cfg`` on ``data`` in the process context ``ctx``."""

    def __init__(self, cfg: TrainConfig, data: ImageArray, ctx: DistContext | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx or DistContext(device=torch.device("cpu"))
        self.data = data
        #: the method's functions (``methods.METHODS[cfg.method]``); an unknown name fails here.
        self.method = method_for(cfg.method)
        n = len(data)
        o = cfg.optim
        ws = self.ctx.world_size
        if o.batch_size % (ws * o.accum_steps):
            raise ConfigError(f"config key 'optim.batch_size' ({o.batch_size}) must be divisible by world size x "
                              f"accum_steps ({ws} x {o.accum_steps})")
        if o.batch_size // (ws * o.accum_steps) < 2:
            raise ConfigError(f"config key 'optim.batch_size' ({o.batch_size}) leaves fewer than 2 images per forward on {ws} ranks")
        self.spe = steps_per_epoch(n, o.batch_size)
        if self.spe < 1:
            raise ConfigError(f"config key 'optim.batch_size' ({o.batch_size}) is larger than the dataset ({n} images)")
        self.total_steps = o.epochs * self.spe
        self.end_step = cfg.run.end_step(self.total_steps)
        self.state = build_state(cfg, n, self.ctx)
        gens = build_view_generators(cfg, self.state.encoder, torch.from_numpy(data.images), data.fingerprint, self.ctx.device)
        for gen in gens:
            extra = [p for p in gen.parameters() if p.requires_grad]
            if extra:  # IDAA's separate BN: trained with the encoder, same lr schedule
                self.state.opt.add_param_group({"params": extra})
        self.state.generators = gens
        self.batches = StepBatches(cfg, data, self.state, self.ctx, self.spe, self.end_step)
        self.start_step = 0
        self.out_dir = Path(cfg.run.out_dir)
        self.git = git_commit()
        self.last_good: Path | None = None
        #: time.monotonic() at the start of the job (``train`` sets it before loading data).
        self.started = time.monotonic()

    # ------------------------------------------------------------------ one iteration
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's slice of global step ``step`` (:meth:`StepBatches.batch`)."""
        return self.batches.batch(step)

    def next_batch(self, step: int) -> StepBatch:
        """``batch(step)`` with the generators' input, from the prefetch worker when
        ``run.prefetch`` is on (:meth:`StepBatches.next_batch`)."""
        return self.batches.next_batch(step)

    def close(self) -> None:
        """Stop the prefetch worker (idempotent)."""
        self.batches.close()

    def step(self, step: int) -> dict[str, torch.Tensor]:
        """Set the learning rates for ``step`` and run one iteration."""
        f = lr_factor(self.cfg, step, self.spe)
        for group in self.state.opt.param_groups:
            group["lr"] = self.cfg.optim.lr * f
        if self.method.set_lr is not None:
            self.method.set_lr(self.cfg, self.state, f)
        with self.state.timer("data"):
            x, idx, sample_idx, gen_batch = self.next_batch(step)
        return train_step(self.cfg, self.state, x, idx, sample_idx, step, self.ctx, gen_batch)

    # ------------------------------------------------------------------ state (resume.py)
    def load(self, ckpt: dict[str, Any]) -> None:
        """Restore a full checkpoint of this run exactly (config and dataset checked first)."""
        self.start_step = restore_checkpoint(self, ckpt)

    def warm_start(self, compact: dict[str, Any]) -> None:
        """Continue from a compact state: weights and step restored, optimiser momentum from
        zero, memory bank rebuilt (:func:`metaug_training.resume.warm_start`; not bit-exact)."""
        self.start_step = warm_start(self, compact)

    def save(self, step: int, metrics: dict[str, float]) -> Path | None:
        """Checkpoint (rank 0 writes; other ranks return None)."""
        path = checkpoint_path(self.out_dir)
        if self.ctx.is_main:
            save_checkpoint(path, checkpoint_contents(self, step, metrics, self.git))
        self.last_good = path
        return path if self.ctx.is_main else None

    def export(self, step: int) -> Path | None:
        if not (self.ctx.is_main and self.cfg.run.export):
            return None
        prov = provenance(self.cfg, step, self.spe, self.git, dataset_record(self.cfg, self.data))
        return export_encoder(self.state.encoder, self.cfg, self.out_dir / "export", prov)

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        cfg, ctx = self.cfg, self.ctx
        main = ctx.is_main
        quiet = cfg.run.quiet or not main
        logger = _Logger(self.out_dir / "log.jsonl", enabled=main, quiet=quiet)
        if main:
            atomic_write_text(self.out_dir / "config.json", json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        from tqdm.auto import tqdm

        # disable=None: tqdm turns itself off when stderr is not a terminal.
        bar = tqdm(total=self.end_step, initial=self.start_step, unit="step", dynamic_ncols=True,
                   disable=True if quiet else None, file=sys.stderr)
        logger.bar = bar
        for gen in self.state.generators:
            calibration = getattr(gen, "calibration", None)
            if calibration is not None and self.start_step == 0:
                logger.log_raw({"event": f"{gen.name}-calibration", "step": self.start_step, **calibration})
                logger.message(f"{gen.name}: sigma {calibration['sigma']:.4g} gives mean feature cosine "
                               f"{calibration['cosine']} (target {calibration['target_cosine']})")
        # The deadline counts from the start of the job (data decoding included), so a session
        # given N minutes is done, checkpoint and export written, shortly after N minutes.
        deadline = self.started + 60.0 * cfg.run.stop_after_minutes if cfg.run.stop_after_minutes else None
        sums: dict[str, torch.Tensor] = {}
        count = 0
        t_log = time.perf_counter()
        last: dict[str, float] = {}
        status = "finished" if self.end_step == self.total_steps else "max_steps"
        step = self.start_step
        signals = StopOnSignal()
        signals.install()
        try:
            while step < self.end_step:
                logs = self.step(step)
                meta = {k[len(META_PREFIX):]: float(logs.pop(k)) for k in [k for k in logs if k.startswith(META_PREFIX)]}
                if meta:
                    # One record per meta step (metaug-meta-diagnostics reads them): a host sync
                    # per meta step, small beside the meta step's own cost.
                    logger.log_raw({"event": "meta", "step": step, "epoch": round(step / self.spe, 4), **meta})
                for k, v in logs.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                count += 1
                step += 1
                bar.update(1)
                late = deadline is not None and time.monotonic() > deadline
                # Under DDP the ranks must agree on the step they stop at: a signal is polled
                # collectively at log steps only (a deadline, as before, every step).
                if deadline is not None or not ctx.distributed or step % cfg.run.log_every == 0:
                    stop = any_rank(late or signals.requested, ctx)
                else:
                    stop = False
                if step % cfg.run.log_every == 0 or step == self.end_step or stop:
                    self._check_finite(step)
                    dt = time.perf_counter() - t_log
                    last = {k: float(v) / count for k, v in sums.items()}
                    rec = {"step": step, "epoch": round(step / self.spe, 4),
                           "lr": cfg.optim.lr * lr_factor(cfg, step - 1, self.spe), **last,
                           "img_per_s": count * cfg.optim.batch_size / max(dt, 1e-9)}
                    if self.method.log_record is not None:
                        rec.update(self.method.log_record(cfg, self.state, lr_factor(cfg, step - 1, self.spe)))
                    logger.log(rec)
                    bar.set_postfix(loss=f"{last.get('loss', float('nan')):.4f}", refresh=False)
                    sums, count, t_log = {}, 0, time.perf_counter()
                if stop:
                    status = "deadline" if late else "signal"
                    break
                if step % cfg.run.ckpt_every == 0 and step < self.end_step:
                    self._check_finite(step)
                    self.save(step, last)
            self._check_finite(step)
            if ctx.distributed:
                digests = check_ranks_in_sync(self.state.rank_synced_tensors(), ctx)
                logger.log_raw({"step": step, "rank_state_sha256": digests})
            ckpt = self.save(step, last)
            export_dir = self.export(step)
            barrier(ctx)
            # The leg's record for the campaign tooling: job wall time, data decoding included.
            logger.log_raw({"event": "stop", "status": status, "step": step, "epoch": round(step / self.spe, 4),
                            "start_step": self.start_step, "job_s": round(time.monotonic() - self.started, 1)})
            if main:
                logger.message(f"{status} at step {step} (epoch {step / self.spe:.2f}); checkpoint {ckpt}"
                               + (f"; exported to {export_dir}" if export_dir else ""))
            return TrainResult(status, step, ckpt, export_dir, last)
        finally:
            signals.restore()
            self.close()
            bar.close()
            logger.close()

    def _check_finite(self, step: int) -> None:
        flag = self.state.nonfinite if self.state.nonfinite is not None else torch.zeros((), dtype=torch.bool)
        if any_rank(flag, self.ctx):
            where = (f"the last good checkpoint is {self.last_good}" if self.last_good is not None
                     else "no checkpoint was written by this run")
            raise TrainingDivergedError(
                f"the loss became NaN or inf at or before step {step}; training stopped and {where}. "
                "Lower optim.lr, check the data, or resume from the checkpoint with different settings."
            )


class _Logger:
    """JSONL records (appended, one line each, flushed) + a line on stdout per record."""

    def __init__(self, path: Path, enabled: bool, quiet: bool) -> None:
        self.enabled = enabled
        self.quiet = quiet
        self.bar = None
        self.f = None
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.f = open(path, "a", encoding="utf-8")

    def log(self, rec: dict[str, Any]) -> None:
        if not self.enabled:
            return
        rec = {"time": round(time.time(), 3), **rec}
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        if not self.quiet:
            parts = [f"step {rec['step']}", f"ep {rec['epoch']:.2f}"]
            parts += [f"{k} {v:.4g}" for k, v in rec.items() if k not in ("time", "step", "epoch")]
            self.message(" | ".join(parts))

    def log_raw(self, rec: dict[str, Any]) -> None:
        """A JSONL record that is not echoed to stdout."""
        if self.enabled:
            self.f.write(json.dumps({"time": round(time.time(), 3), **rec}) + "\n")
            self.f.flush()

    def message(self, text: str) -> None:
        if not self.enabled or self.quiet:
            return
        if self.bar is not None and not self.bar.disable:
            self.bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def load_data(cfg: TrainConfig, ctx: DistContext, progress: bool = False) -> ImageArray:
    """Decode / read the cached dataset; rank 0 builds the cache while the others wait."""
    enc_cfg = cfg.encoder_config()
    d = cfg.data
    kwargs = dict(split=d.split, size=d.cache_size, cache_dir=d.cache_dir or None, limit=d.limit,
                  num_workers=d.num_workers, max_size=enc_cfg.resize_size)
    if ctx.is_main:
        data = load_image_array(d.path, progress=progress, **kwargs)
        barrier(ctx)
    else:
        barrier(ctx)
        data = load_image_array(d.path, **kwargs)
    return data


def train(cfg: TrainConfig, resume: bool = False, data: ImageArray | None = None) -> TrainResult:
    """Run (or, with ``resume``, continue) the training job ``cfg``.

    With ``resume`` the run continues from ``<run.out_dir>/checkpoints/last.pt`` when it exists
    (a message says so) and starts from scratch otherwise. Under torchrun every rank calls this.
    """
    started = time.monotonic()
    method_for(cfg.method)  # an unknown method fails here, before the data is decoded
    ctx = init_distributed(cfg.run.device)
    try:
        torch.set_num_threads(cfg.run.num_threads or default_num_threads(ctx))
        if cfg.run.keep_freed_memory:
            keep_freed_memory()
        if ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
        if cfg.run.precision == "bf16" and ctx.device.type != "cuda" and ctx.is_main:
            warnings.warn("run.precision=bf16 applies on CUDA only (bf16 is slower than fp32 on CPUs without AMX); "
                          "training in fp32", stacklevel=2)
        if data is None:
            data = load_data(cfg, ctx, progress=not cfg.run.quiet and ctx.is_main)
        if ctx.is_main and data.skipped and not cfg.run.quiet:
            print(f"skipped {len(data.skipped)} unreadable image(s), e.g. {data.skipped[0][0]}: {data.skipped[0][1]}")
        trainer = Trainer(cfg, data, ctx)
        trainer.started = started
        if resume:
            trainer.last_good = resume_saved_state(trainer, verbose=ctx.is_main and not cfg.run.quiet)
        if trainer.start_step >= trainer.end_step:
            if ctx.is_main and not cfg.run.quiet:
                print(f"nothing to do: step {trainer.start_step} >= {trainer.end_step}")
            export_dir = trainer.export(trainer.start_step)
            path = checkpoint_path(cfg.run.out_dir)
            return TrainResult("finished", trainer.start_step, path if path.is_file() else None, export_dir)
        return trainer.run()
    finally:
        cleanup(ctx)
