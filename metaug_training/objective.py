"""The MetAug objective L_tot (docs/METHODS.md section 4; paper eq. 11, official code variant).

    L_tot = L(z) + delta * sum_{S in terms} L(z with the views in S replaced by MAG outputs)
            (+ alpha * R  when the regulariser applies to this update)

``L`` is the OUCL loss (:func:`metaug_training.losses.oucl_loss`) over the memory-bank scores of
every ordered view pair. Replacing view X's anchor by its MAG output ``z^_X`` changes the
score tensors whose *anchor* is X (pairs ``(X, Y)``); the bank side is always the stored
(encoder) memory. So each term is assembled from two score sets computed once each —
``scores(z)`` and ``scores(z^)`` — exactly what recomputing every term from scratch gives.

Augmented-term sets (``aug_terms``):

- ``"code"`` (official code, default): one term per single view plus the all-augmented term.
  For views (l, ab, ori): {l}, {ab}, {ori}, {l, ab, ori} (4 terms); for (l, ab): {l}, {ab}, {l, ab}.
- ``"paper"`` (eq. 11): the single all-augmented term.
- ``"none"``: no augmented term (OUCL only).
- an explicit sequence of view sets, e.g. ``["l", "l+ab"]`` or ``[("l",), ("l", "ab")]``.

(parsed by :func:`metaug_training.config.expand_aug_terms`, the one parser the config's
validation uses too). The defaults named here are the ``metaug`` section's
(:class:`~metaug_training.config.MetaugConfig`), the only place they are defined.

Regulariser placement (``reg_where``): ``"mag"`` (paper, default) adds ``alpha * R`` to the MAG
(meta) loss only; ``"both"`` (official code) to the encoder loss too; ``"off"`` never. R uses
the original scores for its thresholds and, as augmented scores, every pair whose anchor is
augmented in at least one term. ``reg_scores`` picks the scores R reads: ``"mapped"`` (official
code, default) maps them ``s -> (s + 1) / 2`` as OUCL does; ``"raw"`` uses the dot products
(exactly twice the mapped R).

Negatives (``negatives``): ``"per_step"`` (default) scores every call against the step's one
draw, so the original and augmented scores are computed once and shared by the terms and R;
``"per_call"`` (the official code, which samples at every call of its contrast module) gives
each augmented term and each of R's score sets a fresh draw (``draw``); the original term keeps
``sample_idx``. R's hinges average over the augmented blocks (``reg_blocks="augmented"``) or
over those and the original-only blocks (``"all"``, the official code: 12 blocks for 3 views).

Nothing here writes to the memory bank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import REG_WHERE, LossConfig, MetaugConfig, expand_aug_terms
from .losses import margin_regularizer, oucl_loss
from .memory_bank import MemoryBank

PHASES = ("encoder", "mag")

#: A loss over pair scores: T tensors ``[B, K+1]`` (positive in column 0) -> scalar.
LossFn = Callable[[Sequence[Tensor]], Tensor]
#: ``metaug.negatives="per_call"``: returns a fresh ``[B, K+1]`` sample for the next scoring call.
NegativeDraw = Callable[[], Tensor]


@dataclass(frozen=True)
class OUCLLoss:
    """``L(scores)`` = :func:`~metaug_training.losses.oucl_loss` (paper eq. 8-10) with the OUCL
    options of the ``loss`` section (beta, margin, weighting, gamma, phi_dec); scores are T
    tensors ``[B, K+1]``, the result a scalar."""

    options: LossConfig

    def __call__(self, scores: Sequence[Tensor]) -> Tensor:
        o = self.options
        return oucl_loss(scores, beta=o.beta, margin=o.margin, weighting=o.weighting, gamma=o.gamma, phi_dec=o.phi_dec)


@dataclass(frozen=True)
class ObjectiveConfig:
    """Everything :func:`metaug_objective` reads; no defaults of its own (they are the config
    sections').

    Attributes:
        loss: the pair-score loss ``L`` (``OUCLLoss`` of the ``loss`` section, or any callable
            ``scores -> scalar``).
        metaug: the ``metaug`` section: ``delta`` (weight of the augmented terms), ``alpha``
            (weight of R), ``aug_terms``, and R's ``reg_mode``, ``reg_c``, ``reg_where``,
            ``reg_detach_thresholds``, ``reg_scores`` (see the module docstring).
    """

    loss: LossFn
    metaug: MetaugConfig

    @classmethod
    def from_sections(cls, loss: LossConfig, metaug: MetaugConfig) -> "ObjectiveConfig":
        """The objective of a run: OUCL with the ``loss`` section's options, the ``metaug`` section."""
        return cls(loss=OUCLLoss(loss), metaug=metaug)


def regularizer_applies(reg_where: str, phase: str) -> bool:
    """Whether ``alpha * R`` is part of the loss of update ``phase`` ("encoder" | "mag")."""
    if reg_where not in REG_WHERE:
        raise ValueError(f"reg_where must be one of {REG_WHERE}, got {reg_where!r}")
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    return reg_where == "both" or (reg_where == "mag" and phase == "mag")


def _term_name(term: tuple[str, ...]) -> str:
    return "loss_aug/" + "+".join(term)


def metaug_objective(
    z: Mapping[str, Tensor],
    z_hat: Mapping[str, Tensor] | None,
    bank: MemoryBank,
    sample_idx: Tensor,
    objective: ObjectiveConfig,
    phase: str = "encoder",
    orig_scores: Mapping[tuple[str, str], Tensor] | None = None,
    *,
    draw: NegativeDraw | None = None,
    diagnostics: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_tot of docs/METHODS.md section 4 for one update.

    Args:
        z: ``{view: [B, d]}`` encoder embeddings (unit-norm).
        z_hat: ``{view: [B, d]}`` MAG outputs for the same views, or None (then only ``L(z)``).
        bank: the memory bank (read only here).
        sample_idx: ``[B, K+1]`` from ``bank.sample(idx)``: the negatives of the original term
            ``L(z)`` and, without ``draw``, of every other scoring call too.
        objective: the loss ``L`` and the ``metaug`` section (:class:`ObjectiveConfig`).
        phase: ``"encoder"`` (docs/METHODS.md section 6, step 1) or ``"mag"`` (step 2's MAG loss); decides whether
            ``alpha * R`` is added (see ``reg_where``).
        orig_scores: optional precomputed ``bank.scores(z, sample_idx)`` (saves one scoring).
        draw: ``metaug.negatives="per_call"``: a callable returning a fresh ``[B, K+1]`` draw;
            each augmented term, R's augmented blocks and (``reg_blocks="all"``) R's
            original-only blocks are then scored with a draw of their own, as the official code
            samples anew at every call of its contrast module. None (``"per_step"``): every
            call reuses ``sample_idx``.
        diagnostics: also return the meta diagnostics (:func:`meta_diagnostics`, keys
            ``"diag/..."``) computed from the tensors of this call.

    Returns:
        ``(total, terms)``: scalar ``total`` with graph; ``terms`` holds detached scalars
        ``"loss_orig"``, ``"loss_aug/<views>"`` per term, ``"reg"`` (unweighted R, when
        computed), ``"total"`` and, with ``diagnostics``, the ``"diag/..."`` values.
    """
    loss_fn, mg = objective.loss, objective.metaug
    use_reg = regularizer_applies(mg.reg_where, phase) and z_hat is not None
    terms_sets = expand_aug_terms(mg.aug_terms, bank.views) if z_hat is not None else ()

    pairs = bank.pairs
    missing = [v for v in bank.views if v not in z]
    if missing:
        raise ValueError(f"z must hold every bank view {bank.views}; missing {missing}")
    need_aug = bool(terms_sets) or use_reg
    augmented: set[str] = set()
    if need_aug:
        assert z_hat is not None
        augmented = {v for t in terms_sets for v in t} if terms_sets else set(bank.views)
        for v in augmented:
            if v not in z_hat or tuple(z_hat[v].shape) != tuple(z[v].shape):
                raise ValueError(f"z_hat must hold view {v!r} with the shape of z[{v!r}] "
                                 f"{tuple(z[v].shape)}; got {list(z_hat)}")
    # Only anchors that some term augments need MAG-side scores.
    aug_anchors = {v: z_hat[v] for v in bank.views if v in augmented} if need_aug else {}
    if draw is not None:
        # per_call: every scoring call below has its own draw, so nothing is shared.
        s_orig = orig_scores if orig_scores is not None else bank.scores_many([z], sample_idx)[0]
        s_aug: dict[tuple[str, str], Tensor] = {}
    elif orig_scores is None:
        # per_step: both score sets at the step's draw, in one stacked product per pair.
        s_orig, s_aug = bank.scores_many([z, aug_anchors], sample_idx)
    else:
        s_orig = orig_scores
        s_aug = bank.scores_many([aug_anchors], sample_idx)[0]
    l_orig = loss_fn([s_orig[p] for p in pairs])
    total = l_orig
    logs: dict[str, Tensor] = {"loss_orig": l_orig.detach()}
    term_losses: list[Tensor] = []

    if need_aug:
        assert z_hat is not None
        if terms_sets:
            for term in terms_sets:
                if draw is None:
                    term_scores = [s_aug[(x, y)] if x in term else s_orig[(x, y)] for x, y in pairs]
                else:
                    anchors = {v: (z_hat[v] if v in term else z[v]) for v in bank.views}
                    fresh = bank.scores_many([anchors], draw())[0]
                    term_scores = [fresh[p] for p in pairs]
                lt = loss_fn(term_scores)
                logs[_term_name(term)] = lt.detach()
                term_losses.append(lt)
            total = total + mg.delta * sum(term_losses[1:], term_losses[0])
        if use_reg:
            reg_aug = s_aug if draw is None else bank.scores_many([aug_anchors], draw())[0]
            blocks = [reg_aug[p] for p in pairs if p in reg_aug]
            if mg.reg_blocks == "all":
                # The official code's R also averages over the original-only blocks (scored with
                # a fresh draw there; with per_step negatives they are the original term's).
                reg_orig = s_orig if draw is None else bank.scores_many([z], draw())[0]
                blocks += [reg_orig[p] for p in pairs]
            reg = margin_regularizer(
                [s_orig[p] for p in pairs],
                blocks,
                mode=mg.reg_mode,
                c=mg.reg_c,
                detach_thresholds=mg.reg_detach_thresholds,
                scores=mg.reg_scores,
            )
            logs["reg"] = reg.detach()
            total = total + mg.alpha * reg
        if diagnostics:
            logs.update(meta_diagnostics(z, z_hat, bank, sample_idx[:, 0], l_orig, term_losses))
    logs["total"] = total.detach()
    return total, logs


def meta_diagnostics(z: Mapping[str, Tensor], z_hat: Mapping[str, Tensor], bank: MemoryBank, idx: Tensor,
                     loss_orig: Tensor, term_losses: Sequence[Tensor]) -> dict[str, Tensor]:
    """Whether the MAGs augment anything, from tensors the objective already holds (detached).

    - ``diag/cos_z_mag/<v>``: mean over the batch of cos(z_v, MAG_v(z_v)) for each view the
      MAGs augment (1 = the MAG copies its input: the collapse of the paper's Figure 2a);
    - ``diag/pos_orig`` / ``diag/pos_aug``: the mean positive score (dot product with the
      positive's bank slot, in [-1, 1]) of the original anchors and of the MAG-output anchors,
      over the ordered pairs whose anchor is augmented (augmented below original = harder
      positives, what R asks for);
    - ``diag/loss_aug_mean``: the mean augmented-term loss, and ``diag/aug_orig_loss_ratio`` =
      that / ``L(z)`` (about 1: the augmented views are no harder than the originals). Absent
      without augmented terms.

    Args:
        z, z_hat: ``{view: [B, d]}`` encoder embeddings and MAG outputs (the augmented views).
        bank: the memory bank (read only).
        idx: ``[B]`` dataset indices (the positives' slots, column 0 of a sample).
        loss_orig: the scalar ``L(z)``; term_losses: the augmented terms' scalar losses.
    """
    out: dict[str, Tensor] = {}
    views = [v for v in bank.views if v in z_hat]
    for v in views:
        out[f"diag/cos_z_mag/{v}"] = F.cosine_similarity(z[v].detach(), z_hat[v].detach(), dim=1).mean()
    pos_orig, pos_aug = [], []
    for x, y in bank.pairs:
        if x in z_hat:
            positive = bank.view_bank(y)[idx].to(z[x].dtype)  # [B, d]
            pos_orig.append((z[x].detach() * positive).sum(1))
            pos_aug.append((z_hat[x].detach() * positive).sum(1))
    if pos_orig:
        out["diag/pos_orig"] = torch.cat(pos_orig).mean()
        out["diag/pos_aug"] = torch.cat(pos_aug).mean()
    if term_losses:
        mean_aug = torch.stack([t.detach() for t in term_losses]).mean()
        out["diag/loss_aug_mean"] = mean_aug
        out["diag/aug_orig_loss_ratio"] = mean_aug / loss_orig.detach()
    return out
