"""Losses and the MetAug objective against naive loops transcribed from docs/METHODS.md section 4.

Every reference below loops over anchors and their positives / negatives one score at a time
in float64 Python arithmetic; the library code is vectorised.
"""

from __future__ import annotations

import math

import pytest
import torch

from metaug_training.losses import (
    NCELoss,
    estimate_nce_normalizers,
    infonce_loss,
    margin_regularizer,
    margin_thresholds,
    nce_loss,
    oucl_loss,
)
from metaug_training.config import LossConfig, MetaugConfig, expand_aug_terms
from metaug_training.memory_bank import MemoryBank
from metaug_training.objective import ObjectiveConfig, OUCLLoss, metaug_objective


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The loss functions take every option explicitly; their defaults are defined once, by the
# config sections. These helpers call them at those defaults, changing only what a test names.
_LOSS, _METAUG = LossConfig(), MetaugConfig()


def oucl(scores, **changes):
    """oucl_loss at the ``loss`` section's defaults except ``changes``."""
    opts = dict(beta=_LOSS.beta, margin=_LOSS.margin, weighting=_LOSS.weighting, gamma=_LOSS.gamma,
                phi_dec=_LOSS.phi_dec)
    return oucl_loss(scores, **{**opts, **changes})


def regularizer(orig, aug, mode=_METAUG.reg_mode, **changes):
    """margin_regularizer at the ``metaug`` section's defaults except ``changes``."""
    opts = dict(c=_METAUG.reg_c, detach_thresholds=_METAUG.reg_detach_thresholds, scores=_METAUG.reg_scores)
    return margin_regularizer(orig, aug, mode, **{**opts, **changes})


def thresholds(orig, mode=_METAUG.reg_mode, scores=_METAUG.reg_scores):
    """margin_thresholds at the ``metaug`` section's defaults."""
    return margin_thresholds(orig, mode, scores)


def objective(loss=None, **metaug):
    """The objective of ``MetaugConfig(**metaug)`` with OUCL at the loss defaults (or ``loss``)."""
    return ObjectiveConfig(loss=loss if loss is not None else OUCLLoss(_LOSS), metaug=MetaugConfig(**metaug))


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


def naive_margin_reg_mapped(orig, aug, mode, c):
    """docs/METHODS.md section 4 / paper eq. 4-5 on OUCL's mapped scores q = (s + 1) / 2 (the official code's R),
    one anchor and one score at a time in Python floats. Written out on its own, not as the raw
    reference below plus a factor, so that the factor-2 relation is checked, not assumed."""
    b, kp1 = orig[0].shape
    pos_terms, neg_terms = [], []
    for i in range(b):
        min_pos = min((float(s[i, 0]) + 1) / 2 for s in orig)
        max_neg = max((float(s[i, j]) + 1) / 2 for s in orig for j in range(1, kp1))
        if mode == "large":
            sp, sn = min(min_pos, max_neg), max(min_pos, max_neg)
        elif mode == "small":
            sp, sn = max(min_pos, max_neg), min(min_pos, max_neg)
        else:
            sp = sn = (min_pos + max_neg) / 2
        for a in aug:
            p_hat = (float(a[i, 0]) + 1) / 2
            pos_terms.append(max(0.0, p_hat - sp))
            for j in range(1, kp1):
                n_hat = (float(a[i, j]) + 1) / 2
                neg_terms.append(max(0.0, sn - n_hat))
    return c * sum(pos_terms) / len(pos_terms) + sum(neg_terms) / len(neg_terms)


def naive_margin_reg_raw(orig, aug, mode, c):
    """The same formula on the raw dot products (``reg_scores="raw"``, the behaviour before the
    switch existed)."""
    b, kp1 = orig[0].shape
    pos_terms, neg_terms = [], []
    for i in range(b):
        min_pos = min(float(s[i, 0]) for s in orig)
        max_neg = max(float(s[i, j]) for s in orig for j in range(1, kp1))
        if mode == "large":
            sp, sn = min(min_pos, max_neg), max(min_pos, max_neg)
        elif mode == "small":
            sp, sn = max(min_pos, max_neg), min(min_pos, max_neg)
        else:
            sp = sn = (min_pos + max_neg) / 2
        for a in aug:
            pos_terms.append(max(0.0, float(a[i, 0]) - sp))
            for j in range(1, kp1):
                neg_terms.append(max(0.0, sn - float(a[i, j])))
    return c * sum(pos_terms) / len(pos_terms) + sum(neg_terms) / len(neg_terms)


# --------------------------------------------------------------------------- OUCL
OUCL_CASES = [
    dict(),  # defaults: beta 16, D = 0, a = 1
    dict(beta=8.0),  # the (16 / beta) scale
    dict(margin=0.25),  # D_p = 0.75, D_n = 0.25
    dict(weighting="adaptive"),  # gamma 0.4, phi_dec 6
    dict(weighting="adaptive", gamma=0.1, phi_dec=2.0, margin=0.3, beta=20.0),
]


@pytest.mark.parametrize("opts", OUCL_CASES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default")
@pytest.mark.parametrize("t", [2, 6])
def test_oucl_matches_naive_loop_value_and_gradient(opts, t):
    scores = random_scores(t, b=5, k=7, seed=10 + t, requires_grad=True)
    ours = oucl(scores, **opts)
    ref = naive_oucl(scores, **opts)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad(ours, scores)
    g_ref = torch.autograd.grad(ref, scores)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_oucl_options_change_the_value():
    scores = random_scores(6, b=4, k=9, seed=3)
    base = oucl(scores)
    assert not torch.isclose(base, oucl(scores, margin=0.25))
    assert not torch.isclose(base, oucl(scores, weighting="adaptive"))
    assert not torch.isclose(base, oucl(scores, beta=32.0))


def test_oucl_adaptive_weights_are_detached():
    """With detached weights the gradient is that of the loss with a_p, a_n frozen at their
    values; if the weights were differentiated the gradient would differ."""
    scores = random_scores(2, b=3, k=4, seed=5, requires_grad=True)
    ours = torch.autograd.grad(oucl(scores, weighting="adaptive"), scores)

    def attached(scores):  # weights NOT detached: a different (wrong) gradient
        st = (torch.stack(scores, 1) + 1) / 2
        pos, neg = st[:, :, 0], st[:, :, 1:].reshape(st.shape[0], -1)
        a_p = torch.clamp(1.4 - pos, min=0) / 6
        a_n = torch.clamp(neg + 0.4, min=0) / 6
        l = torch.nn.functional.softplus(torch.logsumexp(16 * a_n * neg, 1) + torch.logsumexp(-16 * a_p * pos, 1))
        return l.mean()

    wrong = torch.autograd.grad(attached(scores), scores)
    torch.testing.assert_close(oucl(scores, weighting="adaptive"), attached(scores))
    assert max((a - b).abs().max() for a, b in zip(ours, wrong)) > 1e-3


def test_oucl_float32_matches_float64():
    scores = random_scores(6, b=16, k=256, seed=1)
    l64 = oucl(scores)
    l32 = oucl([s.float() for s in scores])
    assert l32.dtype == torch.float32
    torch.testing.assert_close(l32.double(), l64, rtol=1e-5, atol=1e-5)


def test_oucl_bad_options():
    s = random_scores(2, 2, 3, 0)
    with pytest.raises(ValueError):
        oucl(s, weighting="circle")
    with pytest.raises(ValueError):
        oucl(s, beta=0.0)
    with pytest.raises(ValueError):
        oucl([s[0], s[1][:, :3]])


# --------------------------------------------------------------------------- CMC losses
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_infonce_matches_naive_loop(temperature):
    scores = random_scores(2, b=6, k=11, seed=7, requires_grad=True)
    ours = infonce_loss(scores, temperature)
    assert ours.item() == pytest.approx(naive_infonce(scores, temperature), rel=1e-12)
    # gradient of CE w.r.t. logits: softmax - onehot, divided by B and T
    (g,) = torch.autograd.grad(ours, scores[0])
    expect = torch.softmax(scores[0].detach() / temperature, 1)
    expect[:, 0] -= 1
    torch.testing.assert_close(g, expect / (temperature * 6))


def test_nce_matches_naive_loop():
    n_data = 500
    first = random_scores(2, b=6, k=9, seed=8)
    later = random_scores(2, b=6, k=9, seed=9)
    z_ref = naive_z(first, n_data, 0.07)
    z = estimate_nce_normalizers(first, n_data, 0.07)
    torch.testing.assert_close(z, torch.tensor(z_ref, dtype=torch.float64), rtol=1e-12, atol=0)
    ours = nce_loss(later, z, n_data, 0.07)
    assert ours.item() == pytest.approx(naive_nce(later, z_ref, n_data, 0.07), rel=1e-12)


def test_nce_module_estimates_constants_once_and_keeps_them():
    n_data = 300
    first = random_scores(2, b=4, k=5, seed=11)
    later = random_scores(2, b=4, k=5, seed=12)
    crit = NCELoss(n_data, num_tensors=2, temperature=0.07).double()
    assert not crit.initialized
    l1 = crit(first)
    z_ref = naive_z(first, n_data, 0.07)
    assert crit.initialized
    assert l1.item() == pytest.approx(naive_nce(first, z_ref, n_data, 0.07), rel=1e-12)
    l2 = crit(later)  # uses the first batch's constants, not re-estimated
    assert l2.item() == pytest.approx(naive_nce(later, z_ref, n_data, 0.07), rel=1e-12)
    assert l2.item() != pytest.approx(naive_nce(later, naive_z(later, n_data, 0.07), n_data, 0.07), rel=1e-6)
    # the constants survive a state_dict round trip (resume)
    other = NCELoss(n_data, num_tensors=2, temperature=0.07).double()
    assert not other.initialized
    other.load_state_dict(crit.state_dict())
    assert other.initialized and torch.equal(other.normalizers, crit.normalizers)
    # loading an unset state makes it estimate again
    crit.load_state_dict(NCELoss(n_data, num_tensors=2, temperature=0.07).double().state_dict())
    assert not crit.initialized
    crit(later)
    torch.testing.assert_close(crit.normalizers, torch.tensor(naive_z(later, n_data, 0.07), dtype=torch.float64))


# --------------------------------------------------------------------------- regulariser R
def _reg_draw(seed: int = 21, requires_grad: bool = False):
    """Originals that look like a trained model's (positives in [0, 1], negatives in
    [-1, 0.6]) and augmented scores anywhere in [-1, 1]; 6 tensors [5, 9] each."""
    orig = random_scores(6, b=5, k=8, seed=seed)
    for o in orig:
        o[:, 0] = (o[:, 0] + 1) / 2
        o[:, 1:] = o[:, 1:] * 0.8 - 0.2
    aug = random_scores(6, b=5, k=8, seed=seed + 1)
    if requires_grad:
        for t in orig + aug:
            t.requires_grad_(True)
    return orig, aug


@pytest.mark.parametrize("mode", ["large", "medium", "small"])
@pytest.mark.parametrize("c", [1e-4, 1.0])
def test_margin_regularizer_matches_naive_loop_on_mapped_scores(mode, c):
    """The default R is eq. 4-5 on (s + 1) / 2, as the official code computes it."""
    orig, aug = _reg_draw()
    ref = naive_margin_reg_mapped(orig, aug, mode, c)
    for ours in (regularizer(orig, aug, mode=mode, c=c),
                 regularizer(orig, aug, mode=mode, c=c, scores="mapped")):
        assert ours.item() == pytest.approx(ref, rel=1e-12, abs=1e-15)
    # both hinges are active in this draw (otherwise c, or the negative part, would be untested)
    assert naive_margin_reg_mapped(orig, aug, mode, 1.0) != pytest.approx(naive_margin_reg_mapped(orig, aug, mode, 0.0))
    assert naive_margin_reg_mapped(orig, aug, mode, 0.0) > 0


@pytest.mark.parametrize("mode", ["large", "medium", "small"])
@pytest.mark.parametrize("c", [1e-4, 1.0])
def test_margin_regularizer_raw_switch_is_the_old_formula(mode, c):
    orig, aug = _reg_draw()
    ours = regularizer(orig, aug, mode=mode, c=c, scores="raw")
    assert ours.item() == pytest.approx(naive_margin_reg_raw(orig, aug, mode, c), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("mode", ["large", "medium", "small"])
@pytest.mark.parametrize("detach", [False, True])
def test_margin_regularizer_mapped_is_half_of_raw_value_and_gradient(mode, detach):
    """[(p^+1)/2 - (sigma+ +1)/2]_+ = [p^ - sigma+]_+ / 2 (likewise for negatives), so the mapped R
    and its gradients are exactly half the raw ones."""
    orig, aug = _reg_draw(seed=51, requires_grad=True)
    mapped = regularizer(orig, aug, mode=mode, c=0.3, detach_thresholds=detach)
    raw = regularizer(orig, aug, mode=mode, c=0.3, detach_thresholds=detach, scores="raw")
    assert mapped.item() > 0
    torch.testing.assert_close(mapped, raw / 2, rtol=1e-13, atol=1e-15)
    o_val, a_val = [t.detach() for t in orig], [t.detach() for t in aug]
    assert naive_margin_reg_mapped(o_val, a_val, mode, 0.3) == pytest.approx(
        naive_margin_reg_raw(o_val, a_val, mode, 0.3) / 2, rel=1e-12)
    g_mapped = torch.autograd.grad(mapped, orig + aug, allow_unused=True)
    g_raw = torch.autograd.grad(raw, orig + aug, allow_unused=True)
    assert sum(float(g.abs().sum()) for g in g_raw if g is not None) > 0
    for gm, gr in zip(g_mapped, g_raw):
        assert (gm is None) == (gr is None)
        if gm is not None:
            torch.testing.assert_close(gm, gr / 2, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("mode", ["large", "medium", "small"])
def test_margin_thresholds_on_mapped_scores(mode):
    orig = random_scores(3, b=7, k=5, seed=61)
    sp, sn = thresholds(orig, mode)
    sp_raw, sn_raw = thresholds(orig, mode, scores="raw")
    torch.testing.assert_close(sp, (sp_raw + 1) / 2, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(sn, (sn_raw + 1) / 2, rtol=1e-14, atol=1e-15)
    # and against the thresholds read off the mapped scores directly
    mapped = [(s + 1) / 2 for s in orig]
    torch.testing.assert_close((sp, sn), thresholds(mapped, mode, scores="raw"))


def test_margin_regularizer_bad_scores_option():
    orig, aug = _reg_draw()
    with pytest.raises(ValueError, match="scores"):
        regularizer(orig, aug, scores="halved")
    with pytest.raises(ValueError, match="scores"):
        thresholds(orig, scores="affine")


def test_margin_modes_differ_and_thresholds_order():
    orig = random_scores(2, b=8, k=6, seed=31)
    lo_p, hi_n = thresholds(orig, "large")
    hi_p, lo_n = thresholds(orig, "small")
    mid_p, mid_n = thresholds(orig, "medium")
    assert torch.all(lo_p <= hi_n) and torch.equal(lo_p, lo_n) and torch.equal(hi_p, hi_n)
    torch.testing.assert_close(mid_p, (lo_p + hi_p) / 2)
    assert torch.equal(mid_p, mid_n)
    aug = random_scores(2, b=8, k=6, seed=32)
    values = {m: regularizer(orig, aug, m, c=1.0).item() for m in ("large", "medium", "small")}
    assert len(set(values.values())) == 3
    values_raw = {m: regularizer(orig, aug, m, c=1.0, scores="raw").item() for m in ("large", "medium", "small")}
    assert len(set(values_raw.values())) == 3


def test_margin_regularizer_threshold_gradient_option():
    orig = random_scores(2, b=4, k=5, seed=41, requires_grad=True)
    aug = random_scores(2, b=4, k=5, seed=42, requires_grad=True)
    g_free = torch.autograd.grad(regularizer(orig, aug, c=1.0), orig)
    g_det = torch.autograd.grad(regularizer(orig, aug, c=1.0, detach_thresholds=True), orig,
                                allow_unused=True)
    assert sum(g.abs().sum() for g in g_free) > 0
    assert all(g is None or g.abs().sum() == 0 for g in g_det)


# --------------------------------------------------------------------------- objective
VIEWS3 = ("l", "ab", "ori")


def _setup(views=VIEWS3, b=6, k=7, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    bank = MemoryBank(views, n, dim=16, num_negatives=k, generator=g, scoring="gather").double()
    idx = torch.randperm(n, generator=g)[:b]
    sidx = bank.sample(idx, generator=g)
    z = {v: torch.nn.functional.normalize(torch.randn(b, 16, generator=g, dtype=torch.float64), dim=1) for v in views}
    zh = {v: torch.nn.functional.normalize(torch.randn(b, 16, generator=g, dtype=torch.float64), dim=1) for v in views}
    return bank, idx, sidx, z, zh


def _direct_loss(bank, z, sidx, opts=OUCLLoss(_LOSS)):
    """L(z): score every pair from scratch with the given anchors and apply OUCL."""
    s = bank.scores(z, sidx)
    return opts([s[p] for p in bank.pairs])


def test_aug_terms_as_the_objective_resolves_them():
    """The objective resolves ``metaug.aug_terms`` with the config's parser: view sets given as
    sequences of names (or "a+b" strings) come back in the model's view order."""
    assert expand_aug_terms("code", VIEWS3) == (("l",), ("ab",), ("ori",), ("l", "ab", "ori"))
    assert expand_aug_terms("paper", VIEWS3) == (("l", "ab", "ori"),)
    assert expand_aug_terms("code", ("l", "ab")) == (("l",), ("ab",), ("l", "ab"))
    assert expand_aug_terms("none", VIEWS3) == ()
    assert expand_aug_terms([["ab", "l"], "ori"], VIEWS3) == (("l", "ab"), ("ori",))
    with pytest.raises(ValueError):
        expand_aug_terms([["rgb"]], VIEWS3)
    with pytest.raises(ValueError):
        expand_aug_terms("all", VIEWS3)


@pytest.mark.parametrize("opts", [OUCLLoss(_LOSS), OUCLLoss(LossConfig(margin=0.2, weighting="adaptive"))])
def test_objective_code_terms_equal_explicit_recomputation(opts):
    bank, idx, sidx, z, zh = _setup()
    for t in list(z.values()) + list(zh.values()):
        t.requires_grad_(True)
    before = bank.bank.clone()
    cfg = objective(opts, delta=0.3, alpha=0.7, reg_where="mag")
    total, logs = metaug_objective(z, zh, bank, sidx, cfg, phase="encoder")
    # code: L(z_l,z_ab,z_ori) + delta*[L(^l,ab,ori) + L(l,^ab,ori) + L(l,ab,^ori) + L(^l,^ab,^ori)]
    terms = [
        {"l": zh["l"], "ab": z["ab"], "ori": z["ori"]},
        {"l": z["l"], "ab": zh["ab"], "ori": z["ori"]},
        {"l": z["l"], "ab": z["ab"], "ori": zh["ori"]},
        dict(zh),
    ]
    expect = _direct_loss(bank, z, sidx, opts) + 0.3 * sum(_direct_loss(bank, t, sidx, opts) for t in terms)
    torch.testing.assert_close(total, expect, rtol=1e-13, atol=1e-13)
    assert set(logs) == {"loss_orig", "loss_aug/l", "loss_aug/ab", "loss_aug/ori", "loss_aug/l+ab+ori", "total"}
    torch.testing.assert_close(logs["loss_aug/ab"], _direct_loss(bank, terms[1], sidx, opts))
    total.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in list(z.values()) + list(zh.values()))
    assert torch.equal(bank.bank, before)  # the objective never writes to the bank


def test_objective_paper_term_and_regulariser_placement():
    bank, idx, sidx, z, zh = _setup(seed=4)
    s_orig = bank.scores(z, sidx)
    s_aug = bank.scores(zh, sidx)
    reg = regularizer([s_orig[p] for p in bank.pairs], [s_aug[p] for p in bank.pairs], "medium", c=0.5)
    base = _direct_loss(bank, z, sidx) + 0.25 * _direct_loss(bank, zh, sidx)
    for where, phase, has_reg in [("mag", "encoder", False), ("mag", "mag", True), ("both", "encoder", True),
                                  ("both", "mag", True), ("off", "mag", False), ("off", "encoder", False)]:
        cfg = objective(delta=0.25, alpha=2.0, aug_terms="paper", reg_mode="medium", reg_c=0.5, reg_where=where)
        total, logs = metaug_objective(z, zh, bank, sidx, cfg, phase=phase)
        expect = base + 2.0 * reg if has_reg else base
        torch.testing.assert_close(total, expect, rtol=1e-13, atol=1e-13)
        assert ("reg" in logs) == has_reg


@pytest.mark.parametrize("reg_scores", ["mapped", "raw"])
def test_objective_passes_reg_scores_to_r(reg_scores):
    bank, idx, sidx, z, zh = _setup(seed=6)
    s_orig, s_aug = bank.scores(z, sidx), bank.scores(zh, sidx)
    orig, aug = [s_orig[p] for p in bank.pairs], [s_aug[p] for p in bank.pairs]
    cfg = objective(delta=0.25, alpha=2.0, aug_terms="paper", reg_c=0.5, reg_scores=reg_scores)
    total, logs = metaug_objective(z, zh, bank, sidx, cfg, phase="mag")
    reg = regularizer(orig, aug, c=0.5, scores=reg_scores)
    ref = (naive_margin_reg_mapped if reg_scores == "mapped" else naive_margin_reg_raw)(orig, aug, "large", 0.5)
    assert logs["reg"].item() == pytest.approx(ref, rel=1e-12)
    torch.testing.assert_close(total, _direct_loss(bank, z, sidx) + 0.25 * _direct_loss(bank, zh, sidx) + 2.0 * reg,
                               rtol=1e-13, atol=1e-13)
    # an unknown reg_scores never reaches the objective: the metaug section refuses it
    from metaug_features.errors import ConfigError
    with pytest.raises(ConfigError, match="'metaug.reg_scores'"):
        objective(reg_scores="halved")


def test_reg_scores_config_option_default_override_and_old_configs():
    """metaug.reg_scores: default "mapped", settable by override, checked, reaches the objective;
    a saved config from before the key existed (checkpoints store ``to_dict``) still loads."""
    from metaug_features.errors import ConfigError
    from metaug_training.config import TrainConfig, diff_keys, load_config
    from metaug_training.methods import objective_config

    default = TrainConfig()
    assert default.metaug.reg_scores == "mapped" and objective_config(default).metaug.reg_scores == "mapped"
    raw = load_config(None, ["metaug.reg_scores=raw"])
    assert diff_keys(default, raw) == ["metaug.reg_scores"]
    assert objective_config(raw).metaug.reg_scores == "raw"
    assert TrainConfig.from_dict(raw.to_dict()) == raw
    with pytest.raises(ConfigError, match="'metaug.reg_scores'"):
        load_config(None, ["metaug.reg_scores=halved"])
    old = default.to_dict()
    del old["metaug"]["reg_scores"]
    assert TrainConfig.from_dict(old) == default


def test_objective_without_mag_and_with_custom_loss():
    bank, idx, sidx, z, zh = _setup(views=("l", "ab"), seed=5)
    total, logs = metaug_objective(z, None, bank, sidx, objective())
    torch.testing.assert_close(total, _direct_loss(bank, z, sidx))
    cfg = objective(lambda s: infonce_loss(s, 0.1), delta=1.0, aug_terms=[("ab",)], reg_where="off")
    total, _ = metaug_objective(z, zh, bank, sidx, cfg)
    s0 = bank.scores(z, sidx)
    s1 = bank.scores({"l": z["l"], "ab": zh["ab"]}, sidx)
    expect = infonce_loss([s0[p] for p in bank.pairs], 0.1) + infonce_loss([s1[p] for p in bank.pairs], 0.1)
    torch.testing.assert_close(total, expect)


def test_objective_defaults_match_spec():
    cfg = ObjectiveConfig.from_sections(LossConfig(), MetaugConfig()).metaug
    assert (cfg.delta, cfg.alpha, cfg.aug_terms, cfg.reg_mode, cfg.reg_c, cfg.reg_where) == (
        1e-5, 1e-11, "code", "large", 1e-4, "mag")
    assert cfg.reg_scores == "mapped"  # the official code's R, on (s + 1) / 2
    o = ObjectiveConfig.from_sections(LossConfig(), MetaugConfig()).loss.options
    assert (o.beta, o.margin, o.weighting, o.gamma, o.phi_dec) == (16.0, None, "none", 0.4, 6.0)


@pytest.mark.parametrize("fn, options", [
    (oucl_loss, ("beta", "margin", "weighting", "gamma", "phi_dec")),
    (margin_regularizer, ("mode", "c", "detach_thresholds", "scores")),
    (margin_thresholds, ("mode", "scores")),
    (infonce_loss, ("temperature",)),
    (NCELoss, ("temperature",)),
    (ObjectiveConfig, ("loss", "metaug")),
])
def test_loss_options_have_no_defaults_of_their_own(fn, options):
    """The config sections are the single source of the defaults: the functions that compute
    with them take every option explicitly (an option left out is a TypeError, not a silently
    repeated default)."""
    import inspect

    params = inspect.signature(fn).parameters
    assert all(params[name].default is inspect.Parameter.empty for name in options)
