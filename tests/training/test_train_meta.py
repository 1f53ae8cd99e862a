"""MAG generators and the second-order meta step (docs/METHODS.md sections 5 and 6, step 2).

The meta-gradient is checked two independent ways: against an explicit unroll written by hand
(theta* = theta - eta * g with plain autograd and a hand-written functional forward), and against
central finite differences of the MAG loss in float64. Both show it differs from the first-order
gradient (g treated as a constant).
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metaug_training.mag import MAG, build_mags, build_mags_for, mag_hidden_width, mag_norms
from metaug_training.memory_bank import MemoryBank
from metaug_training.meta import mag_meta_gradients, metaug_meta_step, set_gradients
from metaug_training.config import LossConfig, MetaugConfig, RunConfig
from metaug_training.objective import ObjectiveConfig, metaug_objective

VIEWS = ("l", "ab")
D = 8  # embedding dim of the tiny encoder


pytestmark = pytest.mark.usefixtures("one_torch_thread")



class TinyEncoder(nn.Module):
    """Per view: Linear -> BN1d -> ReLU -> Linear -> L2-normalise; input [B, 5] (l: cols 0-1,
    ab: cols 2-4). Exposes ``embed(x) -> {view: [B, D]}`` like MetAugEncoder."""

    def __init__(self, hidden: int = 6) -> None:
        super().__init__()
        self.halves = nn.ModuleDict({
            "l": nn.Sequential(nn.Linear(2, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, D)),
            "ab": nn.Sequential(nn.Linear(3, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, D)),
        })

    @staticmethod
    def split(x):
        return {"l": x[:, :2], "ab": x[:, 2:]}

    def embed(self, x):
        return {v: F.normalize(self.halves[v](xv), dim=1) for v, xv in self.split(x).items()}


def tiny_functional_embed(p: dict, x: torch.Tensor) -> dict:
    """The TinyEncoder forward written out by hand from a parameter dict (BN on batch stats)."""
    out = {}
    for v, xv in TinyEncoder.split(x).items():
        h = F.linear(xv, p[f"halves.{v}.0.weight"], p[f"halves.{v}.0.bias"])
        h = F.batch_norm(h, None, None, p[f"halves.{v}.1.weight"], p[f"halves.{v}.1.bias"], training=True)
        h = F.relu(h)
        out[v] = F.normalize(F.linear(h, p[f"halves.{v}.3.weight"], p[f"halves.{v}.3.bias"]), dim=1)
    return out


def _setup(seed=0, b=6, k=5, n=30):
    torch.manual_seed(seed)
    enc = TinyEncoder().double()
    mags = build_mags(VIEWS, dim=D, hidden=7).double()
    g = torch.Generator().manual_seed(seed)
    bank = MemoryBank(VIEWS, n, dim=D, num_negatives=k, generator=g).double()
    idx = torch.randperm(n, generator=g)[:b]
    sidx = bank.sample(idx, generator=g)
    x = torch.randn(b, 5, generator=g, dtype=torch.float64)
    return enc, mags, bank, idx, sidx, x


#: The config's default second-order route (``run.meta_grad``), where a test does not pick one.
META_GRAD = RunConfig().meta_grad


def objective(**metaug) -> ObjectiveConfig:
    """The objective of ``MetaugConfig(**metaug)`` with OUCL at the ``loss`` section's defaults."""
    return ObjectiveConfig.from_sections(LossConfig(), MetaugConfig(**metaug))


# Large delta / alpha / eta so the second-order path is far above float64 noise.
CFG = objective(delta=0.5, alpha=0.3, reg_c=1.0, reg_where="both")
ETA = 0.5


def _loss_fns(bank, sidx, cfg):
    def inner(z, zh):
        return metaug_objective(z, zh, bank, sidx, cfg, phase="encoder")[0]

    def outer(z, zh):
        return metaug_objective(z, zh, bank, sidx, cfg, phase="mag")[0]

    return inner, outer


def _max_rel_diff(a: dict, b: dict) -> float:
    num = max(float((a[k] - b[k]).abs().max()) for k in a)
    den = max(float(b[k].abs().max()) for k in b)
    return num / den


# --------------------------------------------------------------------------- MAG module
def test_mag_architecture_and_output():
    mag = MAG(dim=128, hidden=64)
    kinds = [type(m) for m in mag.net]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (mag.net[0].in_features, mag.net[0].out_features) == (128, 64)
    assert (mag.net[3].in_features, mag.net[3].out_features) == (64, 64)
    assert (mag.net[6].in_features, mag.net[6].out_features) == (64, 128)
    z = F.normalize(torch.randn(10, 128), dim=1)
    out = mag(z)
    assert out.shape == (10, 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(10))
    defaults = inspect.signature(MAG).parameters
    assert (defaults["dim"].default, defaults["hidden"].default) == (128, 2048)


def test_mag_rejects_anything_but_the_embedding():
    mag = MAG(dim=128, hidden=32)
    with pytest.raises(ValueError, match="128-d embedding"):
        mag(torch.randn(4, 256))
    with pytest.raises(ValueError):
        mag(torch.randn(4, 128, 1))


def test_mag_width_follows_encoder_fc_width():
    from metaug_features import EncoderConfig, build_encoder

    for width, expect in [(0.125, 256), (0.5, 1024)]:
        enc = build_encoder(EncoderConfig(architecture="alexnet32", width=width, views=("l", "ab", "ori")))
        assert mag_hidden_width(enc) == expect
        mags = build_mags_for(enc)
        assert list(mags.keys()) == ["l", "ab", "ori"]
        assert all(m.hidden == expect and m.dim == enc.config.embedding_dim for m in mags.values())


def test_mag_norms_logging_helper():
    mags = build_mags(VIEWS, dim=4, hidden=3)
    w = float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in mags.parameters())))
    assert mag_norms(mags) == pytest.approx({"mag_weight_norm": w, "mag_grad_norm": 0.0})


# --------------------------------------------------------------------------- meta step
def explicit_unroll(enc, mags, x, bank, sidx, cfg, eta, first_order=False):
    """Reference: theta* = theta - eta * g written out by hand, hand-written functional forward."""
    mags = copy.deepcopy(mags)  # its BN running stats may change here; irrelevant (batch stats)
    theta = {n: p.detach().clone().requires_grad_(True) for n, p in enc.named_parameters()}
    inner, outer = _loss_fns(bank, sidx, cfg)
    z = tiny_functional_embed(theta, x)
    l_in = inner(z, {v: mags[v](z[v]) for v in z})
    g = torch.autograd.grad(l_in, list(theta.values()), create_graph=not first_order)
    theta_star = {n: theta[n] - eta * gi for n, gi in zip(theta, g)}
    if first_order:
        theta_star = {n: t.detach() for n, t in theta_star.items()}
    z_star = tiny_functional_embed(theta_star, x)
    l_out = outer(z_star, {v: mags[v](z_star[v]) for v in z_star})
    grads = torch.autograd.grad(l_out, list(mags.parameters()))
    return {n: gi for (n, _), gi in zip(mags.named_parameters(), grads)}, l_out.detach()


GRAD_MODES = pytest.mark.parametrize("grad_mode", ["jvp", "double_backward"])


@GRAD_MODES
def test_meta_gradient_equals_explicit_unroll_and_differs_from_first_order(grad_mode):
    enc, mags, bank, idx, sidx, x = _setup()
    inner, outer = _loss_fns(bank, sidx, CFG)
    ours, loss = mag_meta_gradients(enc, mags, x, inner, ETA, outer_loss_fn=outer, grad_mode=grad_mode)
    ref, ref_loss = explicit_unroll(enc, mags, x, bank, sidx, CFG, ETA)
    assert set(ours) == {n for n, _ in mags.named_parameters()}
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    for n in ref:
        torch.testing.assert_close(ours[n], ref[n], rtol=1e-9, atol=1e-12)

    fo, _ = mag_meta_gradients(enc, mags, x, inner, ETA, outer_loss_fn=outer, first_order=True, grad_mode=META_GRAD)
    fo_ref, _ = explicit_unroll(enc, mags, x, bank, sidx, CFG, ETA, first_order=True)
    for n in fo_ref:
        torch.testing.assert_close(fo[n], fo_ref[n], rtol=1e-9, atol=1e-12)
    assert _max_rel_diff(ours, fo) > 1e-3  # the second-order path matters


def _mag_loss(enc, mags, x, inner, outer, eta):
    return mag_meta_gradients(enc, mags, x, inner, eta, outer_loss_fn=outer, grad_mode=META_GRAD)[1]


def _finite_difference_check(enc, mags, x, inner, outer, eta, coords, eps=1e-6, grad_mode="jvp"):
    ours, _ = mag_meta_gradients(enc, mags, x, inner, eta, outer_loss_fn=outer, grad_mode=grad_mode)
    fo, _ = mag_meta_gradients(enc, mags, x, inner, eta, outer_loss_fn=outer, first_order=True, grad_mode=META_GRAD)
    params = dict(mags.named_parameters())
    fd_vals, so_vals, fo_vals = [], [], []
    for name, index in coords:
        p = params[name]
        with torch.no_grad():
            orig = p[index].item()
            p[index] = orig + eps
            up = _mag_loss(enc, mags, x, inner, outer, eta).item()
            p[index] = orig - eps
            down = _mag_loss(enc, mags, x, inner, outer, eta).item()
            p[index] = orig
        fd_vals.append((up - down) / (2 * eps))
        so_vals.append(ours[name][index].item())
        fo_vals.append(fo[name][index].item())
    fd, so, fo_t = (torch.tensor(v, dtype=torch.float64) for v in (fd_vals, so_vals, fo_vals))
    scale = float(fd.abs().max())
    assert scale > 0
    err_so = float((so - fd).abs().max()) / scale
    err_fo = float((fo_t - fd).abs().max()) / scale
    return err_so, err_fo


@GRAD_MODES
def test_meta_gradient_matches_finite_differences_tiny_encoder(grad_mode):
    enc, mags, bank, idx, sidx, x = _setup(seed=1)
    inner, outer = _loss_fns(bank, sidx, CFG)
    coords = [("l.net.0.weight", (0, 1)), ("l.net.3.weight", (2, 4)), ("ab.net.1.weight", (3,)),
              ("ab.net.6.bias", (5,)), ("ab.net.0.bias", (1,)), ("l.net.4.bias", (0,))]
    err_so, err_fo = _finite_difference_check(enc, mags, x, inner, outer, ETA, coords, grad_mode=grad_mode)
    assert err_so < 1e-6, err_so
    assert err_fo > 100 * max(err_so, 1e-9), (err_so, err_fo)


@GRAD_MODES
def test_meta_gradient_matches_finite_differences_metaug_encoder(grad_mode):
    from metaug_features import EncoderConfig, build_encoder

    torch.manual_seed(3)
    enc = build_encoder(EncoderConfig(architecture="alexnet32", width=0.125, views=VIEWS)).double()
    mags = build_mags_for(enc).double()
    g = torch.Generator().manual_seed(3)
    bank = MemoryBank(VIEWS, 40, dim=128, num_negatives=8, generator=g).double()
    idx = torch.randperm(40, generator=g)[:6]
    sidx = bank.sample(idx, generator=g)
    x = torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64)
    cfg = objective(delta=1.0, alpha=0.0, reg_where="off")
    inner, outer = _loss_fns(bank, sidx, cfg)
    coords = [("l.net.0.weight", (3, 7)), ("ab.net.3.weight", (10, 20)), ("l.net.6.bias", (2,))]
    err_so, err_fo = _finite_difference_check(enc, mags, x, inner, outer, 1.0, coords, grad_mode=grad_mode)
    assert err_so < 1e-5, err_so
    assert err_fo > 100 * max(err_so, 1e-9), (err_so, err_fo)


def test_zero_inner_lr_reduces_to_plain_gradient():
    enc, mags, bank, idx, sidx, x = _setup(seed=2)
    inner, outer = _loss_fns(bank, sidx, CFG)
    ours, _ = mag_meta_gradients(enc, mags, x, inner, 0.0, outer_loss_fn=outer, grad_mode=META_GRAD)
    m2 = copy.deepcopy(mags)
    z = {k: t.detach() for k, t in tiny_functional_embed(dict(enc.named_parameters()), x).items()}
    loss = outer(z, {v: m2[v](z[v]) for v in z})
    plain = torch.autograd.grad(loss, list(m2.parameters()))
    for (n, _), gp in zip(m2.named_parameters(), plain):
        torch.testing.assert_close(ours[n], gp, rtol=1e-10, atol=1e-13)


def _buffers(module):
    return {n: b.clone() for n, b in module.named_buffers()}


@GRAD_MODES
@pytest.mark.parametrize("kind", ["tiny", "metaug"])
def test_meta_step_has_no_side_effects(kind, grad_mode):
    """BN running_mean / running_var / num_batches_tracked of encoder and MAGs unchanged,
    no .grad written, module modes restored, memory bank not updated."""
    if kind == "tiny":
        enc, mags, bank, idx, sidx, x = _setup(seed=4)
        enc.float(), mags.float(), bank.float()
        x = x.float()
    else:
        from metaug_features import EncoderConfig, build_encoder

        enc = build_encoder(EncoderConfig(architecture="alexnet32", width=0.125, views=VIEWS))
        mags = build_mags_for(enc)
        bank = MemoryBank(VIEWS, 30, dim=128, num_negatives=16)
        sidx = bank.sample(torch.arange(4))
        x = torch.randn(4, 3, 32, 32)
        # make the running stats non-trivial first
        with torch.no_grad():
            enc.embed(torch.randn(4, 3, 32, 32))
    enc_buf, mag_buf, bank_before = _buffers(enc), _buffers(mags), bank.bank.clone()
    assert any("num_batches_tracked" in n for n in enc_buf) and any("running_var" in n for n in enc_buf)
    enc.eval()  # the meta step must still use batch statistics, and restore eval mode afterwards
    grads, loss, logs = metaug_meta_step(enc, mags, x, bank, sidx, objective(), inner_lr=1e-3,
                                         grad_mode=grad_mode)
    assert not enc.training and all(not m.training for m in enc.modules())
    assert mags.training
    for n, b in _buffers(enc).items():
        assert torch.equal(b, enc_buf[n]), n
    for n, b in _buffers(mags).items():
        assert torch.equal(b, mag_buf[n]), n
    assert torch.equal(bank.bank, bank_before)
    assert all(p.grad is None for p in enc.parameters())
    assert all(p.grad is None for p in mags.parameters())
    assert set(grads) == {n for n, _ in mags.named_parameters()}
    assert torch.isfinite(loss) and "loss_orig" in logs and "reg" in logs
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0


def test_meta_step_uses_batch_statistics():
    """The MAG loss equals the one computed with the encoder in train mode on a throwaway copy."""
    enc, mags, bank, idx, sidx, x = _setup(seed=5)
    inner, outer = _loss_fns(bank, sidx, CFG)
    enc.eval()
    _, loss = mag_meta_gradients(enc, mags, x, inner, 0.0, outer_loss_fn=outer, grad_mode=META_GRAD)
    enc_copy, mags_copy = copy.deepcopy(enc).train(), copy.deepcopy(mags).train()
    z = enc_copy.embed(x)
    expect = outer(z, {v: mags_copy[v](z[v]) for v in z})
    torch.testing.assert_close(loss, expect.detach(), rtol=1e-12, atol=1e-12)


def test_metaug_meta_step_matches_generic_call_and_set_gradients():
    enc, mags, bank, idx, sidx, x = _setup(seed=6)
    cfg = objective(delta=0.5, alpha=0.3, reg_c=1.0, reg_where="mag")
    grads, loss, logs = metaug_meta_step(enc, mags, x, bank, sidx, cfg, inner_lr=ETA, grad_mode=META_GRAD)
    inner, outer = _loss_fns(bank, sidx, cfg)
    ref, ref_loss = mag_meta_gradients(enc, mags, x, inner, ETA, outer_loss_fn=outer, grad_mode=META_GRAD)
    torch.testing.assert_close(loss, ref_loss)
    for n in ref:
        torch.testing.assert_close(grads[n], ref[n])
    # reg_where="mag": the regulariser is in the MAG loss, not in the inner (encoder) loss
    assert "reg" in logs
    set_gradients(mags, grads)
    for n, p in mags.named_parameters():
        assert torch.equal(p.grad, grads[n])
    set_gradients(mags, grads, accumulate=True)
    for n, p in mags.named_parameters():
        torch.testing.assert_close(p.grad, 2 * grads[n])
    with pytest.raises(ValueError):
        set_gradients(mags, {"nope": torch.zeros(1)})


@pytest.mark.parametrize("where", ["mag", "both"])
def test_meta_step_reg_scores_raw_is_mapped_with_twice_alpha(where):
    """R on the raw scores is exactly twice R on the (s+1)/2-mapped ones (the default), so a meta
    step with ``reg_scores="raw"`` and alpha equals one with the default and 2 * alpha, in the
    inner (encoder) loss as well as the MAG loss. Also checks that the option reaches R here."""
    enc, mags, bank, idx, sidx, x = _setup(seed=8)
    raw = objective(delta=0.5, alpha=0.3, reg_c=1.0, reg_where=where, reg_scores="raw")
    mapped = objective(delta=0.5, alpha=0.6, reg_c=1.0, reg_where=where)
    g_raw, l_raw, logs_raw = metaug_meta_step(enc, mags, x, bank, sidx, raw, inner_lr=ETA, grad_mode=META_GRAD)
    g_map, l_map, logs_map = metaug_meta_step(enc, mags, x, bank, sidx, mapped, inner_lr=ETA, grad_mode=META_GRAD)
    torch.testing.assert_close(logs_raw["reg"], 2 * logs_map["reg"], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(l_raw, l_map, rtol=1e-12, atol=1e-12)
    for n in g_raw:
        torch.testing.assert_close(g_raw[n], g_map[n], rtol=1e-9, atol=1e-12)
    # the switch matters: same alpha, other scores -> other MAG gradients
    g_same_alpha, _, _ = metaug_meta_step(enc, mags, x, bank, sidx,
                                          objective(delta=0.5, alpha=0.3, reg_c=1.0, reg_where=where),
                                          inner_lr=ETA, grad_mode=META_GRAD)
    assert _max_rel_diff(g_same_alpha, g_raw) > 1e-6


def test_meta_grad_modes_agree_on_the_metaug_encoder_with_channels_last():
    """The jvp route and the double backward give the same MAG gradients on the real encoder
    (float64, BN in train mode, all six view pairs, R in the MAG loss), and with NHWC weights."""
    from metaug_features import EncoderConfig, build_encoder

    torch.manual_seed(7)
    enc = build_encoder(EncoderConfig(architecture="alexnet32", width=0.125, views=VIEWS)).double()
    mags = build_mags_for(enc).double()
    g = torch.Generator().manual_seed(7)
    bank = MemoryBank(VIEWS, 50, dim=128, num_negatives=12, generator=g).double()
    sidx = bank.sample(torch.randperm(50, generator=g)[:6], generator=g)
    x = torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64)
    cfg = objective(delta=0.5, alpha=0.1, reg_c=1.0, reg_where="both")
    ref, ref_loss, _ = metaug_meta_step(enc, mags, x, bank, sidx, cfg, inner_lr=0.5, grad_mode="double_backward")
    # The two routes sum in different orders, so near-zero entries carry float64 round-off of the
    # order of eps times the gradients' scale (largest entry ~12 here): absolute tolerance 1e-12 of it.
    atol = 1e-12 * max(float(g.abs().max()) for g in ref.values())
    enc.to(memory_format=torch.channels_last)
    for x_in in (x, x.contiguous(memory_format=torch.channels_last)):
        ours, loss, _ = metaug_meta_step(enc, mags, x_in, bank, sidx, cfg, inner_lr=0.5, grad_mode="jvp")
        torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
        for n in ref:
            torch.testing.assert_close(ours[n], ref[n], rtol=1e-9, atol=atol)


def test_unknown_meta_grad_mode_is_refused():
    enc, mags, bank, idx, sidx, x = _setup()
    inner, outer = _loss_fns(bank, sidx, CFG)
    with pytest.raises(ValueError, match="grad_mode"):
        mag_meta_gradients(enc, mags, x, inner, ETA, grad_mode="hessian")
