"""Memory bank (docs/METHODS.md section 3): sampling, the three scoring modes, and the momentum update."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from metaug_training.memory_bank import MemoryBank, view_pairs

VIEWS3 = ("l", "ab", "ori")


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def unit(b: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=1)


def test_defaults_and_init_rows_are_unit_norm():
    bank = MemoryBank(("l", "ab"), num_samples=50, dim=128)
    assert (bank.num_negatives, bank.momentum, bank.scoring) == (4096, 0.5, "full")
    assert bank.bank.shape == (2, 50, 128) and bank.bank.dtype == torch.float32
    torch.testing.assert_close(bank.bank.norm(dim=-1), torch.ones(2, 50))
    assert not bank.bank.requires_grad
    assert "bank" in bank.state_dict()


def test_view_pair_order():
    assert view_pairs(VIEWS3) == [("l", "ab"), ("ab", "l"), ("l", "ori"), ("ori", "l"), ("ab", "ori"), ("ori", "ab")]
    assert view_pairs(("l", "ab")) == [("l", "ab"), ("ab", "l")]


def test_sample_positive_first_and_negatives_in_range():
    bank = MemoryBank(VIEWS3, num_samples=37, dim=8, num_negatives=50)
    idx = torch.tensor([0, 36, 5, 5, 12])
    s = bank.sample(idx, generator=torch.Generator().manual_seed(0))
    assert s.shape == (5, 51) and s.dtype == torch.long
    assert torch.equal(s[:, 0], idx)
    assert int(s[:, 1:].min()) >= 0 and int(s[:, 1:].max()) < 37
    # independent negatives per anchor (not shared)
    assert not torch.equal(s[0, 1:], s[1, 1:])
    # same generator seed -> same draw
    s2 = bank.sample(idx, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, s2)


def test_negatives_are_uniform_with_replacement():
    n = 10
    bank = MemoryBank(("l", "ab"), num_samples=n, dim=4, num_negatives=5000)
    s = bank.sample(torch.arange(4), generator=torch.Generator().manual_seed(1))
    neg = s[:, 1:].flatten()
    counts = torch.bincount(neg, minlength=n).numpy()
    assert counts.sum() == 20000 and (counts > 0).all()
    # chi-square goodness of fit to uniform (seeded draw, so deterministic)
    assert chisquare(counts).pvalue > 1e-3
    # with replacement: K > N is allowed and values repeat within a row
    assert len(torch.unique(s[0, 1:])) == n


def test_sample_rejects_bad_indices():
    bank = MemoryBank(("l", "ab"), num_samples=10, dim=4, num_negatives=3)
    with pytest.raises(ValueError):
        bank.sample(torch.tensor([0, 10]))
    with pytest.raises(ValueError):
        bank.sample(torch.tensor([[0, 1]]))
    with pytest.raises(ValueError):
        bank.sample(torch.tensor([0.0, 1.0]))


def naive_scores(bank: MemoryBank, z: dict, sidx: torch.Tensor) -> dict:
    """out[(x,y)][i,j] = sum_c z[x][i,c] * bank[y][sidx[i,j], c], element by element."""
    out = {}
    for x, y in view_pairs(bank.views):
        mem = bank.view_bank(y)
        b, kp1 = sidx.shape
        t = torch.empty(b, kp1, dtype=mem.dtype)
        for i in range(b):
            for j in range(kp1):
                t[i, j] = sum(float(z[x][i, c]) * float(mem[sidx[i, j], c]) for c in range(bank.dim))
        out[(x, y)] = t
    return out


@pytest.mark.parametrize("mode", ["full", "gather", "shared"])
def test_scores_match_naive_dot_products(mode):
    g = torch.Generator().manual_seed(3)
    bank = MemoryBank(VIEWS3, num_samples=20, dim=6, num_negatives=5, scoring=mode, generator=g).double()
    idx = torch.tensor([3, 7, 19, 0])
    sidx = bank.sample(idx)
    if mode == "shared":
        assert torch.equal(sidx[:, 1:], sidx[:1, 1:].expand(4, 5))
    z = {v: unit(4, 6, i) for i, v in enumerate(VIEWS3)}
    ours = bank.scores(z, sidx)
    assert list(ours) == view_pairs(VIEWS3)
    ref = naive_scores(bank, z, sidx)
    for p in ours:
        torch.testing.assert_close(ours[p], ref[p], rtol=0, atol=1e-14)
    # column 0 is the positive: the anchor against its own slot in the other view's bank
    torch.testing.assert_close(ours[("l", "ab")][:, 0], (z["l"] * bank.view_bank("ab")[idx]).sum(1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_full_and_gather_modes_identical(dtype):
    g = torch.Generator().manual_seed(4)
    full = MemoryBank(VIEWS3, num_samples=500, dim=128, num_negatives=64, scoring="full", generator=g).to(dtype)
    gather = MemoryBank(VIEWS3, num_samples=500, dim=128, num_negatives=64, scoring="gather").to(dtype)
    gather.load_state_dict(full.state_dict())
    idx = torch.randperm(500, generator=g)[:16]
    sidx = full.sample(idx)
    z = {v: unit(16, 128, 10 + i, dtype).requires_grad_(True) for i, v in enumerate(VIEWS3)}
    a, b = full.scores(z, sidx), gather.scores(z, sidx)
    tol = 1e-14 if dtype == torch.float64 else 2e-6
    for p in a:
        torch.testing.assert_close(a[p], b[p], rtol=0, atol=tol)
    # and their gradients w.r.t. the anchors agree
    w = torch.randn(16, 65, generator=g, dtype=dtype)
    ga = torch.autograd.grad(sum((a[p] * w).sum() for p in a), list(z.values()))
    gb = torch.autograd.grad(sum((b[p] * w).sum() for p in b), list(z.values()))
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=0, atol=10 * tol)


def test_shared_mode_rejects_unshared_negatives():
    bank = MemoryBank(("l", "ab"), num_samples=30, dim=4, num_negatives=6, scoring="shared")
    other = MemoryBank(("l", "ab"), num_samples=30, dim=4, num_negatives=6, scoring="full")
    sidx = other.sample(torch.tensor([1, 2, 3]), generator=torch.Generator().manual_seed(0))
    z = {v: unit(3, 4, 0, torch.float32) for v in ("l", "ab")}
    with pytest.raises(ValueError, match="shared"):
        bank.scores(z, sidx)


def test_scores_differentiable_wrt_anchors_only_and_bank_untouched():
    bank = MemoryBank(("l", "ab"), num_samples=40, dim=8, num_negatives=10)
    before = bank.bank.clone()
    z = {v: unit(5, 8, i, torch.float32).requires_grad_(True) for i, v in enumerate(("l", "ab"))}
    s = bank.scores(z, bank.sample(torch.arange(5)))
    sum(t.sum() for t in s.values()).backward()
    assert z["l"].grad is not None and z["l"].grad.abs().sum() > 0
    assert bank.bank.grad is None and torch.equal(bank.bank, before)


def test_scores_reject_wrong_inputs():
    bank = MemoryBank(("l", "ab"), num_samples=40, dim=8, num_negatives=10)
    sidx = bank.sample(torch.arange(5))
    with pytest.raises(ValueError):
        bank.scores({"l": torch.zeros(5, 8)}, sidx)  # missing view
    with pytest.raises(ValueError):
        bank.scores({"l": torch.zeros(5, 8), "ab": torch.zeros(5, 7)}, sidx)  # wrong dim
    with pytest.raises(ValueError):
        bank.scores({"l": torch.zeros(5, 8), "ab": torch.zeros(5, 8)}, sidx[:, :5])  # wrong K


def test_update_formula_exact_and_rows_normalised():
    g = torch.Generator().manual_seed(5)
    bank = MemoryBank(VIEWS3, num_samples=12, dim=5, momentum=0.5, generator=g).double()
    before = bank.bank.clone()
    idx = torch.tensor([4, 0, 11])
    z = {v: torch.randn(3, 5, generator=g, dtype=torch.float64).requires_grad_(True) for v in VIEWS3}
    bank.update(z, idx)
    for vi, v in enumerate(VIEWS3):
        for row in range(12):
            if row in idx.tolist():
                i = idx.tolist().index(row)
                mixed = [0.5 * float(before[vi, row, c]) + 0.5 * float(z[v][i, c].detach()) for c in range(5)]
                norm = sum(m * m for m in mixed) ** 0.5
                expect = torch.tensor([m / norm for m in mixed], dtype=torch.float64)
                torch.testing.assert_close(bank.bank[vi, row], expect, rtol=0, atol=1e-15)
            else:
                assert torch.equal(bank.bank[vi, row], before[vi, row])
    torch.testing.assert_close(bank.bank.norm(dim=-1), torch.ones(3, 12, dtype=torch.float64))


def test_update_momentum_is_used():
    bank = MemoryBank(("l", "ab"), num_samples=4, dim=3, momentum=0.9).double()
    bank.bank.zero_()
    bank.bank[:, :, 0] = 1.0
    z = {v: torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64) for v in ("l", "ab")}
    bank.update(z, torch.tensor([2]))
    expect = F.normalize(torch.tensor([0.9, 0.1, 0.0], dtype=torch.float64), dim=0)
    torch.testing.assert_close(bank.bank[0, 2], expect)


def test_update_with_duplicate_indices_is_deterministic_first_wins():
    bank = MemoryBank(("l", "ab"), num_samples=6, dim=4).double()
    before = bank.bank.clone()
    idx = torch.tensor([3, 1, 3])
    z = {v: unit(3, 4, 7 + i) for i, v in enumerate(("l", "ab"))}
    bank.update(z, idx)
    for vi, v in enumerate(("l", "ab")):
        expect = F.normalize(0.5 * before[vi, 3] + 0.5 * z[v][0], dim=0)
        torch.testing.assert_close(bank.bank[vi, 3], expect)


def test_bad_construction():
    with pytest.raises(ValueError):
        MemoryBank(("l",), 10, 4)
    with pytest.raises(ValueError):
        MemoryBank(("l", "ab"), 10, 4, scoring="fast")
    with pytest.raises(ValueError):
        MemoryBank(("l", "ab"), 10, 4, momentum=1.0)


@pytest.mark.parametrize("mode", ["full", "gather", "shared"])
def test_scores_many_equals_separate_calls(mode):
    g = torch.Generator().manual_seed(8)
    bank = MemoryBank(VIEWS3, num_samples=60, dim=16, num_negatives=9, scoring=mode, generator=g).double()
    sidx = bank.sample(torch.arange(5))
    z = {v: unit(5, 16, 20 + i) for i, v in enumerate(VIEWS3)}
    zh = {"ab": unit(5, 16, 30), "ori": unit(5, 16, 31)}  # a subset of views
    s_z, s_zh = bank.scores_many([z, zh], sidx)
    ref = bank.scores(z, sidx)
    assert list(s_z) == list(ref)
    for p in ref:
        torch.testing.assert_close(s_z[p], ref[p], rtol=0, atol=1e-14)
    full_h = bank.scores({"l": z["l"], **zh}, sidx)
    assert list(s_zh) == [p for p in view_pairs(VIEWS3) if p[0] in zh]
    for p in s_zh:
        torch.testing.assert_close(s_zh[p], full_h[p], rtol=0, atol=1e-14)
    with pytest.raises(ValueError):
        bank.scores_many([{"rgb": z["l"]}], sidx)


def test_first_occurrence_helper_matches_loop():
    from metaug_training.memory_bank import _first_occurrence

    g = torch.Generator().manual_seed(9)
    for _ in range(20):
        idx = torch.randint(0, 7, (15,), generator=g)
        vals = idx.tolist()
        expect = [vals.index(v) for v in vals]
        assert _first_occurrence(idx).tolist() == expect
    assert _first_occurrence(torch.tensor([], dtype=torch.long)).numel() == 0


def test_update_with_many_duplicates_matches_loop():
    bank = MemoryBank(("l", "ab"), num_samples=5, dim=3).double()
    before = bank.bank.clone()
    idx = torch.tensor([2, 4, 2, 2, 0, 4])
    z = {v: unit(6, 3, 40 + i) for i, v in enumerate(("l", "ab"))}
    bank.update(z, idx)
    for vi, v in enumerate(("l", "ab")):
        for row in range(5):
            if row in idx.tolist():
                i = idx.tolist().index(row)
                expect = F.normalize(0.5 * before[vi, row] + 0.5 * z[v][i], dim=0)
                torch.testing.assert_close(bank.bank[vi, row], expect)
            else:
                assert torch.equal(bank.bank[vi, row], before[vi, row])


def test_sampled_scores_against_naive_loop_and_gradients_of_any_order():
    """The fast "full" kernel (GEMM + gather forward, fused gather-and-sum backward) equals
    S[i, j] = sum_k a[i, k] mem[idx[i, j], k], and its first and second derivatives match
    finite differences (the meta step differentiates through its backward)."""
    from metaug_training.memory_bank import sampled_scores

    g = torch.Generator().manual_seed(11)
    mem = F.normalize(torch.randn(40, 5, generator=g, dtype=torch.float64), dim=1)
    idx = torch.randint(0, 40, (3, 7), generator=g)
    idx[0, 3] = idx[0, 1]  # a duplicate negative in one row
    a = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    naive = torch.tensor([[sum(float(a.detach()[i, k]) * float(mem[idx[i, j], k]) for k in range(5)) for j in range(7)]
                          for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(sampled_scores(a, mem, idx), naive, rtol=0, atol=1e-14)
    # a non-linear function of the scores, so the second derivative is not zero
    f = lambda x: sampled_scores(x, mem, idx).pow(2).sum(dim=1).log()  # noqa: E731
    assert torch.autograd.gradcheck(f, (a,))
    assert torch.autograd.gradgradcheck(f, (a,))
    assert not mem.requires_grad
