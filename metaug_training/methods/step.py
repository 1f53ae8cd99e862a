"""One training iteration, the same for every method (docs/METHODS.md sections 3-6); the method
(``table.METHODS[cfg.method]``) supplies the encoder-step loss and what runs after the bank write.

    1. encoder step, the method's extra modules (MAGs) frozen: z = f(x), the method's loss
       (+ each view generator's weighted term), backward, optimiser step of the encoder;
    2. memory bank <- encoder features z (gathered from all ranks);
    3. the method's ``after_bank_update`` (MetAug's meta step of the MAGs).

A step sees the *local* batch of this rank, already split into ``accum_steps`` micro-batches.
Each micro-batch is one forward (its own BN statistics), gradients are averaged over micro-
batches and ranks, and the bank is updated once per step with the features of the whole global
batch in (rank, micro-batch) order. So W ranks x A micro-batches of size b compute the same
numbers as one process with A*W micro-batches of size b: a DDP run can be checked against a
single-process run (tests/training/test_train_ddp.py).

Nothing here reads the clock or writes files; values returned for logging stay on the device
(no host sync per step).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from metaug_features.model import MetAugEncoder

from ..config import TrainConfig
from ..distributed import DistContext, all_gather_cat, all_reduce_mean_
from ..objective import NegativeDraw, ObjectiveConfig
from ..view_generators import GeneratorBatch, ViewGenerator
from .interface import Features, StepInputs
from .precision import accumulate, at_least_float32, autocast
from .state import TrainState, frozen
from .table import method_for


def objective_config(cfg: TrainConfig) -> ObjectiveConfig:
    """The objective of the run: OUCL with the ``loss`` section's options and the ``metaug``
    section (its terms, weights and regulariser)."""
    return ObjectiveConfig.from_sections(cfg.loss, cfg.metaug)


def encoder_loss(cfg: TrainConfig, state: TrainState, z: Features, sample_idx: Tensor,
                 objective: ObjectiveConfig, draw: NegativeDraw | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss of the encoder update of ``cfg.method`` on embeddings ``z`` ``{view: [b, d]}``
    against the bank rows ``sample_idx`` ``[b, K+1]``: the scalar loss and detached named terms."""
    return method_for(cfg.method).encoder_loss(cfg, state, z, sample_idx, objective, draw)


def contrastive_loss(cfg: TrainConfig, state: TrainState, z: Features, sample_idx: Tensor,
                     objective: ObjectiveConfig) -> Tensor:
    """``cfg.method``'s contrastive loss of ``z`` against the bank, without generators of any kind."""
    return method_for(cfg.method).contrastive_loss(cfg, state, z, sample_idx, objective)


def to_network_input(cfg: TrainConfig, encoder: MetAugEncoder, rgb: Tensor) -> Tensor:
    """RGB crops ``[b, 3, S, S]`` in [0, 1] -> network input (Lab, channels-last if configured)."""
    x = encoder.preprocess.to_input(rgb)
    if cfg.run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def generated_view_loss(cfg: TrainConfig, state: TrainState, gen: ViewGenerator, batch: GeneratorBatch,
                        z: Features, sample_idx: Tensor, objective: ObjectiveConfig) -> Tensor:
    """The added term of one view generator (unweighted): generate the view (with the attack
    objective when the generator needs the current encoder), embed it, score it.

    The generated view's forward goes through the plain encoder, not the DDP wrapper: its
    gradients join the same backward, and DDP reduces each parameter's summed gradient once.
    """
    encoder = state.encoder

    def contrastive(zz: Features) -> Tensor:
        return contrastive_loss(cfg, state, {v: at_least_float32(t) for v, t in zz.items()}, sample_idx, objective)

    attack = None
    if gen.needs_encoder:
        def attack(rgb: Tensor) -> Tensor:
            return contrastive(gen.embed(encoder, to_network_input(cfg, encoder, rgb), update_bn=False))
    x_gen = gen.generate(batch, attack)
    z_gen = gen.embed(encoder, to_network_input(cfg, encoder, x_gen.detach()))
    return gen.loss(z, {v: at_least_float32(t) for v, t in z_gen.items()}, contrastive)


def train_step(cfg: TrainConfig, state: TrainState, x: Tensor, idx: Tensor, sample_idx: Tensor,
               step: int, ctx: DistContext, gen_batch: GeneratorBatch | None = None) -> dict[str, Tensor]:
    """One iteration on this rank's batch.

    Args:
        x: float32 ``[b, C, S, S]`` network input (augmented, Lab-normalised) on the device.
        idx: LongTensor ``[b]`` dataset indices of the rows of ``x`` (memory-bank slots).
        sample_idx: LongTensor ``[b, K+1]`` positives + negatives (``MemoryBank.sample``).
        step: global step (0-based); MetAug's meta step runs when ``step % meta_every == 0``.
        gen_batch: the RGB crops and row positions the view generators read (required when
            ``state.generators`` is not empty); each adds ``weight x`` its term to the
            encoder-step loss (never to the meta step's MAG loss).
    Returns:
        Detached scalar tensors for logging (averaged over micro-batches; this rank's values).
    """
    method = method_for(cfg.method)
    accum = cfg.optim.accum_steps
    objective = objective_config(cfg)
    timer = state.timer
    forward = state.forward if state.forward is not None else state.model
    xs, sis = x.chunk(accum), sample_idx.chunk(accum)
    if state.generators and gen_batch is None:
        raise ValueError("view generators are configured but the step got no gen_batch")
    gbs = gen_batch.chunk(accum) if state.generators else [None] * accum
    logs: dict[str, Tensor] = {}
    feats: list[Features] = []
    state.opt.zero_grad(set_to_none=True)
    is_ddp = isinstance(state.model, DistributedDataParallel)
    # 1. encoder step (the method's extra modules frozen)
    with frozen(state.extra_modules()):
        for a in range(accum):
            sync = contextlib.nullcontext() if (not is_ddp or a == accum - 1) else state.model.no_sync()
            with sync:
                # bf16 autocast covers the encoder only; scores and losses stay fp32 (a bf16 dot
                # product of unit vectors is only good to ~3 digits, too coarse at T = 0.07).
                with timer("forward"), autocast(cfg, ctx.device):
                    z = forward(xs[a])
                with timer("loss"):
                    z = {v: at_least_float32(t) for v, t in z.items()}
                    draw = (method.negative_draw(cfg, state, sis[a], step, ctx, "encoder", a)
                            if method.negative_draw is not None else None)
                    loss, terms = encoder_loss(cfg, state, z, sis[a], objective, draw)
                for gen in state.generators:
                    with timer(gen.name):
                        extra = generated_view_loss(cfg, state, gen, gbs[a], z, sis[a], objective)
                    terms[f"loss_{gen.name}"] = extra.detach()
                    loss = loss + gen.weight * extra
                with timer("backward"):
                    (loss / accum).backward()
            feats.append({v: at_least_float32(t.detach()) for v, t in z.items()})
            accumulate(logs, terms, 1.0 / accum)
            bad = ~torch.isfinite(loss.detach())
            state.nonfinite = bad if state.nonfinite is None else (state.nonfinite | bad)
    if ctx.distributed and state.generators:
        # Trainable generator parts (IDAA's separate BN) live outside the DDP module: average
        # their gradients over ranks here, as DDP does for the encoder's.
        extra = [p.grad for g in state.generators for p in g.parameters() if p.grad is not None]
        if extra:
            all_reduce_mean_(extra, ctx)
    with timer("optimizer"):
        state.opt.step()
    # 2. memory bank <- encoder features of the whole global batch
    with timer("bank_update"):
        views = state.bank.views
        z_local = torch.stack([torch.cat([f[v] for f in feats]) for v in views])  # [V, b, d]
        z_all = all_gather_cat(z_local.transpose(0, 1).contiguous(), ctx).transpose(0, 1)  # [V, B, d]
        idx_all = all_gather_cat(idx, ctx)
        state.bank.update({v: z_all[i] for i, v in enumerate(views)}, idx_all)
    # 3. the method's own update (MetAug's meta step of the MAGs)
    if method.after_bank_update is not None:
        logs.update(method.after_bank_update(cfg, state, StepInputs(tuple(xs), tuple(sis), step, ctx, objective)))
    return logs
