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
- an explicit sequence of view sets, e.g. ``[("l",), ("l", "ab")]``.

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
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from .losses import margin_regularizer, oucl_loss
from .memory_bank import MemoryBank

REG_WHERE = ("mag", "both", "off")
PHASES = ("encoder", "mag")

LossFn = Callable[[Sequence[Tensor]], Tensor]


@dataclass(frozen=True)
class OUCLOptions:
    """Options of :func:`~metaug_training.losses.oucl_loss` (docs/METHODS.md section 4 defaults)."""

    beta: float = 16.0
    margin: float | None = None
    weighting: str = "none"
    gamma: float = 0.4
    phi_dec: float = 6.0

    def __call__(self, scores: Sequence[Tensor]) -> Tensor:
        return oucl_loss(scores, beta=self.beta, margin=self.margin, weighting=self.weighting,
                         gamma=self.gamma, phi_dec=self.phi_dec)


@dataclass(frozen=True)
class ObjectiveConfig:
    """Everything :func:`metaug_objective` reads (any object with these attributes works).

    Attributes:
        loss: OUCL options (``OUCLOptions``, a mapping with its keys, or any object with those
            attributes) or a callable ``scores -> scalar``.
        delta: weight of the augmented terms (code default 1e-5).
        alpha: weight of R (code default 1e-11).
        aug_terms: ``"code"`` | ``"paper"`` | ``"none"`` | explicit sequence of view sets.
        reg_mode: ``"large"`` | ``"medium"`` | ``"small"`` (paper eq. 4).
        reg_c: c in R (default 1e-4, hidden in the official code).
        reg_where: ``"mag"`` | ``"both"`` | ``"off"``.
        reg_detach_thresholds: stop gradients into R's thresholds (default False).
        reg_scores: ``"mapped"`` (default: eq. 4-5 on ``(s + 1) / 2``, the official code) |
            ``"raw"`` (eq. 4-5 on the raw dot products, twice the mapped value); see
            :func:`~metaug_training.losses.margin_regularizer`.
    """

    loss: Any = field(default_factory=OUCLOptions)
    delta: float = 1e-5
    alpha: float = 1e-11
    aug_terms: Any = "code"
    reg_mode: str = "large"
    reg_c: float = 1e-4
    reg_where: str = "mag"
    reg_detach_thresholds: bool = False
    reg_scores: str = "mapped"


def make_loss_fn(loss: Any) -> LossFn:
    """Turn ``cfg.loss`` into a callable ``scores -> scalar`` (OUCL unless already callable)."""
    if loss is None:
        return OUCLOptions()
    if callable(loss):
        return loss
    if isinstance(loss, Mapping):
        return OUCLOptions(**dict(loss))
    keys = ("beta", "margin", "weighting", "gamma", "phi_dec")
    defaults = OUCLOptions()
    return OUCLOptions(**{k: getattr(loss, k, getattr(defaults, k)) for k in keys})


def resolve_aug_terms(aug_terms: Any, views: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The augmented-term sets as tuples of view names in canonical view order (see module doc)."""
    views = tuple(views)
    if isinstance(aug_terms, str):
        if aug_terms == "code":
            return tuple((v,) for v in views) + (views,)
        if aug_terms == "paper":
            return (views,)
        if aug_terms == "none":
            return ()
        raise ValueError(f"aug_terms must be 'code', 'paper', 'none' or a list of view sets, got {aug_terms!r}")
    terms = []
    for term in aug_terms:
        term = (term,) if isinstance(term, str) else tuple(term)
        bad = [v for v in term if v not in views]
        if not term or bad or len(set(term)) != len(term):
            raise ValueError(f"bad augmented term {term!r}: must be a non-empty set of views from {views}")
        terms.append(tuple(v for v in views if v in term))
    return tuple(terms)


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
    cfg: Any,
    phase: str = "encoder",
    orig_scores: Mapping[tuple[str, str], Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_tot of docs/METHODS.md section 4 for one update.

    Args:
        z: ``{view: [B, d]}`` encoder embeddings (unit-norm).
        z_hat: ``{view: [B, d]}`` MAG outputs for the same views, or None (then only ``L(z)``).
        bank: the memory bank (read only here).
        sample_idx: ``[B, K+1]`` from ``bank.sample(idx)``.
        cfg: :class:`ObjectiveConfig` or any object with its attributes.
        phase: ``"encoder"`` (docs/METHODS.md section 6, step 1) or ``"mag"`` (step 2's MAG loss); decides whether
            ``alpha * R`` is added (see ``reg_where``).
        orig_scores: optional precomputed ``bank.scores(z, sample_idx)`` (saves one scoring).

    Returns:
        ``(total, terms)``: scalar ``total`` with graph; ``terms`` holds detached scalars
        ``"loss_orig"``, ``"loss_aug/<views>"`` per term, ``"reg"`` (unweighted R, when
        computed) and ``"total"``.
    """
    loss_fn = make_loss_fn(getattr(cfg, "loss", None))
    delta = float(getattr(cfg, "delta", 1e-5))
    alpha = float(getattr(cfg, "alpha", 1e-11))
    reg_where = getattr(cfg, "reg_where", "mag")
    use_reg = regularizer_applies(reg_where, phase) and z_hat is not None
    terms_sets = resolve_aug_terms(getattr(cfg, "aug_terms", "code"), bank.views) if z_hat is not None else ()

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
            total = total + delta * aug_sum
        if use_reg:
            reg = margin_regularizer(
                [s_orig[p] for p in pairs],
                [s_aug[p] for p in pairs if p in s_aug],
                mode=getattr(cfg, "reg_mode", "large"),
                c=float(getattr(cfg, "reg_c", 1e-4)),
                detach_thresholds=bool(getattr(cfg, "reg_detach_thresholds", False)),
                scores=getattr(cfg, "reg_scores", "mapped"),
            )
            logs["reg"] = reg.detach()
            total = total + alpha * reg
    logs["total"] = total.detach()
    return total, logs
