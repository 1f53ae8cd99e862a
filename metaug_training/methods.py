"""One training iteration of each method, composed from the math core (docs/METHODS.md sections 3-6).

``cmc``    memory-bank CMC: scores of every ordered view pair, InfoNCE or NCE.
``oucl``   the same scores under MetAug's OUCL loss; no generators.
``metaug`` OUCL + one MAG per view + the margin-injected regulariser + the meta step, in the
           official HEAD order (docs/METHODS.md section 6):

    1. encoder step, MAGs frozen: z = f(x), z^ = MAG(z), L_tot(z, z^) (+ alpha R if reg_where
       = "both"), backward, SGD step of the encoder;
    2. memory bank <- encoder features z (gathered from all ranks);
    3. every ``meta_every``-th iteration: MAG gradients through the updated encoder's fast
       weights (``metaug_meta_step``), averaged over ranks, SGD step of the MAGs.

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
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from metaug_features.model import MetAugEncoder

from .config import TrainConfig
from .data import step_generator
from .distributed import DistContext, all_gather_cat, all_reduce_mean_
from .losses import NCELoss, infonce_loss
from .memory_bank import MemoryBank
from .meta import metaug_meta_step, set_gradients
from .objective import NegativeDraw, ObjectiveConfig, metaug_objective
from .phase_timer import NO_TIMER
from .view_generators import GeneratorBatch, ViewGenerator


class Embedder(nn.Module):
    """``forward(x) = encoder.embed(x)``: the module DDP wraps, so that the training forward
    (the projection-head embeddings, not the frozen features) goes through DDP's hooks."""

    def __init__(self, encoder: MetAugEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.encoder.embed(x)


@dataclass
class TrainState:
    """Everything a step mutates. ``model`` is the ``Embedder`` (DDP-wrapped under torchrun)
    around ``encoder``; ``mags``/``mag_opt`` exist for metaug only, ``nce`` for cmc + NCE."""

    encoder: MetAugEncoder
    model: nn.Module
    bank: MemoryBank
    opt: torch.optim.Optimizer
    mags: nn.ModuleDict | None = None
    mag_opt: torch.optim.Optimizer | None = None
    nce: NCELoss | None = None
    #: device bool scalar: became True if any loss so far was NaN/inf (checked at log steps).
    nonfinite: Tensor | None = None
    #: phase timer (``with timer("forward"):``); a no-op unless a benchmark sets a PhaseTimer.
    timer: Any = NO_TIMER
    #: the encoder-step forward ``x -> {view: [b, d]}``: ``model`` itself, or its
    #: ``torch.compile``d version (``run.compile``); same parameters either way.
    forward: Any = None
    #: IDAA / A2 view generators (``view_generators.py``), applied in this order each step.
    generators: list[ViewGenerator] = field(default_factory=list)

    def rank_synced_tensors(self) -> list[Tensor]:
        """Every trained tensor that must be identical on all DDP ranks: encoder, MAG and
        generator parameters and the memory bank. BN running statistics are not: DDP broadcasts
        rank 0's at each forward, and each rank then updates them with its own batch."""
        tensors = list(self.encoder.parameters()) + [self.bank.bank]
        if self.mags is not None:
            tensors += list(self.mags.parameters())
        return tensors + [p for g in self.generators for p in g.parameters()]


def objective_config(cfg: TrainConfig) -> ObjectiveConfig:
    """The objective of the run: OUCL with the ``loss`` section's options and the ``metaug``
    section (its terms, weights and regulariser)."""
    return ObjectiveConfig.from_sections(cfg.loss, cfg.metaug)


@contextlib.contextmanager
def frozen(module: nn.Module | None) -> Iterator[None]:
    """MAGs frozen for the encoder step (docs/METHODS.md section 6, step 1): no weight gradients are computed for them
    (gradients still flow *through* them into the encoder)."""
    if module is None:
        yield
        return
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def encoder_loss(cfg: TrainConfig, state: TrainState, z: dict[str, Tensor], sample_idx: Tensor,
                 objective: ObjectiveConfig, draw: NegativeDraw | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss of the encoder update for ``cfg.method`` on embeddings ``z`` ``{view: [b, d]}``.

    cmc: sum over ordered view pairs of InfoNCE (or NCE) at temperature T;
    oucl: OUCL over all pair scores (``metaug_objective`` without MAG outputs);
    metaug: L_tot with z^ = MAG(z) (MAGs in train mode, frozen), R only if reg_where = "both";
    ``draw`` gives the fresh negatives of ``metaug.negatives="per_call"`` (:func:`negative_draw`).
    Returns the scalar loss and detached named terms.
    """
    if cfg.method in ("cmc", "oucl"):
        loss = contrastive_loss(cfg, state, z, sample_idx, objective)
        return loss, {"loss": loss.detach()}
    assert state.mags is not None
    z_hat = {v: state.mags[v](t) for v, t in z.items()}
    loss, terms = metaug_objective(z, z_hat, state.bank, sample_idx, objective, phase="encoder", draw=draw)
    out = {"loss": loss.detach()}
    out.update({k: v for k, v in terms.items() if k != "total"})
    return loss, out


def contrastive_loss(cfg: TrainConfig, state: TrainState, z: dict[str, Tensor], sample_idx: Tensor,
                     objective: ObjectiveConfig) -> Tensor:
    """The method's contrastive loss of embeddings ``z`` ``{view: [b, d]}`` as anchors against
    the memory bank at ``sample_idx``, without generators of any kind: cmc = InfoNCE (or NCE)
    over the ordered view pairs; oucl and metaug = OUCL (``L(z)`` of L_tot, no MAG terms)."""
    bank = state.bank
    if cfg.method == "cmc":
        scores = bank.scores(z, sample_idx)
        tensors = [scores[p] for p in bank.pairs]
        if cfg.loss.cmc == "nce":
            assert state.nce is not None
            return state.nce(tensors)
        return infonce_loss(tensors, cfg.loss.temperature)
    loss, _ = metaug_objective(z, None, bank, sample_idx, objective, phase="encoder")
    return loss


def to_network_input(cfg: TrainConfig, encoder: MetAugEncoder, rgb: Tensor) -> Tensor:
    """RGB crops ``[b, 3, S, S]`` in [0, 1] -> network input (Lab, channels-last if configured)."""
    x = encoder.preprocess.to_input(rgb)
    if cfg.run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def generated_view_loss(cfg: TrainConfig, state: TrainState, gen: ViewGenerator, batch: GeneratorBatch,
                        z: dict[str, Tensor], sample_idx: Tensor, objective: ObjectiveConfig) -> Tensor:
    """The added term of one view generator (unweighted): generate the view (with the attack
    objective when the generator needs the current encoder), embed it, score it.

    The generated view's forward goes through the plain encoder, not the DDP wrapper: its
    gradients join the same backward, and DDP reduces each parameter's summed gradient once.
    """
    encoder = state.encoder

    def contrastive(zz: dict[str, Tensor]) -> Tensor:
        return contrastive_loss(cfg, state, {v: _at_least_float32(t) for v, t in zz.items()}, sample_idx, objective)

    attack = None
    if gen.needs_encoder:
        def attack(rgb: Tensor) -> Tensor:
            return contrastive(gen.embed(encoder, to_network_input(cfg, encoder, rgb), update_bn=False))
    x_gen = gen.generate(batch, attack)
    z_gen = gen.embed(encoder, to_network_input(cfg, encoder, x_gen.detach()))
    return gen.loss(z, {v: _at_least_float32(t) for v, t in z_gen.items()}, contrastive)


def _at_least_float32(t: Tensor) -> Tensor:
    """``t`` in float32 when it is of a lower floating precision (bf16 autocast outputs, half
    inputs), otherwise ``t`` unchanged.

    The casts in this module exist so that scores, losses and meta gradients never run in a
    16-bit type. They must not narrow float64: the numerical tests run a whole step in float64
    (in float32 the second-order MAG gradient moves by a few percent on 1-ulp differences of the
    encoder weights, so two paths that round differently can only be compared in float64). For
    a float32 tensor this returns ``t`` itself, exactly as ``t.float()`` does.
    """
    if t.is_floating_point() and torch.finfo(t.dtype).bits < 32:
        return t.float()
    return t


def _autocast(cfg: TrainConfig, device: torch.device):
    """bf16 autocast on CUDA when ``run.precision == "bf16"``; a no-op otherwise."""
    if cfg.run.precision == "bf16" and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _accumulate(acc: dict[str, Tensor], new: dict[str, Tensor], weight: float) -> None:
    for k, v in new.items():
        acc[k] = acc[k] + v * weight if k in acc else v * weight


#: Prefix of the meta-step values in a step's logs; the trainer writes them as one
#: ``{"event": "meta", ...}`` record per meta step (docs/METHODS.md section 6, "Meta diagnostics").
META_PREFIX = "meta/"


def meta_inner_lr(cfg: TrainConfig, state: TrainState) -> float:
    """eta_in of this step's meta step: ``metaug.inner_lr`` (the official code's 1e-3), or the
    encoder's scheduled learning rate of this step with ``metaug.inner_lr_follows_encoder``
    (paper eq. 3)."""
    if cfg.metaug.inner_lr_follows_encoder:
        return float(state.opt.param_groups[0]["lr"])
    return cfg.metaug.inner_lr


def meta_log_terms(terms: dict[str, Tensor], mag_loss: Tensor) -> dict[str, Tensor]:
    """The meta step's values under :data:`META_PREFIX`: the MAG loss, its terms
    (``loss_orig``, ``reg``), the diagnostics without their ``diag/`` prefix and the gradient
    split (``second_order_share`` ...)."""
    keep = {"loss_orig", "reg"}
    out = {META_PREFIX + "mag_loss": mag_loss}
    for k, v in terms.items():
        if k.startswith("diag/"):
            out[META_PREFIX + k[len("diag/"):]] = v
        elif k in keep or k.startswith("grad_norm") or k == "second_order_share":
            out[META_PREFIX + k] = v
    return out


def negative_draw(cfg: TrainConfig, state: TrainState, sample_idx: Tensor, step: int, ctx: DistContext,
                  phase: str, micro: int) -> NegativeDraw | None:
    """``metaug.negatives="per_call"``: a callable giving a fresh ``[b, K+1]`` sample for each
    further scoring call of ``phase`` ("encoder" | "meta") on micro-batch ``micro``; None for
    ``"per_step"`` (every call reuses the step's draw).

    The draws come from a CPU generator derived from (seed, phase, rank, micro-batch, step), so a
    resumed run draws the same numbers; unlike the step's own draw they depend on the world
    size (each rank draws for its own rows).
    """
    if cfg.method != "metaug" or cfg.metaug.negatives == "per_step":
        return None
    gen = step_generator(cfg.run.seed, f"negatives-per-call/{phase}/rank{ctx.rank}/micro{micro}", step)
    idx = sample_idx[:, 0].cpu()

    def draw() -> Tensor:
        return state.bank.sample(idx, gen).to(sample_idx.device)

    return draw


def _bank_writer(state: TrainState, idx: Tensor, ctx: DistContext) -> Callable[[dict[str, Tensor]], None]:
    """``metaug.bank_writes="code"``: the meta step's extra bank writes for the rows ``idx``
    ``[b]`` (gathered from all ranks like step 2's write), out of place because the inner loss's
    graph still holds the old memory."""
    idx_all = all_gather_cat(idx, ctx)

    def write(z: dict[str, Tensor]) -> None:
        views = state.bank.views
        z_local = torch.stack([_at_least_float32(z[v]) for v in views]).transpose(0, 1).contiguous()
        z_all = all_gather_cat(z_local, ctx).transpose(0, 1)  # [V, B, d]
        state.bank.update({v: z_all[i] for i, v in enumerate(views)}, idx_all, in_place=False)

    return write


def train_step(cfg: TrainConfig, state: TrainState, x: Tensor, idx: Tensor, sample_idx: Tensor,
               step: int, ctx: DistContext, gen_batch: GeneratorBatch | None = None) -> dict[str, Tensor]:
    """One iteration on this rank's batch.

    Args:
        x: float32 ``[b, C, S, S]`` network input (augmented, Lab-normalised) on the device.
        idx: LongTensor ``[b]`` dataset indices of the rows of ``x`` (memory-bank slots).
        sample_idx: LongTensor ``[b, K+1]`` positives + negatives (``MemoryBank.sample``).
        step: global step (0-based); the meta step runs when ``step % meta_every == 0``.
        gen_batch: the RGB crops and row positions the view generators read (required when
            ``state.generators`` is not empty); each adds ``weight x`` its term to the
            encoder-step loss (never to the meta step's MAG loss).
    Returns:
        Detached scalar tensors for logging (averaged over micro-batches; this rank's values).
    """
    accum = cfg.optim.accum_steps
    objective = objective_config(cfg)
    timer = state.timer
    forward = state.forward if state.forward is not None else state.model
    xs, sis = x.chunk(accum), sample_idx.chunk(accum)
    if state.generators and gen_batch is None:
        raise ValueError("view generators are configured but the step got no gen_batch")
    gbs = gen_batch.chunk(accum) if state.generators else [None] * accum
    logs: dict[str, Tensor] = {}
    feats: list[dict[str, Tensor]] = []
    state.opt.zero_grad(set_to_none=True)
    is_ddp = isinstance(state.model, DistributedDataParallel)
    # 1. encoder step (MAGs frozen)
    with frozen(state.mags):
        for a in range(accum):
            sync = contextlib.nullcontext() if (not is_ddp or a == accum - 1) else state.model.no_sync()
            with sync:
                # bf16 autocast covers the encoder only; scores and losses stay fp32 (a bf16 dot
                # product of unit vectors is only good to ~3 digits, too coarse at T = 0.07).
                with timer("forward"), _autocast(cfg, ctx.device):
                    z = forward(xs[a])
                with timer("loss"):
                    z = {v: _at_least_float32(t) for v, t in z.items()}
                    loss, terms = encoder_loss(cfg, state, z, sis[a], objective,
                                               negative_draw(cfg, state, sis[a], step, ctx, "encoder", a))
                for gen in state.generators:
                    with timer(gen.name):
                        extra = generated_view_loss(cfg, state, gen, gbs[a], z, sis[a], objective)
                    terms[f"loss_{gen.name}"] = extra.detach()
                    loss = loss + gen.weight * extra
                with timer("backward"):
                    (loss / accum).backward()
            feats.append({v: _at_least_float32(t.detach()) for v, t in z.items()})
            _accumulate(logs, terms, 1.0 / accum)
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
    if state.nce is not None and ctx.distributed and step == 0:
        # NCE's constant Z is estimated from the first batch; all ranks keep rank 0's.
        torch.distributed.broadcast(state.nce.normalizers, 0)
    # 2. memory bank <- encoder features of the whole global batch
    with timer("bank_update"):
        views = state.bank.views
        z_local = torch.stack([torch.cat([f[v] for f in feats]) for v in views])  # [V, b, d]
        z_all = all_gather_cat(z_local.transpose(0, 1).contiguous(), ctx).transpose(0, 1)  # [V, B, d]
        idx_all = all_gather_cat(idx, ctx)
        state.bank.update({v: z_all[i] for i, v in enumerate(views)}, idx_all)
    # 3. meta step of the MAGs
    if cfg.method == "metaug" and step % cfg.metaug.meta_every == 0:
        assert state.mags is not None and state.mag_opt is not None
        with timer("meta"):
            grads: dict[str, Tensor] = {}
            inner_lr = meta_inner_lr(cfg, state)
            for a in range(accum):
                write = (_bank_writer(state, sis[a][:, 0], ctx) if cfg.metaug.bank_writes == "code" else None)
                # Under bf16 the whole meta step (both encoder forwards and both losses) is
                # autocast: metaug_meta_step owns the forward/loss interleaving.
                with _autocast(cfg, ctx.device):
                    g, mag_loss, meta_terms = metaug_meta_step(
                        state.encoder, state.mags, xs[a], state.bank, sis[a], objective, inner_lr=inner_lr,
                        grad_mode=cfg.run.meta_grad, draw=negative_draw(cfg, state, sis[a], step, ctx, "meta", a),
                        write_bank=write, diagnostics=True)
                _accumulate(grads, {k: _at_least_float32(t) for k, t in g.items()}, 1.0 / accum)
                _accumulate(logs, {"mag_loss": mag_loss}, 1.0 / accum)
                _accumulate(logs, meta_log_terms(meta_terms, mag_loss), 1.0 / accum)
            logs[META_PREFIX + "inner_lr"] = torch.tensor(inner_lr, dtype=torch.float64)
            names = list(grads)
            all_reduce_mean_([grads[n] for n in names], ctx)
            set_gradients(state.mags, grads)
            state.mag_opt.step()
    return logs
