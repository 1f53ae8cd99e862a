"""``metaug``: OUCL + one MAG per view + the margin-injected regulariser + the meta step, in the
official HEAD order (docs/METHODS.md section 6):

    1. encoder step, MAGs frozen: z = f(x), z^ = MAG(z), L_tot(z, z^) (+ alpha R if reg_where
       = "both"), backward, SGD step of the encoder (the generic ``step.train_step``);
    2. memory bank <- encoder features z (gathered from all ranks; ``step.train_step``);
    3. every ``meta_every``-th iteration: MAG gradients through the updated encoder's fast
       weights (``metaug_meta_step``), averaged over ranks, SGD step of the MAGs
       (:func:`after_bank_update`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from metaug_features.model import MetAugEncoder

from ..config import TrainConfig
from ..data import step_generator
from ..distributed import DistContext, all_gather_cat, all_reduce_mean_
from ..mag import build_mags_for, mag_norms
from ..meta import metaug_meta_step, set_gradients
from ..objective import NegativeDraw, ObjectiveConfig, metaug_objective
from . import oucl
from .interface import META_PREFIX, Features, Method, StepInputs
from .precision import accumulate, at_least_float32, autocast
from .state import TrainState, make_optimizer


def build(cfg: TrainConfig, encoder: MetAugEncoder, num_samples: int, device: torch.device) -> dict[str, Any]:
    """One MAG per view (in train mode) and their optimiser (the encoder's kind, the ``metaug``
    section's lr, momentum and weight decay)."""
    mags = build_mags_for(encoder).to(device).train()
    o, mg = cfg.optim, cfg.metaug
    return {"mags": mags, "mag_optimizer": make_optimizer(o.optimizer, mags.parameters(), mg.lr, mg.momentum,
                                                          mg.weight_decay)}


def encoder_loss(cfg: TrainConfig, state: TrainState, z: Features, sample_idx: Tensor, objective: ObjectiveConfig,
                 draw: NegativeDraw | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """L_tot with z^ = MAG(z) (MAGs in train mode, frozen), R only if reg_where = "both";
    ``draw`` gives the fresh negatives of ``metaug.negatives="per_call"`` (:func:`negative_draw`).
    Returns the scalar loss and its detached terms (``loss_orig``, ``loss_aug/...``, ...)."""
    mags = state.extra["mags"]
    z_hat = {v: mags[v](t) for v, t in z.items()}
    loss, terms = metaug_objective(z, z_hat, state.bank, sample_idx, objective, phase="encoder", draw=draw)
    out = {"loss": loss.detach()}
    out.update({k: v for k, v in terms.items() if k != "total"})
    return loss, out


def meta_inner_lr(cfg: TrainConfig, state: TrainState) -> float:
    """eta_in of this step's meta step: ``metaug.inner_lr`` (the official code's 1e-3), or the
    encoder's scheduled learning rate of this step with ``metaug.inner_lr_follows_encoder``
    (paper eq. 3)."""
    if cfg.metaug.inner_lr_follows_encoder:
        return float(state.opt.param_groups[0]["lr"])
    return cfg.metaug.inner_lr


def meta_log_terms(terms: Mapping[str, Tensor], mag_loss: Tensor) -> dict[str, Tensor]:
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
    if cfg.metaug.negatives == "per_step":
        return None
    gen = step_generator(cfg.run.seed, f"negatives-per-call/{phase}/rank{ctx.rank}/micro{micro}", step)
    idx = sample_idx[:, 0].cpu()

    def draw() -> Tensor:
        return state.bank.sample(idx, gen).to(sample_idx.device)

    return draw


def _bank_writer(state: TrainState, idx: Tensor, ctx: DistContext) -> Callable[[Features], None]:
    """``metaug.bank_writes="code"``: the meta step's extra bank writes for the rows ``idx``
    ``[b]`` (gathered from all ranks like step 2's write), out of place because the inner loss's
    graph still holds the old memory."""
    idx_all = all_gather_cat(idx, ctx)

    def write(z: Features) -> None:
        views = state.bank.views
        z_local = torch.stack([at_least_float32(z[v]) for v in views]).transpose(0, 1).contiguous()
        z_all = all_gather_cat(z_local, ctx).transpose(0, 1)  # [V, B, d]
        state.bank.update({v: z_all[i] for i, v in enumerate(views)}, idx_all, in_place=False)

    return write


def after_bank_update(cfg: TrainConfig, state: TrainState, inputs: StepInputs) -> dict[str, Tensor]:
    """Step 3, every ``meta_every``-th step: the MAG gradients of each micro-batch (averaged over
    micro-batches and ranks) and one SGD step of the MAGs. Returns ``mag_loss`` and the meta
    diagnostics under :data:`META_PREFIX` (empty on the other steps)."""
    if inputs.step % cfg.metaug.meta_every:
        return {}
    mags, ctx, accum = state.extra["mags"], inputs.ctx, len(inputs.xs)
    logs: dict[str, Tensor] = {}
    with state.timer("meta"):
        grads: dict[str, Tensor] = {}
        inner_lr = meta_inner_lr(cfg, state)
        for a, (x, si) in enumerate(zip(inputs.xs, inputs.sample_idxs)):
            write = _bank_writer(state, si[:, 0], ctx) if cfg.metaug.bank_writes == "code" else None
            # Under bf16 the whole meta step (both encoder forwards and both losses) is
            # autocast: metaug_meta_step owns the forward/loss interleaving.
            with autocast(cfg, ctx.device):
                g, mag_loss, meta_terms = metaug_meta_step(
                    state.encoder, mags, x, state.bank, si, inputs.objective, inner_lr=inner_lr,
                    grad_mode=cfg.run.meta_grad,
                    draw=negative_draw(cfg, state, si, inputs.step, ctx, "meta", a),
                    write_bank=write, diagnostics=True)
            accumulate(grads, {k: at_least_float32(t) for k, t in g.items()}, 1.0 / accum)
            accumulate(logs, {"mag_loss": mag_loss}, 1.0 / accum)
            accumulate(logs, meta_log_terms(meta_terms, mag_loss), 1.0 / accum)
        logs[META_PREFIX + "inner_lr"] = torch.tensor(inner_lr, dtype=torch.float64)
        names = list(grads)
        all_reduce_mean_([grads[n] for n in names], ctx)
        set_gradients(mags, grads)
        state.extra["mag_optimizer"].step()
    return logs


def set_lr(cfg: TrainConfig, state: TrainState, factor: float) -> None:
    """The MAGs follow the encoder's schedule from their own base lr (``metaug.lr``)."""
    for group in state.extra["mag_optimizer"].param_groups:
        group["lr"] = cfg.metaug.lr * factor


def log_record(cfg: TrainConfig, state: TrainState, factor: float) -> dict[str, float]:
    """The MAGs' lr and weight / gradient norms (docs/METHODS.md section 4 asks for them)."""
    return {"mag_lr": cfg.metaug.lr * factor, **mag_norms(state.extra["mags"])}


def provenance(cfg: TrainConfig) -> dict[str, Any]:
    """OUCL's entries plus the meta step's."""
    m = cfg.metaug
    return {**oucl.provenance(cfg), "meta_every": m.meta_every, "delta": m.delta, "alpha": m.alpha}


METAUG = Method(name="metaug", build=build, encoder_loss=encoder_loss, contrastive_loss=oucl.contrastive_loss,
                provenance=provenance, after_bank_update=after_bank_update, negative_draw=negative_draw,
                set_lr=set_lr, log_record=log_record, warm_start_keys=("mags",), meta_diagnostics=True)
