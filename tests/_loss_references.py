"""Loss helpers for the training tests: the loss functions at the config sections' defaults, random
score tensors, and naive references transcribed from docs/METHODS.md section 4 (loops over anchors
and their positives / negatives one score at a time, in float64 Python arithmetic)."""

from __future__ import annotations

import math

import torch

from metaug_training.losses import (
    margin_regularizer,
    margin_thresholds,
    oucl_loss,
)
from metaug_training.config import LossConfig, MetaugConfig
from metaug_training.objective import ObjectiveConfig, OUCLLoss


# The loss functions take every option explicitly; their defaults are defined once, by the
# config sections. These helpers call them at those defaults, changing only what a test names.
LOSS_DEFAULTS, METAUG_DEFAULTS = LossConfig(), MetaugConfig()


def oucl(scores, **changes):
    """oucl_loss at the ``loss`` section's defaults except ``changes``."""
    opts = dict(beta=LOSS_DEFAULTS.beta, margin=LOSS_DEFAULTS.margin, weighting=LOSS_DEFAULTS.weighting, gamma=LOSS_DEFAULTS.gamma,
                phi_dec=LOSS_DEFAULTS.phi_dec)
    return oucl_loss(scores, **{**opts, **changes})


def regularizer(orig, aug, mode=METAUG_DEFAULTS.reg_mode, **changes):
    """margin_regularizer at the ``metaug`` section's defaults except ``changes``."""
    opts = dict(c=METAUG_DEFAULTS.reg_c, detach_thresholds=METAUG_DEFAULTS.reg_detach_thresholds, scores=METAUG_DEFAULTS.reg_scores)
    return margin_regularizer(orig, aug, mode, **{**opts, **changes})


def thresholds(orig, mode=METAUG_DEFAULTS.reg_mode, scores=METAUG_DEFAULTS.reg_scores):
    """margin_thresholds at the ``metaug`` section's defaults."""
    return margin_thresholds(orig, mode, scores)


def objective(loss=None, **metaug):
    """The objective of ``MetaugConfig(**metaug)`` with OUCL at the loss defaults (or ``loss``)."""
    return ObjectiveConfig(loss=loss if loss is not None else OUCLLoss(LOSS_DEFAULTS), metaug=MetaugConfig(**metaug))


def random_scores(t: int, b: int, k: int, seed: int, requires_grad: bool = False) -> list[torch.Tensor]:
    """T tensors [B, K+1] of scores in [-1, 1], float64."""
    g = torch.Generator().manual_seed(seed)
    out = [(torch.rand(b, k + 1, generator=g, dtype=torch.float64) * 2 - 1) for _ in range(t)]
    if requires_grad:
        for s in out:
            s.requires_grad_(True)
    return out


# --------------------------------------------------------------------------- naive references
def naive_oucl(scores, beta=16.0, margin=None, weighting="none", gamma=0.4, phi_dec=6.0):
    """docs/METHODS.md section 4 OUCL, one anchor at a time. Returns a torch scalar built from per-element torch
    ops (so gradients can be compared); the adaptive weights are Python floats (detached)."""
    b, kp1 = scores[0].shape
    d_p, d_n = (0.0, 0.0) if margin is None else (1.0 - margin, margin)
    total = 0.0
    for i in range(b):
        pos = [(s[i, 0] + 1) / 2 for s in scores]
        neg = [(s[i, j] + 1) / 2 for s in scores for j in range(1, kp1)]
        neg_terms, pos_terms = [], []
        for n in neg:
            a_n = max(0.0, float(n.detach()) + gamma) / phi_dec if weighting == "adaptive" else 1.0
            neg_terms.append(torch.exp(beta * a_n * (n - d_n)))
        for p in pos:
            a_p = max(0.0, 1.0 + gamma - float(p.detach())) / phi_dec if weighting == "adaptive" else 1.0
            pos_terms.append(torch.exp(-beta * a_p * (p - d_p)))
        lse_n = torch.log(sum(neg_terms))
        lse_p = torch.log(sum(pos_terms))
        total = total + torch.log1p(torch.exp(lse_n + lse_p))
    return (16.0 / beta) * total / b


def naive_infonce(scores, temperature):
    total = 0.0
    for s in scores:
        s = s.detach()
        b, kp1 = s.shape
        acc = 0.0
        for i in range(b):
            row = [float(s[i, j]) / temperature for j in range(kp1)]
            acc += -row[0] + math.log(sum(math.exp(r) for r in row))
        total += acc / b
    return total


def naive_nce(scores, zs, n_data, temperature, eps=1e-7):
    total = 0.0
    for s, z in zip(scores, zs):
        b, kp1 = s.shape
        k = kp1 - 1
        kpn = k / n_data
        acc = 0.0
        for i in range(b):
            p0 = math.exp(float(s[i, 0]) / temperature) / z
            acc += math.log(p0 / (p0 + kpn + eps))
            for j in range(1, kp1):
                pj = math.exp(float(s[i, j]) / temperature) / z
                acc += math.log(kpn / (pj + kpn + eps))
        total += -acc / b
    return total


def naive_z(scores, n_data, temperature):
    out = []
    for s in scores:
        vals = [math.exp(float(v) / temperature) for v in s.flatten()]
        out.append(n_data * sum(vals) / len(vals))
    return out


def _naive_margin_reg(orig, aug, mode, c, score):
    """docs/METHODS.md section 4 / paper eq. 4-5, one anchor and one score at a time in Python
    floats, each similarity passed through ``score`` (a float -> float map) before it is used."""
    b, kp1 = orig[0].shape
    pos_terms, neg_terms = [], []
    for i in range(b):
        min_pos = min(score(float(s[i, 0])) for s in orig)
        max_neg = max(score(float(s[i, j])) for s in orig for j in range(1, kp1))
        if mode == "large":
            sp, sn = min(min_pos, max_neg), max(min_pos, max_neg)
        elif mode == "small":
            sp, sn = max(min_pos, max_neg), min(min_pos, max_neg)
        else:
            sp = sn = (min_pos + max_neg) / 2
        for a in aug:
            pos_terms.append(max(0.0, score(float(a[i, 0])) - sp))
            for j in range(1, kp1):
                neg_terms.append(max(0.0, sn - score(float(a[i, j]))))
    return c * sum(pos_terms) / len(pos_terms) + sum(neg_terms) / len(neg_terms)


def naive_margin_reg_mapped(orig, aug, mode, c):
    """The margin regulariser on OUCL's mapped scores q = (s + 1) / 2 (the official code's R). Every
    score is mapped before the min/max and the hinges, not the raw reference scaled by a factor,
    so that the factor-2 relation is checked, not assumed."""
    return _naive_margin_reg(orig, aug, mode, c, lambda s: (s + 1) / 2)


def naive_margin_reg_raw(orig, aug, mode, c):
    """The same formula on the raw dot products (``reg_scores="raw"``, the behaviour before the
    switch existed)."""
    return _naive_margin_reg(orig, aug, mode, c, lambda s: s)
