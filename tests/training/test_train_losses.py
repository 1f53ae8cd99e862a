"""Losses (OUCL, InfoNCE / NCE, the margin regulariser R) against naive loops transcribed from
docs/METHODS.md section 4 (tests/_loss_references.py). The MetAug objective that combines them is
tested in tests/training/test_train_objective.py."""

from __future__ import annotations

import pytest
import torch

from metaug_training.losses import (
    NCELoss,
    estimate_nce_normalizers,
    infonce_loss,
    nce_loss,
)

from _loss_references import (
    naive_infonce,
    naive_margin_reg_mapped,
    naive_margin_reg_raw,
    naive_nce,
    naive_oucl,
    naive_z,
    oucl,
    random_scores,
    regularizer,
    thresholds,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
