"""The training loop: schedule, logging, checkpoints, resume, deadline, export.

``train(cfg)`` runs a whole job (one process, or one rank under torchrun) and returns a
:class:`TrainResult`. The loop is built so that an interrupted run resumes *exactly*:

- the sample order of epoch e is a permutation drawn from (seed, e); crop boxes and negatives
  of global step t come from generators seeded with (seed, stream, t) (``data.step_generator``),
  so nothing random depends on how many steps ran in this process;
- the learning rate is a pure function of the step (``lr_factor``);
- a checkpoint holds every tensor state (encoder, MAGs, optimisers, bank, NCE constant).

So steps [0, T) in one process and steps [0, t) + resume + [t, T) give identical parameters on
the CPU with the same thread count (tests/training/test_train_resume.py). The global batch is split over
ranks and micro-batches the same way whatever the world size, so a DDP run matches a single-
process run with ``accum_steps = world_size`` (tests/training/test_train_ddp.py).

Loss values stay on the device between log steps (no host sync per step); a NaN or inf loss is
detected at the next log or checkpoint step, before anything is written, and stops the run with
:class:`TrainingDivergedError` naming the last good checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from metaug_features.atomic import atomic_write_text
from metaug_features.errors import ConfigError, MetAugError
from metaug_features.model import build_encoder

from .augment import BatchAugment, apply_crops
from .schedule import lr_factor
from .cpu_tuning import keep_freed_memory
from .compact_state import has_compact_state, load_compact_state
from .checkpoint import CheckpointError, checkpoint_path, git_commit, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import RESUMABLE_KEYS, RESUMABLE_SECTIONS, TrainConfig, diff_keys
from .data import ImageArray, epoch_permutation, global_batch_indices, load_image_array, step_generator, steps_per_epoch
from .distributed import DistContext, all_gather_cat, any_rank, barrier, cleanup, default_num_threads, init_distributed
from .export import export_encoder, provenance
from .losses import NCELoss
from .mag import build_mags_for, mag_norms
from .memory_bank import MemoryBank, view_pairs
from .methods import Embedder, TrainState, to_network_input, train_step
from .view_generators import GeneratorBatch, build_view_generators
from .stop_signal import StopOnSignal


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


def make_optimizer(kind: str, params, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    """SGD with momentum (official code) or Adam (the paper's text; momentum unused)."""
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def build_state(cfg: TrainConfig, num_samples: int, ctx: DistContext) -> TrainState:
    """Fresh encoder, MAGs, memory bank, NCE and optimisers on ``ctx.device`` (same init on
    every rank: everything is seeded from ``run.seed``)."""
    torch.manual_seed(cfg.run.seed)
    encoder = build_encoder(cfg.encoder_config()).to(ctx.device).train()
    if cfg.run.channels_last:
        # NHWC conv weights (and inputs, see Trainer.batch): oneDNN's fast layout (NCHW takes
        # 1.19x the step, benchmarks/RESULTS.md). Same Parameter objects, so the optimisers
        # below see them.
        encoder.to(memory_format=torch.channels_last)
    mags = build_mags_for(encoder).to(ctx.device).train() if cfg.method == "metaug" else None
    bank_gen = torch.Generator().manual_seed(cfg.run.seed + 1)
    bank = MemoryBank(cfg.model.views, num_samples, cfg.model.embedding_dim, cfg.bank.num_negatives,
                      cfg.bank.momentum, cfg.bank.scoring, generator=bank_gen).to(ctx.device)
    nce = None
    if cfg.method == "cmc" and cfg.loss.cmc == "nce":
        nce = NCELoss(num_samples, len(view_pairs(cfg.model.views)), cfg.loss.temperature).to(ctx.device)
    o = cfg.optim
    opt = make_optimizer(o.optimizer, encoder.parameters(), o.lr, o.momentum, o.weight_decay)
    mag_opt = None
    if mags is not None:
        mg = cfg.metaug
        mag_opt = make_optimizer(o.optimizer, mags.parameters(), mg.lr, mg.momentum, mg.weight_decay)
    model: torch.nn.Module = Embedder(encoder)
    if ctx.distributed:
        model = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    forward = torch.compile(model) if cfg.run.compile else model
    return TrainState(encoder=encoder, model=model, bank=bank, opt=opt, mags=mags, mag_opt=mag_opt, nce=nce,
                      forward=forward)


class Trainer:
    """One run of ``cfg`` on ``data`` in the process context ``ctx``."""

    def __init__(self, cfg: TrainConfig, data: ImageArray, ctx: DistContext | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx or DistContext(device=torch.device("cpu"))
        self.data = data
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
        self.end_step = min(self.total_steps, cfg.run.max_steps) if cfg.run.max_steps else self.total_steps
        self.state = build_state(cfg, n, self.ctx)
        gens = build_view_generators(cfg, self.state.encoder, torch.from_numpy(data.images), data.fingerprint, self.ctx.device)
        for gen in gens:
            extra = [p for p in gen.parameters() if p.requires_grad]
            if extra:  # IDAA's separate BN: trained with the encoder, same lr schedule
                self.state.opt.add_param_group({"params": extra})
        self.state.generators = gens
        self.augment = BatchAugment(self.state.encoder.config.input_size, cfg.data.crop_scale, cfg.data.crop_ratio, cfg.data.flip)
        # The whole uint8 dataset on the device (CIFAR-10: 150 MB): one index_select per step.
        images = torch.from_numpy(data.images)
        self.images = images.to(self.ctx.device) if self.ctx.device.type == "cuda" else images
        self.local_batch = o.batch_size // ws
        self._perm_epoch = -1
        self._perm: torch.Tensor | None = None
        # run.prefetch: one worker thread prepares batch(step + 1) while step runs. batch() is a
        # pure function of (seed, step) (it never reads the bank's contents), so a prefetched
        # batch is the batch; only the worker calls batch() once prefetching is on.
        self._prefetch_pool: ThreadPoolExecutor | None = None
        self._prefetched: tuple[int, Future] | None = None
        self.start_step = 0
        self.out_dir = Path(cfg.run.out_dir)
        self.git = git_commit()
        self.last_good: Path | None = None
        #: time.monotonic() at the start of the job (``train`` sets it before loading data).
        self.started = time.monotonic()

    # ------------------------------------------------------------------ one iteration
    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's slice of global step ``step``: network input ``[b, C, S, S]``, dataset
        indices ``[b]`` and sample indices ``[b, K+1]``, on the device."""
        return self.batch_for_step(step)[:3]

    def batch_for_step(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, GeneratorBatch | None]:
        """``batch(step)`` plus what the view generators read (None without generators)."""
        cfg, ctx = self.cfg, self.ctx
        epoch, s = divmod(step, self.spe)
        if epoch != self._perm_epoch:
            self._perm = epoch_permutation(len(self.data), cfg.run.seed, epoch)
            self._perm_epoch = epoch
        g = cfg.optim.batch_size
        g_idx = global_batch_indices(len(self.data), g, cfg.run.seed, epoch, s, perm=self._perm)
        h, w = self.images.shape[1], self.images.shape[2]
        # Random numbers for the whole global batch, so every world size draws the same ones.
        params = self.augment.sample(g, h, w, step_generator(cfg.run.seed, "augment", step))
        sample_idx = self.state.bank.sample(g_idx, step_generator(cfg.run.seed, "negatives", step))
        lo, hi = ctx.rank * self.local_batch, (ctx.rank + 1) * self.local_batch
        idx = g_idx[lo:hi]
        dev = ctx.device
        rgb = self.crops(idx, params[lo:hi])
        gen_batch = None
        if self.state.generators:
            gen_batch = GeneratorBatch(rgb, idx.to(dev), torch.arange(lo, hi), g, step, params[lo:hi])
        x = to_network_input(self.cfg, self.state.encoder, rgb)
        return x, idx.to(dev), sample_idx[lo:hi].to(dev, non_blocking=True), gen_batch

    def crops(self, idx: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """RGB crops ``[b, 3, S, S]`` in [0, 1] of dataset rows ``idx`` ``[b]`` cropped and
        flipped by ``params`` (rows of ``BatchAugment.sample``), on the device."""
        pixels = self.images.index_select(0, idx.to(self.images.device)).to(self.ctx.device, non_blocking=True)
        return apply_crops(pixels.permute(0, 3, 1, 2), params, self.augment.out_size)

    def network_input(self, idx: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Network input ``[b, C, S, S]`` of dataset rows ``idx`` ``[b]`` cropped and flipped by
        ``params`` (rows of ``BatchAugment.sample``), on the device."""
        return to_network_input(self.cfg, self.state.encoder, self.crops(idx, params))

    def next_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, GeneratorBatch | None]:
        """``batch(step)``, taken from the worker thread when ``run.prefetch`` is on (the
        worker then starts on ``step + 1``); the "data" phase is the time spent waiting."""
        if not self.cfg.run.prefetch:
            return self.batch_for_step(step)
        if self._prefetch_pool is None:
            self._prefetch_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metaug-prefetch")
        pending = self._prefetched
        if pending is not None and pending[0] != step:
            pending[1].result()  # a stale guess (a jump in steps): drop it
            pending = None
        future = pending[1] if pending is not None else self._prefetch_pool.submit(self.batch_for_step, step)
        self._prefetched = (step + 1, self._prefetch_pool.submit(self.batch_for_step, step + 1)) if step + 1 < self.end_step else None
        return future.result()

    def close(self) -> None:
        """Stop the prefetch worker (idempotent)."""
        if self._prefetch_pool is not None:
            self._prefetch_pool.shutdown(wait=True, cancel_futures=True)
            self._prefetch_pool = None
            self._prefetched = None

    def step(self, step: int) -> dict[str, torch.Tensor]:
        """Set the learning rates for ``step`` and run one iteration."""
        f = lr_factor(self.cfg, step, self.spe)
        for group in self.state.opt.param_groups:
            group["lr"] = self.cfg.optim.lr * f
        if self.state.mag_opt is not None:
            for group in self.state.mag_opt.param_groups:
                group["lr"] = self.cfg.metaug.lr * f
        with self.state.timer("data"):
            x, idx, sample_idx, gen_batch = self.next_batch(step)
        return train_step(self.cfg, self.state, x, idx, sample_idx, step, self.ctx, gen_batch)

    # ------------------------------------------------------------------ state
    def checkpoint_dict(self, step: int, metrics: dict[str, float]) -> dict[str, Any]:
        s = self.state
        return {
            "config": self.cfg.to_dict(),
            "git_commit": self.git,
            "step": int(step),
            "epoch": step / self.spe,
            "steps_per_epoch": self.spe,
            "world_size": self.ctx.world_size,
            "encoder": s.encoder.state_dict(),
            "mags": s.mags.state_dict() if s.mags is not None else None,
            "bank": s.bank.state_dict(),
            "nce": s.nce.state_dict() if s.nce is not None else None,
            "optimizer": s.opt.state_dict(),
            "mag_optimizer": s.mag_opt.state_dict() if s.mag_opt is not None else None,
            "generators": [g.state_dict() for g in s.generators],
            "rng": rng_state(),
            "dataset": self.dataset_record(),
            "metrics": {k: float(v) for k, v in metrics.items()},
        }

    def dataset_record(self) -> dict[str, Any]:
        return {"name": Path(self.cfg.data.path).name, "num_samples": len(self.data),
                "fingerprint": self.data.fingerprint, "classes": list(self.data.classes)}

    def check_resumable(self, saved: dict[str, Any]) -> None:
        """Refuse a saved state (full checkpoint or compact state) of another run: only run.*
        and RESUMABLE_KEYS may differ, and the dataset must be the same images in the same order."""
        old = TrainConfig.from_dict(saved["config"])
        changed = [k for k in diff_keys(old, self.cfg)
                   if k.split(".")[0] not in RESUMABLE_SECTIONS and k not in RESUMABLE_KEYS]
        if changed:
            raise ConfigError(f"cannot resume: config key {changed[0]!r} differs from the checkpoint's "
                              f"({', '.join(changed)}); only run.* and {', '.join(RESUMABLE_KEYS)} may change on resume")
        fp = saved.get("dataset", {}).get("fingerprint")
        if fp != self.data.fingerprint:
            raise CheckpointError("cannot resume: the dataset differs from the checkpoint's (other files or order); "
                                  "point data.path at the same images")

    def load(self, ckpt: dict[str, Any]) -> None:
        """Restore a checkpoint of this run exactly (config and dataset checked first)."""
        self.check_resumable(ckpt)
        s = self.state
        s.encoder.load_state_dict(ckpt["encoder"])
        if s.mags is not None:
            s.mags.load_state_dict(ckpt["mags"])
        s.bank.load_state_dict(ckpt["bank"])
        if s.nce is not None:
            s.nce.load_state_dict(ckpt["nce"])
        s.opt.load_state_dict(ckpt["optimizer"])
        if s.mag_opt is not None:
            s.mag_opt.load_state_dict(ckpt["mag_optimizer"])
        for gen, sd in zip(s.generators, ckpt.get("generators") or [{} for _ in s.generators]):
            gen.load_state_dict(sd)
        set_rng_state(ckpt["rng"])
        self.start_step = int(ckpt["step"])

    def warm_start(self, compact: dict[str, Any]) -> None:
        """Continue from a compact state (``metaug_training/compact_state.py``): weights and step
        restored, optimiser momentum from zero, global RNGs reseeded from (seed, step), memory
        bank rebuilt from the weights. Not bit-exact; the data stream continues unchanged."""
        self.check_resumable(compact)
        if int(compact["steps_per_epoch"]) != self.spe:
            raise CheckpointError(f"cannot resume: the compact state has {compact['steps_per_epoch']} steps per "
                                  f"epoch, this run {self.spe} (optim.batch_size or the dataset changed)")
        s = self.state
        s.encoder.load_state_dict(compact["encoder"])
        if s.mags is not None:
            if compact.get("mags") is None:
                raise CheckpointError("cannot resume: the compact state holds no MAG weights")
            s.mags.load_state_dict(compact["mags"])
        step = int(compact["step"])
        torch.manual_seed(step_generator(self.cfg.run.seed, "warm-restart", step).initial_seed())
        self.start_step = step
        self.rebuild_bank(step)

    @torch.no_grad()
    def rebuild_bank(self, step: int) -> None:
        """Fill every slot of the memory bank with the current encoder's features (L2-normalised),
        as a warm restart at ``step`` needs: one forward pass over the batches of the last epoch
        before ``step`` (the first epoch's when ``step`` < one epoch), with their own crops and
        flips and batch-statistics BN as in training, so the slots look like the ones training
        writes; the few samples those batches leave out (the dropped partial batch) are embedded
        in one extra batch padded with other samples. BN running statistics are left unchanged.
        """
        cfg, ctx = self.cfg, self.ctx
        n, g = len(self.data), cfg.optim.batch_size
        first = step - self.spe if step >= self.spe else 0
        # Train-mode forwards update the BN running statistics: restore them (with the rest of
        # the encoder state, unchanged) afterwards.
        before = {k: v.clone() for k, v in self.state.encoder.state_dict().items()}
        model = self.state.model
        model.train()
        written = torch.zeros(n, dtype=torch.bool)
        views = self.state.bank.views

        def write(x: torch.Tensor, idx: torch.Tensor, keep: torch.Tensor) -> None:
            z = model(x)
            z_all = all_gather_cat(torch.stack([z[v].float() for v in views], 1).contiguous(), ctx)  # [B, V, d]
            idx_all = all_gather_cat(idx.to(ctx.device), ctx).cpu()
            keep_all = all_gather_cat(keep.to(ctx.device), ctx).cpu()
            for i, v in enumerate(views):
                rows = torch.nn.functional.normalize(z_all[:, i][keep_all.to(z_all.device)], dim=1)
                self.state.bank.view_bank(v).index_copy_(0, idx_all[keep_all].to(rows.device), rows.to(self.state.bank.bank.dtype))
            written[idx_all[keep_all]] = True

        for t in range(first, first + self.spe):
            x, idx, _ = self.batch(t)  # the step's own input: same rows, crops and flips as training
            write(x, idx, torch.ones(len(idx), dtype=torch.bool))
        lo, hi = ctx.rank * self.local_batch, (ctx.rank + 1) * self.local_batch
        rest = (~written).nonzero().flatten()
        gen = step_generator(cfg.run.seed, "rebuild", step)
        while len(rest):
            # One padded global batch at a time, so batch-statistics BN sees a full batch.
            take = rest[:g]
            pad = torch.randperm(n, generator=gen)[: g - len(take)]
            g_idx = torch.cat([take, pad])
            keep = torch.arange(g) < len(take)
            params = self.augment.sample(g, *self.images.shape[1:3], gen)
            write(self.network_input(g_idx[lo:hi], params[lo:hi]), g_idx[lo:hi], keep[lo:hi])
            rest = rest[g:]
        self.state.encoder.load_state_dict(before)

    def save(self, step: int, metrics: dict[str, float]) -> Path | None:
        """Checkpoint (rank 0 writes; other ranks return None)."""
        path = checkpoint_path(self.out_dir)
        if self.ctx.is_main:
            save_checkpoint(path, self.checkpoint_dict(step, metrics))
        self.last_good = path
        return path if self.ctx.is_main else None

    def export(self, step: int) -> Path | None:
        if not (self.ctx.is_main and self.cfg.run.export):
            return None
        prov = provenance(self.cfg, step, self.spe, self.git, self.dataset_record())
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
                    if self.state.mags is not None:
                        rec["mag_lr"] = cfg.metaug.lr * lr_factor(cfg, step - 1, self.spe)
                        rec.update(mag_norms(self.state.mags))
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
                digests = self.check_ranks_in_sync()
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

    def state_digest(self) -> str:
        """SHA-256 of every trained tensor that must be identical on all ranks: encoder, MAG
        and generator parameters, memory bank (BN running statistics are not: DDP broadcasts rank 0's
        at each forward, and each rank then updates them with its own batch)."""
        h = hashlib.sha256()
        tensors = list(self.state.encoder.parameters()) + [self.state.bank.bank]
        if self.state.mags is not None:
            tensors += list(self.state.mags.parameters())
        tensors += [p for g in self.state.generators for p in g.parameters()]
        for t in tensors:
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def check_ranks_in_sync(self) -> list[str]:
        """Digests of all ranks (rank order); raises if the ranks have drifted apart."""
        digests: list[str] = [""] * self.ctx.world_size
        torch.distributed.all_gather_object(digests, self.state_digest())
        if len(set(digests)) != 1:
            raise RuntimeError(f"DDP ranks are out of sync (state digests {digests}); this is a bug, please report it")
        return digests

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
        path = checkpoint_path(cfg.run.out_dir)
        if resume:
            warm = cfg.run.warm_start
            if path.is_file():
                ckpt = load_checkpoint(path)
                trainer.load(ckpt)
                trainer.last_good = path
                if ctx.is_main and not cfg.run.quiet:
                    print(f"resuming from {path} at step {trainer.start_step}")
            elif warm and has_compact_state(warm):
                trainer.warm_start(load_compact_state(warm))
                if ctx.is_main and not cfg.run.quiet:
                    print(f"no checkpoint at {path}; warm restart from the compact state {warm} at step "
                          f"{trainer.start_step} (weights restored, optimiser momentum reset, memory bank rebuilt: "
                          "not a bit-exact resume)")
            elif ctx.is_main and not cfg.run.quiet:
                where = f" and no compact state at {warm}" if warm else ""
                print(f"no checkpoint at {path}{where}; starting from scratch")
        if trainer.start_step >= trainer.end_step:
            if ctx.is_main and not cfg.run.quiet:
                print(f"nothing to do: step {trainer.start_step} >= {trainer.end_step}")
            export_dir = trainer.export(trainer.start_step)
            return TrainResult("finished", trainer.start_step, path if path.is_file() else None, export_dir)
        return trainer.run()
    finally:
        cleanup(ctx)
