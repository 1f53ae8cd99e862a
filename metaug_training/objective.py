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

Nothing here writes to the memory bank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

from .config import REG_WHERE, LossConfig, MetaugConfig, expand_aug_terms
from .losses import margin_regularizer, oucl_loss
from .memory_bank import MemoryBank

PHASES = ("encoder", "mag")

#: A loss over pair scores: T tensors ``[B, K+1]`` (positive in column 0) -> scalar.
LossFn = Callable[[Sequence[Tensor]], Tensor]


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
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_tot of docs/METHODS.md section 4 for one update.

    Args:
        z: ``{view: [B, d]}`` encoder embeddings (unit-norm).
        z_hat: ``{view: [B, d]}`` MAG outputs for the same views, or None (then only ``L(z)``).
        bank: the memory bank (read only here).
        sample_idx: ``[B, K+1]`` from ``bank.sample(idx)``.
        objective: the loss ``L`` and the ``metaug`` section (:class:`ObjectiveConfig`).
        phase: ``"encoder"`` (docs/METHODS.md section 6, step 1) or ``"mag"`` (step 2's MAG loss); decides whether
            ``alpha * R`` is added (see ``reg_where``).
        orig_scores: optional precomputed ``bank.scores(z, sample_idx)`` (saves one scoring).

    Returns:
        ``(total, terms)``: scalar ``total`` with graph; ``terms`` holds detached scalars
        ``"loss_orig"``, ``"loss_aug/<views>"`` per term, ``"reg"`` (unweighted R, when
        computed) and ``"total"``.
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
    # Only anchors that some term augments need MAG-side scores; both sets are scored together
    # (one stacked product per pair).
    aug_anchors = {v: z_hat[v] for v in bank.views if v in augmented} if need_aug else {}
    if orig_scores is None:
        s_orig, s_aug = bank.scores_many([z, aug_anchors], sample_idx)
    else:
        s_orig = orig_scores
        s_aug = bank.scores_many([aug_anchors], sample_idx)[0]
    l_orig = loss_fn([s_orig[p] for p in pairs])
    total = l_orig
    logs: dict[str, Tensor] = {"loss_orig": l_orig.detach()}

    if need_aug:
        if terms_sets:
            aug_sum = None
            for term in terms_sets:
                lt = loss_fn([s_aug[(x, y)] if x in term else s_orig[(x, y)] for x, y in pairs])
                logs[_term_name(term)] = lt.detach()
                aug_sum = lt if aug_sum is None else aug_sum + lt
            total = total + mg.delta * aug_sum
        if use_reg:
            reg = margin_regularizer(
                [s_orig[p] for p in pairs],
                [s_aug[p] for p in pairs if p in s_aug],
                mode=mg.reg_mode,
                c=mg.reg_c,
                detach_thresholds=mg.reg_detach_thresholds,
                scores=mg.reg_scores,
            )
            logs["reg"] = reg.detach()
            total = total + mg.alpha * reg
    logs["total"] = total.detach()
    return total, logs
