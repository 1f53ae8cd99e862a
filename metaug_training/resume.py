"""Saving and continuing a run: what a checkpoint holds, the bit-exact resume from it, and the
warm start from a compact state (``metaug_training/compact_state.py``) with its memory-bank
rebuild.

A full checkpoint holds every tensor state (encoder, MAGs, optimisers, bank, NCE constants,
generators, RNGs), so steps [0, t) + resume + [t, T) equal steps [0, T) exactly
(tests/training/test_train_resume.py). A compact state holds weights and the step only: the
warm start restores them, restarts the optimiser momentum and rebuilds the bank, which is not
bit-exact but lets a run continue on another machine from a few MB committed under runs/
(tests/training/test_train_compact_state.py, tests/release/test_campaign_record.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from metaug_features.errors import ConfigError

from .batches import StepBatches
from .checkpoint import CheckpointError, checkpoint_path, load_checkpoint, rng_state, set_rng_state
from .compact_state import has_compact_state, load_compact_state
from .config import RESUMABLE_KEYS, TrainConfig, resume_changes
from .data import ImageArray, step_generator
from .distributed import DistContext, all_gather_cat
from .methods import TrainState, method_for

#: Checkpoint keys of the shipped methods' pieces, written (as None when the run has no such
#: piece) by every checkpoint since format version 1, so that old and new checkpoints compare
#: key for key; a new method's pieces are added after them under their own keys.
LEGACY_PIECES = ("mags", "nce", "mag_optimizer")


class Run(Protocol):
    """What saving and continuing read of a run (``trainer.Trainer`` is one). A protocol, so
    that this module does not import the trainer, which imports it."""

    cfg: TrainConfig
    ctx: DistContext
    data: ImageArray
    state: TrainState
    spe: int
    batches: StepBatches
    start_step: int

    def load(self, ckpt: dict[str, Any]) -> None: ...

    def warm_start(self, compact: dict[str, Any]) -> None: ...


def dataset_record(cfg: TrainConfig, data: ImageArray) -> dict[str, Any]:
    """What a checkpoint records of the dataset; the fingerprint ties it to the same images in
    the same order."""
    return {"name": Path(cfg.data.path).name, "num_samples": len(data),
            "fingerprint": data.fingerprint, "classes": list(data.classes)}


def checkpoint_contents(trainer: Run, step: int, metrics: dict[str, float], git: str) -> dict[str, Any]:
    """The full checkpoint of ``trainer`` after ``step`` steps: a plain dict of the config and
    every tensor state (torch ``weights_only``-loadable)."""
    s = trainer.state
    pieces = {k: v.state_dict() for k, v in s.extra.items()}
    legacy = {k: pieces.pop(k, None) for k in LEGACY_PIECES}
    return {
        "config": trainer.cfg.to_dict(),
        "git_commit": git,
        "step": int(step),
        "epoch": step / trainer.spe,
        "steps_per_epoch": trainer.spe,
        "world_size": trainer.ctx.world_size,
        "encoder": s.encoder.state_dict(),
        "mags": legacy["mags"],
        "bank": s.bank.state_dict(),
        "nce": legacy["nce"],
        "optimizer": s.opt.state_dict(),
        "mag_optimizer": legacy["mag_optimizer"],
        **pieces,  # a method's own pieces beyond the shipped methods'
        "generators": [g.state_dict() for g in s.generators],
        "rng": rng_state(),
        "dataset": dataset_record(trainer.cfg, trainer.data),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }


def check_resumable(cfg: TrainConfig, data: ImageArray, saved: dict[str, Any]) -> None:
    """Refuse a saved state (full checkpoint or compact state) of another run: only run.* and
    RESUMABLE_KEYS may differ, and the dataset must be the same images in the same order."""
    changed = resume_changes(TrainConfig.from_dict(saved["config"]), cfg)
    if changed:
        raise ConfigError(f"cannot resume: config key {changed[0]!r} differs from the checkpoint's "
                          f"({', '.join(changed)}); only run.* and {', '.join(RESUMABLE_KEYS)} may change on resume")
    fp = saved.get("dataset", {}).get("fingerprint")
    if fp != data.fingerprint:
        raise CheckpointError("cannot resume: the dataset differs from the checkpoint's (other files or order); "
                              "point data.path at the same images")


def restore_checkpoint(trainer: Run, ckpt: dict[str, Any]) -> int:
    """Restore a full checkpoint of this run exactly (config and dataset checked first); returns
    the step to continue from."""
    check_resumable(trainer.cfg, trainer.data, ckpt)
    s = trainer.state
    s.encoder.load_state_dict(ckpt["encoder"])
    s.bank.load_state_dict(ckpt["bank"])
    s.opt.load_state_dict(ckpt["optimizer"])
    for key, piece in s.extra.items():  # the method's pieces (MAGs and their optimiser, NCE)
        if ckpt.get(key) is None:
            raise CheckpointError(f"cannot resume: the checkpoint holds no {key!r} state, which method "
                                  f"{trainer.cfg.method!r} needs")
        piece.load_state_dict(ckpt[key])
    # Checkpoints written before view generators existed have no "generators" entry.
    for gen, sd in zip(s.generators, ckpt.get("generators") or [{} for _ in s.generators]):
        gen.load_state_dict(sd)
    set_rng_state(ckpt["rng"])
    return int(ckpt["step"])


def warm_start(trainer: Run, compact: dict[str, Any]) -> int:
    """Continue from a compact state: weights and step restored, optimiser momentum from zero,
    global RNGs reseeded from (seed, step), memory bank rebuilt from the weights. Not bit-exact;
    the data stream continues unchanged. Returns the step to continue from."""
    check_resumable(trainer.cfg, trainer.data, compact)
    if int(compact["steps_per_epoch"]) != trainer.spe:
        raise CheckpointError(f"cannot resume: the compact state has {compact['steps_per_epoch']} steps per "
                              f"epoch, this run {trainer.spe} (optim.batch_size or the dataset changed)")
    s = trainer.state
    s.encoder.load_state_dict(compact["encoder"])
    for key in method_for(trainer.cfg.method).warm_start_keys:  # weights only (MetAug's MAGs)
        if compact.get(key) is None:
            raise CheckpointError(f"cannot resume: the compact state holds no {key!r} weights, which method "
                                  f"{trainer.cfg.method!r} needs")
        s.extra[key].load_state_dict(compact[key])
    step = int(compact["step"])
    torch.manual_seed(step_generator(trainer.cfg.run.seed, "warm-restart", step).initial_seed())
    rebuild_bank(trainer, step)
    return step


@torch.no_grad()
def rebuild_bank(trainer: Run, step: int) -> None:
    """Fill every slot of the memory bank with the current encoder's features (L2-normalised),
    as a warm restart at ``step`` needs: one forward pass over the batches of the last epoch
    before ``step`` (the first epoch's when ``step`` < one epoch), with their own crops and
    flips and batch-statistics BN as in training, so the slots look like the ones training
    writes; the few samples those batches leave out (the dropped partial batch) are embedded
    in one extra batch padded with other samples. BN running statistics are left unchanged.
    """
    cfg, ctx, state, batches = trainer.cfg, trainer.ctx, trainer.state, trainer.batches
    n, g, spe = len(trainer.data), cfg.optim.batch_size, trainer.spe
    first = step - spe if step >= spe else 0
    # Train-mode forwards update the BN running statistics: restore them (with the rest of
    # the encoder state, unchanged) afterwards.
    before = {k: v.clone() for k, v in state.encoder.state_dict().items()}
    model = state.model
    model.train()
    written = torch.zeros(n, dtype=torch.bool)
    views = state.bank.views

    def write(x: torch.Tensor, idx: torch.Tensor, keep: torch.Tensor) -> None:
        z = model(x)
        z_all = all_gather_cat(torch.stack([z[v].float() for v in views], 1).contiguous(), ctx)  # [B, V, d]
        idx_all = all_gather_cat(idx.to(ctx.device), ctx).cpu()
        keep_all = all_gather_cat(keep.to(ctx.device), ctx).cpu()
        for i, v in enumerate(views):
            rows = torch.nn.functional.normalize(z_all[:, i][keep_all.to(z_all.device)], dim=1)
            state.bank.view_bank(v).index_copy_(0, idx_all[keep_all].to(rows.device), rows.to(state.bank.bank.dtype))
        written[idx_all[keep_all]] = True

    for t in range(first, first + spe):
        x, idx, _ = batches.batch(t)  # the step's own input: same rows, crops and flips as training
        write(x, idx, torch.ones(len(idx), dtype=torch.bool))
    lo, hi = batches.rows
    rest = (~written).nonzero().flatten()
    gen = step_generator(cfg.run.seed, "rebuild", step)
    while len(rest):
        # One padded global batch at a time, so batch-statistics BN sees a full batch.
        take = rest[:g]
        pad = torch.randperm(n, generator=gen)[: g - len(take)]
        g_idx = torch.cat([take, pad])
        keep = torch.arange(g) < len(take)
        params = batches.augment.sample(g, *batches.images.shape[1:3], gen)
        write(batches.network_input(g_idx[lo:hi], params[lo:hi]), g_idx[lo:hi], keep[lo:hi])
        rest = rest[g:]
    state.encoder.load_state_dict(before)


def resume_saved_state(trainer: Run, verbose: bool) -> Path | None:
    """``--resume``: continue from ``<run.out_dir>/checkpoints/last.pt`` when it exists, else
    warm-start from the compact state ``run.warm_start`` when set and present, else start from
    scratch (``verbose``: say which). Returns the checkpoint resumed from (the last good one),
    or None."""
    cfg = trainer.cfg
    path = checkpoint_path(cfg.run.out_dir)
    warm = cfg.run.warm_start
    if path.is_file():
        trainer.load(load_checkpoint(path))
        if verbose:
            print(f"resuming from {path} at step {trainer.start_step}")
        return path
    if warm and has_compact_state(warm):
        trainer.warm_start(load_compact_state(warm))
        if verbose:
            print(f"no checkpoint at {path}; warm restart from the compact state {warm} at step "
                  f"{trainer.start_step} (weights restored, optimiser momentum reset, memory bank rebuilt: "
                  "not a bit-exact resume)")
        return None
    if verbose:
        where = f" and no compact state at {warm}" if warm else ""
        print(f"no checkpoint at {path}{where}; starting from scratch")
    return None
