"""The speed settings of issue #13 change no mathematics.

Fast settings: channels_last, the jvp meta step, "full" bank scoring with its fused backward,
prefetch, glibc keeping freed memory. Straightforward path: NCHW, double-backward meta step, the
per-anchor "gather" scoring, no prefetch, malloc left alone. At a fixed seed, for cmc, oucl and
metaug:

- prefetch and the allocator setting are exact: 50 independent steps are bit-identical;
- every setting together, step by step along a 50-step trajectory (both trainers start each
  step from the same state), both trainers in float64: losses, encoder, MAG parameters and bank
  within 1e-9.

Why float64 for the step-by-step comparison: the settings change rounding, not maths, and in
float32 MetAug's second-order MAG gradient turns 1-ulp differences of the encoder weights into
a few percent of the MAG update (measured 2026-12-06 on an AVX-512 EPYC, torch 2.14.1: one
step's MAG parameters off by 3.3e-3, the meta-step loss by 5.0e-4 of ~18, with the encoder
within 1e-6), so a float32 tolerance is either loose enough to hide a real error or fails on
some CPU's rounding. In float64 the same comparison agrees to ~1e-14 (losses 7e-15, encoder
1.5e-15, MAG parameters 3e-14), so 1e-9 leaves five orders of margin and still catches a 0.1%
error in the second-order term.

Why not 50 independent steps for the rounding-changing settings: NHWC convolutions, the fused
scoring backward and the jvp sum in another order (~1e-7 relative), and on this tiny
configuration (8 images a batch) a max-pool or ReLU that flips on such a difference routes a
gradient elsewhere; the runs then drift apart by ~1e-2 within 15-20 steps whichever setting is
changed (scoring alone does it too). That is a discrete event, not different maths; comparing
each step from a shared state measures the maths without it. The last test shows the comparison
fails for a real change.
"""

from __future__ import annotations

import copy

import pytest
import torch

from metaug_training.methods import META_PREFIX
from metaug_training.config import load_config
from metaug_features.malloc_settings import keep_freed_memory
from metaug_training.distributed import DistContext
from metaug_training.trainer import Trainer, load_data

STRAIGHTFORWARD = ["run.channels_last=false", "run.prefetch=false", "run.meta_grad=double_backward",
                   "bank.scoring=gather", "run.keep_freed_memory=false"]
FAST = ["run.channels_last=true", "run.prefetch=true", "run.meta_grad=jvp", "bank.scoring=full",
        "run.keep_freed_memory=true"]
STEPS = 50
TOL = 1e-4
#: The float64 step-by-step comparison: losses, encoder, bank and MAG parameters (measured
#: worst ~3e-14; see the module docstring).
F64_TOL = 1e-9
ALPHA = 0.1


@pytest.fixture(scope="module")
def data(cifar_images):
    cfg = _cfg(cifar_images, "cmc", [])
    return load_data(cfg, DistContext())


def _cfg(cifar_images, method, overrides):
    return load_config(None, [
        f"data.path={cifar_images}", "data.split=train", "data.cache_dir=", "data.num_workers=0",
        f"method={method}", "model.width=0.125", "model.views=l,ab,ori", "bank.num_negatives=32",
        "optim.batch_size=8", "optim.epochs=10", "optim.lr=0.05", "metaug.meta_every=1",
        # MetAug's augmented terms and R at weights where they move the numbers (the defaults,
        # 1e-5 / 1e-11 would hide a wrong second-order term below float32 resolution).
        "metaug.delta=0.5", f"metaug.alpha={ALPHA}", "metaug.reg_c=1.0", "metaug.inner_lr=0.05",
        "run.out_dir=/tmp/unused", "run.num_threads=1", "run.quiet=true", *overrides])


def _run(cfg, data, steps=STEPS):
    torch.set_num_threads(1)
    if cfg.run.keep_freed_memory:
        keep_freed_memory()
    tr = Trainer(cfg, data, DistContext())
    losses = []
    try:
        for s in range(steps):
            logs = tr.step(s)
            losses.append({k: float(v) for k, v in logs.items()})
    finally:
        tr.close()
    return losses, _state(tr)


def _max_diffs(a, b):
    (la, pa), (lb, pb) = a, b
    loss_diff = max(abs(x[k] - y[k]) for x, y in zip(la, lb) for k in x)
    param_diff = max(float((pa[n] - pb[n]).abs().max()) for n in pa)
    return loss_diff, param_diff


def _sync(dst: Trainer, src: Trainer) -> None:
    """Copy every piece of training state of ``src`` into ``dst`` (values only: each keeps
    its own memory layout)."""
    a, b = dst.state, src.state
    a.encoder.load_state_dict(b.encoder.state_dict())
    a.bank.load_state_dict(b.bank.state_dict())
    # deepcopy: Optimizer.load_state_dict keeps the given momentum tensors when no cast is
    # needed, and the two trainers must not share them.
    a.opt.load_state_dict(copy.deepcopy(b.opt.state_dict()))
    if b.mags is not None:
        a.mags.load_state_dict(b.mags.state_dict())
        a.mag_opt.load_state_dict(copy.deepcopy(b.mag_opt.state_dict()))


def _state(tr: Trainer) -> dict[str, torch.Tensor]:
    st = tr.state
    out = {f"enc.{n}": p.detach().clone() for n, p in st.encoder.named_parameters()}
    if st.mags is not None:
        out.update({f"mag.{n}": p.detach().clone() for n, p in st.mags.named_parameters()})
    out["bank"] = st.bank.bank.clone()
    return out


# MetAug's rows take ~35 s of the fast tier together (the meta step, 50 steps): slow tier.
METHODS_FAST_TIER = ["cmc", "oucl", pytest.param("metaug", marks=pytest.mark.slow)]


@pytest.mark.parametrize("method", METHODS_FAST_TIER)
def test_exact_settings_are_bit_identical_over_50_steps(cifar_images, data, method):
    """Prefetch and the allocator setting move work and memory around without touching a
    number: 50 independent steps give bit-identical losses, parameters and bank."""
    exact = [o for o in STRAIGHTFORWARD if not o.startswith(("run.prefetch", "run.keep_freed_memory"))]
    exact += ["run.prefetch=true", "run.keep_freed_memory=true"]
    ref = _run(_cfg(cifar_images, method, STRAIGHTFORWARD), data)
    fast = _run(_cfg(cifar_images, method, exact), data)
    assert ref[0] == fast[0]
    assert all(torch.equal(ref[1][n], fast[1][n]) for n in ref[1])
    # the run did train: parameters moved far from the initial ones
    start = _run(_cfg(cifar_images, method, STRAIGHTFORWARD), data, steps=0)[1]
    assert max(float((ref[1][n] - start[n]).abs().max()) for n in start) > 100 * TOL


@pytest.mark.parametrize("method", METHODS_FAST_TIER)
def test_every_fast_step_matches_the_straightforward_step(cifar_images, data, method):
    """All fast settings, channels_last included, step by step along a 50-step trajectory, in
    float64: before each step the fast trainer gets the straightforward run's exact state, then
    both take the step. (Run independently, channels_last drifts away within a few steps in
    float32: NHWC convolutions round differently, and a max-pool or ReLU that flips on a 1e-7
    difference routes a gradient elsewhere -- a discrete jump, not a change of the maths.
    Comparing each step from a shared state, in float64, checks the maths without that
    amplification and without float32's second-order amplification in the MAG update.)"""
    worst = _stepwise(cifar_images, data, method, STEPS, float64=True)
    assert all(v < F64_TOL for v in worst.values()), worst


#: Meta-step logs of the jvp route only (docs/METHODS.md section 6, step 4).
JVP_ONLY_LOGS = {META_PREFIX + k for k in ("grad_norm_direct", "grad_norm_second", "second_order_share")}


def _float64(tr: Trainer) -> Trainer:
    """Switch ``tr`` to float64: its modules in place (the optimisers keep the same Parameter
    objects) and the network input of every batch (train_step keeps float64 as is)."""
    st = tr.state
    for module in (st.encoder, st.mags, st.bank, st.nce):
        if module is not None:
            module.double()
    next_batch = tr.next_batch

    def next_batch_float64(step):
        x, *rest = next_batch(step)
        return (x.double(), *rest)

    tr.next_batch = next_batch_float64
    return tr


def _stepwise(cifar_images, data, method, steps, float64=False):
    torch.set_num_threads(1)
    keep_freed_memory()
    ref = Trainer(_cfg(cifar_images, method, STRAIGHTFORWARD), data, DistContext())
    fast = Trainer(_cfg(cifar_images, method, FAST), data, DistContext())
    if float64:
        _float64(ref)
        _float64(fast)
    worst = {"loss": 0.0, "encoder+bank": 0.0, "mag": 0.0}
    try:
        for s in range(steps):
            _sync(fast, ref)
            la, lb = ref.step(s), fast.step(s)
            # Only the jvp route (fast) computes the two parts of the MAG gradient separately.
            assert set(la) == set(lb) - JVP_ONLY_LOGS
            worst["loss"] = max(worst["loss"], max(abs(float(la[k]) - float(lb[k])) for k in la))
            pa, pb = _state(ref), _state(fast)
            assert all(pa[n].dtype == pb[n].dtype == (torch.float64 if float64 else torch.float32) for n in pa)
            for n in pa:
                key = "mag" if n.startswith("mag.") else "encoder+bank"
                worst[key] = max(worst[key], float((pa[n] - pb[n]).abs().max()))
    finally:
        fast.close()
    if method != "metaug":
        del worst["mag"]
    return worst


def test_the_tolerance_catches_a_real_change(cifar_images, data, monkeypatch):
    """A 0.1% wrong inner step in the fast path only (the jvp route uses 1.001 eta; the
    straightforward path's double_backward route is untouched) is far outside F64_TOL, so the
    float64 step-by-step comparison above can fail."""
    import metaug_training.meta as meta

    original = meta._meta_gradients_jvp

    def wrong_eta(*args):  # mag_meta_gradients passes inner_lr, then the stats dict, last
        return original(*args[:-2], 1.001 * args[-2], args[-1])

    monkeypatch.setattr(meta, "_meta_gradients_jvp", wrong_eta)
    worst = _stepwise(cifar_images, data, "metaug", steps=3, float64=True)
    # measured: MAG parameters 1.9e-3, losses 2.0e-4 (the meta-step loss) apart
    assert worst["mag"] > 1000 * F64_TOL and worst["loss"] > 1000 * F64_TOL, worst


def test_prefetched_batches_are_the_batches(cifar_images, data):
    """The prefetch worker hands out exactly batch(step), also after a jump in steps."""
    tr = Trainer(_cfg(cifar_images, "cmc", ["run.prefetch=true"]), data, DistContext())
    plain = Trainer(_cfg(cifar_images, "cmc", ["run.prefetch=false"]), data, DistContext())
    try:
        for s in (0, 1, 2, 7, 8, 3):
            got, want = tr.next_batch(s), plain.next_batch(s)
            for a, b in zip(got[:3], want[:3]):
                assert torch.equal(a, b)
            assert got[3] is None and want[3] is None  # no view generators configured
    finally:
        tr.close()
    assert not tr.batches.prefetching


def test_channels_last_weights_export_contiguous(cifar_images, data, tmp_path):
    """NHWC training weights are written as plain contiguous tensors (safetensors needs them)."""
    from metaug_training.export import export_encoder

    cfg = _cfg(cifar_images, "cmc", ["run.channels_last=true"])
    tr = Trainer(cfg, data, DistContext())
    w = tr.state.encoder.halves["ab"].conv1[0].weight  # [c, 2, 5, 5]: the layouts differ
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    out = export_encoder(tr.state.encoder, cfg, tmp_path / "export", {})
    from metaug_features import load_encoder

    enc = load_encoder(out)
    torch.testing.assert_close(enc.halves["ab"].conv1[0].weight, w.contiguous(), rtol=0, atol=0)


def test_phase_timer_sees_every_phase_of_a_metaug_step(cifar_images, data):
    """The benchmark's breakdown: every phase of a metaug step is timed, and the phases add up
    to no more than the step's wall time (they do not overlap)."""
    import time

    from metaug_training.phase_timer import NO_TIMER, PhaseTimer

    tr = Trainer(_cfg(cifar_images, "metaug", []), data, DistContext())
    assert tr.state.timer is NO_TIMER
    tr.step(0)
    timer = PhaseTimer()
    tr.state.timer = timer
    t0 = time.perf_counter()
    tr.step(1)
    wall = time.perf_counter() - t0
    assert set(timer.totals) == {"data", "forward", "loss", "backward", "optimizer", "bank_update", "meta"}
    assert all(timer.counts[k] == 1 for k in timer.totals)
    assert 0 < sum(timer.totals.values()) <= wall


def test_bad_speed_settings_are_refused(cifar_images):
    from metaug_features.errors import ConfigError

    with pytest.raises(ConfigError, match="run.meta_grad"):
        _cfg(cifar_images, "metaug", ["run.meta_grad=hessian"])
    with pytest.raises(ConfigError, match="run.channels_last"):
        _cfg(cifar_images, "metaug", ["run.channels_last=maybe"])
