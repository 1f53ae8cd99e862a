"""The switches between the paper and the official code's MetAug (the table of docs/METHODS.md
section 11; issue "MetAug as the paper states it"): each changes exactly what it names, checked against
small references written here from the description (naive loops over anchors and memory rows,
sequential bank writes, a hand-unrolled meta step).

- ``metaug.reg_blocks``: R over the augmented blocks, or over those and the original-only ones;
- ``metaug.negatives``: one draw per step, or a fresh draw per scoring call;
- ``metaug.bank_writes``: one write per iteration, or the code's three;
- ``metaug.inner_lr_follows_encoder``: eta_in = the encoder's scheduled lr (paper eq. 3).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from metaug_features.errors import ConfigError
from metaug_training.config import MetaugConfig, expand_aug_terms, load_config
from metaug_training.memory_bank import MemoryBank
from metaug_training.meta import metaug_meta_step
from metaug_training.methods import meta_inner_lr
from metaug_training.objective import metaug_objective

from _loss_references import naive_margin_reg_mapped, naive_oucl, objective
from test_train_meta import ETA, _setup as _meta_setup, tiny_functional_embed

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VIEWS3 = ("l", "ab", "ori")
#: Weights far above float64 noise, every term present, R in the encoder loss too.
CFG = dict(delta=0.5, alpha=0.3, reg_c=1.0, reg_where="both")


def _setup(b=5, k=6, n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    bank = MemoryBank(VIEWS3, n, dim=8, num_negatives=k, generator=g, scoring="gather").double()
    idx = torch.randperm(n, generator=g)[:b]
    sidx = bank.sample(idx, generator=g)
    z = {v: F.normalize(torch.randn(b, 8, generator=g, dtype=torch.float64), dim=1) for v in VIEWS3}
    zh = {v: F.normalize(torch.randn(b, 8, generator=g, dtype=torch.float64), dim=1) for v in VIEWS3}
    return bank, idx, sidx, z, zh


def naive_scores(anchors: dict, bank: MemoryBank, sidx: torch.Tensor) -> dict:
    """Score of every ordered pair, one anchor and one memory row at a time:
    ``out[(x, y)][i, j] = <anchors[x][i], bank_y[sidx[i, j]]>``."""
    out = {}
    for x, y in bank.pairs:
        mem = bank.view_bank(y)
        rows = [[torch.dot(anchors[x][i], mem[int(sidx[i, j])]) for j in range(sidx.shape[1])]
                for i in range(sidx.shape[0])]
        out[(x, y)] = torch.stack([torch.stack(r) for r in rows])
    return out


def _blocks(scores: dict, bank: MemoryBank) -> list:
    return [scores[p] for p in bank.pairs]


# --------------------------------------------------------------------------- reg_blocks
def test_reg_blocks_all_adds_the_original_blocks_to_r_and_nothing_else():
    bank, idx, sidx, z, zh = _setup()
    orig, aug = naive_scores(z, bank, sidx), naive_scores(zh, bank, sidx)
    _, only_aug = metaug_objective(z, zh, bank, sidx, objective(**CFG), phase="mag")
    _, all_blocks = metaug_objective(z, zh, bank, sidx, objective(**CFG, reg_blocks="all"), phase="mag")
    want_aug = naive_margin_reg_mapped(_blocks(orig, bank), _blocks(aug, bank), "large", 1.0)
    want_all = naive_margin_reg_mapped(_blocks(orig, bank), _blocks(aug, bank) + _blocks(orig, bank), "large", 1.0)
    assert float(only_aug["reg"]) == pytest.approx(want_aug, rel=1e-12)
    assert float(all_blocks["reg"]) == pytest.approx(want_all, rel=1e-12)
    assert abs(want_all - want_aug) > 1e-3  # the switch matters on these scores
    # every loss term is untouched
    for key in only_aug:
        if key not in ("reg", "total"):
            assert torch.equal(only_aug[key], all_blocks[key]), key


# --------------------------------------------------------------------------- negatives
def test_per_call_negatives_give_every_further_scoring_call_its_own_draw():
    bank, idx, sidx, z, zh = _setup(seed=1)
    g = torch.Generator().manual_seed(99)
    draws = [bank.sample(idx, generator=g) for _ in range(6)]
    taken = []

    def draw():
        taken.append(draws[len(taken)])
        return taken[-1]

    cfg = objective(**CFG, reg_blocks="all")
    total, logs = metaug_objective(z, zh, bank, sidx, cfg, phase="encoder", draw=draw)
    terms = expand_aug_terms("code", VIEWS3)
    # one draw per augmented term, one for R's augmented blocks, one for its original blocks
    assert len(taken) == len(terms) + 2

    orig = naive_scores(z, bank, sidx)  # the original term keeps the step's draw
    l_orig = naive_oucl(_blocks(orig, bank))
    aug_losses = []
    for term, d in zip(terms, draws):
        anchors = {v: (zh[v] if v in term else z[v]) for v in VIEWS3}
        aug_losses.append(naive_oucl(_blocks(naive_scores(anchors, bank, d), bank)))
        assert float(logs["loss_aug/" + "+".join(term)]) == pytest.approx(float(aug_losses[-1]), rel=1e-10)
    reg = naive_margin_reg_mapped(_blocks(orig, bank),
                                  _blocks(naive_scores(zh, bank, draws[4]), bank)
                                  + _blocks(naive_scores(z, bank, draws[5]), bank), "large", 1.0)
    want = float(l_orig) + 0.5 * sum(float(t) for t in aug_losses) + 0.3 * reg
    assert float(logs["loss_orig"]) == pytest.approx(float(l_orig), rel=1e-12)
    assert float(total) == pytest.approx(want, rel=1e-10)


def test_per_call_with_the_step_draw_every_time_is_per_step():
    """Only the draws change: handing every call the step's own draw gives per_step's numbers."""
    bank, idx, sidx, z, zh = _setup(seed=2)
    cfg = objective(**CFG, reg_blocks="all")
    ref, ref_logs = metaug_objective(z, zh, bank, sidx, cfg, phase="mag")
    got, got_logs = metaug_objective(z, zh, bank, sidx, cfg, phase="mag", draw=lambda: sidx)
    torch.testing.assert_close(got, ref, rtol=1e-13, atol=0)
    for k in ref_logs:
        torch.testing.assert_close(got_logs[k], ref_logs[k], rtol=1e-13, atol=0)


# --------------------------------------------------------------------------- bank writes
@pytest.mark.parametrize("grad_mode", ["jvp", "double_backward"])
def test_code_bank_writes_are_the_inner_then_the_fast_weight_features(grad_mode):
    """metaug_meta_step with a writer: the second write is z = f(theta'; x) after the inner loss
    scored, the third z* = f(theta*; x) after the MAG loss scored, and the MAG loss sees the bank
    after the second write. Reference: the meta step unrolled by hand on explicit bank copies."""
    enc, mags, bank, idx, sidx, x = _meta_setup(seed=3)
    cfg = objective(**CFG)
    start = copy.deepcopy(bank)
    written = []

    def write(z):
        written.append(z)
        bank.update(z, idx, in_place=False)

    grads, loss, _ = metaug_meta_step(enc, mags, x, bank, sidx, cfg, inner_lr=ETA, grad_mode=grad_mode,
                                      write_bank=write)

    ref_mags = copy.deepcopy(mags)
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in enc.named_parameters()}
    z = tiny_functional_embed(theta, x)
    l_in = metaug_objective(z, {v: ref_mags[v](z[v]) for v in z}, start, sidx, cfg, phase="encoder")[0]
    g = torch.autograd.grad(l_in, list(theta.values()), create_graph=True)
    after_second = copy.deepcopy(start)
    after_second.update({v: t.detach() for v, t in z.items()}, idx)
    z_star = tiny_functional_embed({n: theta[n] - ETA * gi for n, gi in zip(theta, g)}, x)
    l_out = metaug_objective(z_star, {v: ref_mags[v](z_star[v]) for v in z_star}, after_second, sidx, cfg,
                             phase="mag")[0]
    ref = dict(zip([n for n, _ in ref_mags.named_parameters()],
                   torch.autograd.grad(l_out, list(ref_mags.parameters()))))
    after_third = copy.deepcopy(after_second)
    after_third.update({v: t.detach() for v, t in z_star.items()}, idx)

    assert len(written) == 2
    for v in z:
        torch.testing.assert_close(written[0][v], z[v].detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(written[1][v], z_star[v].detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bank.bank, after_third.bank, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(loss, l_out.detach(), rtol=1e-12, atol=1e-14)
    for n in ref:
        torch.testing.assert_close(grads[n], ref[n], rtol=1e-9, atol=1e-12)
    # without the writes the MAG gradient is another one (the second write is seen by the MAG loss)
    plain, _, _ = metaug_meta_step(enc, mags, x, copy.deepcopy(start), sidx, cfg, inner_lr=ETA, grad_mode=grad_mode)
    assert max(float((plain[n] - grads[n]).abs().max()) for n in ref) > 1e-6


def test_out_of_place_update_keeps_the_old_memory_for_graphs_that_hold_it():
    bank, idx, sidx, z, _ = _setup()
    old = bank.bank
    before = old.clone()
    bank.update(z, idx, in_place=False)
    assert bank.bank is not old and torch.equal(old, before)
    in_place = copy.deepcopy(MemoryBank(VIEWS3, 30, dim=8, num_negatives=6, scoring="gather").double())
    in_place.bank.copy_(before)
    in_place.update(z, idx)
    assert torch.equal(bank.bank, in_place.bank)


# --------------------------------------------------------------------------- inner lr
def test_inner_lr_follows_the_encoder_lr_only_when_asked():
    state = SimpleNamespace(opt=SimpleNamespace(param_groups=[{"lr": 0.0123}]))
    fixed = load_config("cifar10-metaug")
    follows = load_config("cifar10-metaug", ["metaug.inner_lr_follows_encoder=true"])
    assert meta_inner_lr(fixed, state) == fixed.metaug.inner_lr == 1e-3
    assert meta_inner_lr(follows, state) == 0.0123


# --------------------------------------------------------------------------- config
def test_switch_defaults_are_this_projects_and_bad_values_name_the_key():
    d = MetaugConfig()
    assert (d.reg_blocks, d.bank_writes, d.negatives, d.inner_lr_follows_encoder) == \
        ("augmented", "once", "per_step", False)
    for key, bad in (("reg_blocks", "twelve"), ("bank_writes", "thrice"), ("negatives", "fresh")):
        with pytest.raises(ConfigError, match=f"metaug.{key}"):
            MetaugConfig(**{key: bad})
