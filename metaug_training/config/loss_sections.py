"""The loss sections of the training config: ``loss`` (CMC and OUCL options) and ``metaug``
(the MetAug objective, regulariser and meta step), docs/METHODS.md sections 4-6.

These frozen dataclasses are the single source of the OUCL / MetAug defaults: the loss
functions (``metaug_training/losses.py``) take every option explicitly and the objective
(``metaug_training/objective.py``) reads these sections, so no default is repeated there. Each
section validates itself on construction (ConfigError naming the dotted key); the check that
``metaug.aug_terms`` names the model's views needs the ``model`` section and is made by
:class:`~metaug_training.config.schema.TrainConfig` with :func:`expand_aug_terms`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from metaug_features.errors import ConfigError

from .checks import check_at_least, check_choice, check_positive

#: ``loss.cmc``: the CMC baseline's loss.
CMC_LOSSES = ("infonce", "nce")
#: ``loss.weighting``: OUCL's a_p = a_n = 1, or the detached adaptive weights of eq. 9-10.
WEIGHTINGS = ("none", "adaptive")
#: ``metaug.aug_terms`` keywords (a list of view subsets is the fourth form).
AUG_TERM_KEYWORDS = ("code", "paper", "none")
#: ``metaug.reg_mode``: the thresholds of R (eq. 4).
REG_MODES = ("large", "medium", "small")
#: ``metaug.reg_where``: which update's loss holds alpha * R.
REG_WHERE = ("mag", "both", "off")
#: ``metaug.reg_scores``: OUCL's ``(s + 1) / 2`` map (official code) or the raw dot products.
REG_SCORES = ("mapped", "raw")
#: ``metaug.reg_blocks``: R's hinges over the augmented score blocks only, or (official code)
#: over those plus the original-only blocks.
REG_BLOCKS = ("augmented", "all")
#: ``metaug.bank_writes``: one memory-bank write per iteration (encoder features), or the
#: official code's pattern (also the meta step's inner and fast-weight features).
BANK_WRITES = ("once", "code")
#: ``metaug.negatives``: one negative draw per step reused by every scoring call, or (official
#: code) a fresh draw for every scoring call after the encoder step's original term.
NEGATIVE_DRAWS = ("per_step", "per_call")


@dataclass(frozen=True)
class LossConfig:
    """Losses (docs/METHODS.md section 4).

    cmc: the CMC baseline's loss, "infonce" (softmax) or "nce" (memory-bank NCE), both at
        ``temperature``.
    beta, margin, weighting, gamma, phi_dec: OUCL options (methods oucl and metaug).
        margin None = D_p = D_n = 0; a number m sets D_p = 1 - m, D_n = m.
        weighting "none" = a_p = a_n = 1; "adaptive" = the detached weights of eq. 9-10.
    """

    cmc: str = "infonce"
    temperature: float = 0.07
    beta: float = 16.0
    margin: float | None = None
    weighting: str = "none"
    gamma: float = 0.4
    phi_dec: float = 6.0

    def __post_init__(self) -> None:
        check_choice("loss.cmc", self.cmc, CMC_LOSSES)
        check_positive("loss.temperature", self.temperature)
        check_positive("loss.beta", self.beta)
        if self.margin is not None and not (0 <= self.margin <= 1):
            raise ConfigError(f"config key 'loss.margin' must be null or in [0, 1], got {self.margin}")
        check_choice("loss.weighting", self.weighting, WEIGHTINGS)
        check_positive("loss.gamma", self.gamma, allow_zero=True)
        check_positive("loss.phi_dec", self.phi_dec)


@dataclass(frozen=True)
class MetaugConfig:
    """MetAug-only options (docs/METHODS.md sections 4-6).

    delta, alpha: weights of the augmented terms and of the regulariser R.
    aug_terms: "code" (the four augmented terms), "paper" (eq. 11's single all-augmented term),
        "none", or an explicit list of view subsets written like "l", "ab+ori", "l+ab+ori".
    reg_mode, reg_c, reg_where: R of eq. 4-5 ("large" | "medium" | "small"; its hidden constant
        c; applied to the MAG update only "mag" (paper), to both updates "both" (code), "off").
    reg_detach_thresholds: stop gradients into R's per-anchor thresholds sigma+/sigma-.
    reg_scores: the scores eq. 4-5 read: "mapped" (default, the official code: s -> (s+1)/2 as in
        OUCL) or "raw" (the dot products; exactly twice the mapped R). A saved config without
        this key (checkpoints written before it existed) loads with the default.
    reg_blocks: the score blocks R's hinges average over: "augmented" (default; the blocks whose
        anchor is a MAG output, 6 for three views) or "all" (official code: those plus the
        original-only blocks, 12 for three views).
    inner_lr: eta_in of the fast weights theta* = theta' - eta_in * g (the official code's 1e-3).
    inner_lr_follows_encoder: if true, eta_in is the encoder's scheduled learning rate at that
        step (paper eq. 3) and ``inner_lr`` is not used.
    bank_writes: "once" (default: the encoder step's features, once per iteration) or "code"
        (the official code's three writes per meta iteration: also the updated encoder's features
        and the fast-weight features of the meta step, docs/METHODS.md section 6).
    negatives: "per_step" (default: one draw per step reused by every scoring call) or
        "per_call" (the official code: a fresh draw for every scoring call except the encoder
        step's original term, which keeps the step's draw).
    meta_every: the meta step runs every k-th iteration (1 = paper).
    lr, momentum, weight_decay: SGD of the MAGs (scheduled like the encoder's lr).
    """

    delta: float = 1e-5
    alpha: float = 1e-11
    aug_terms: Any = "code"
    reg_mode: str = "large"
    reg_c: float = 1e-4
    reg_where: str = "mag"
    reg_detach_thresholds: bool = False
    reg_scores: str = "mapped"
    reg_blocks: str = "augmented"
    inner_lr: float = 1e-3
    inner_lr_follows_encoder: bool = False
    bank_writes: str = "once"
    negatives: str = "per_step"
    meta_every: int = 1
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        check_positive("metaug.delta", self.delta, allow_zero=True)
        check_positive("metaug.alpha", self.alpha, allow_zero=True)
        _check_aug_terms_form(self.aug_terms)
        check_choice("metaug.reg_mode", self.reg_mode, REG_MODES)
        check_positive("metaug.reg_c", self.reg_c, allow_zero=True)
        check_choice("metaug.reg_where", self.reg_where, REG_WHERE)
        check_choice("metaug.reg_scores", self.reg_scores, REG_SCORES)
        check_choice("metaug.reg_blocks", self.reg_blocks, REG_BLOCKS)
        check_choice("metaug.bank_writes", self.bank_writes, BANK_WRITES)
        check_choice("metaug.negatives", self.negatives, NEGATIVE_DRAWS)
        check_positive("metaug.inner_lr", self.inner_lr, allow_zero=True)
        check_at_least("metaug.meta_every", self.meta_every, 1)
        for name in ("lr", "momentum", "weight_decay"):
            check_positive(f"metaug.{name}", getattr(self, name), allow_zero=True)


def _check_aug_terms_form(aug_terms: Any) -> None:
    """The form of ``metaug.aug_terms`` without the views: a keyword or a non-empty list."""
    if isinstance(aug_terms, str):
        if aug_terms in AUG_TERM_KEYWORDS:
            return
    elif isinstance(aug_terms, (list, tuple)) and aug_terms:
        return
    raise ConfigError(f"config key 'metaug.aug_terms' must be 'code', 'paper', 'none' or a list like "
                      f"['l', 'ab+ori'], got {aug_terms!r}")


def expand_aug_terms(aug_terms: Any, views: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """The augmented terms of L_tot (docs/METHODS.md section 4) as tuples of the views whose
    anchors a MAG output replaces, each in the model's view order.

    "code" -> one term per view plus the all-views term (4 terms for three views, as the
    official code); "paper" -> the single all-views term (eq. 11); "none" -> no augmented term
    (MAGs are trained by R alone); a list -> exactly those terms, each written "l" / "ab+ori"
    (recipes, overrides) or as a sequence of view names (``("ab", "ori")``). A view named twice
    in one term counts once. The one parser of ``aug_terms``: the config validates with it and
    the objective resolves with it. Raises ConfigError (a ValueError) naming
    ``metaug.aug_terms``.
    """
    views = tuple(views)
    _check_aug_terms_form(aug_terms)
    if aug_terms == "code":
        return tuple((v,) for v in views) + (views,)
    if aug_terms == "paper":
        return (views,)
    if aug_terms == "none":
        return ()
    out = []
    for i, term in enumerate(aug_terms):
        if isinstance(term, str) and term:
            parts = tuple(p.strip() for p in term.split("+"))
        elif isinstance(term, (list, tuple)) and term and all(isinstance(p, str) for p in term):
            parts = tuple(term)
        else:
            raise ConfigError(f"config key 'metaug.aug_terms[{i}]' must be a string like 'l' or 'ab+ori', got {term!r}")
        for p in parts:
            if p not in views:
                raise ConfigError(f"config key 'metaug.aug_terms[{i}]': view {p!r} is not one of the model's views {list(views)}")
        out.append(tuple(v for v in views if v in parts))
    return tuple(out)
