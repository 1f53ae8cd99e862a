"""The training loop on real CIFAR-10 images: loss goes down for every method, the MetAug step
follows docs/METHODS.md section 6's order exactly, MAGs stay frozen in the encoder step, NaN handling, deadline,
logs."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from metaug_training.checkpoint import load_checkpoint
from metaug_training.config import load_config
from metaug_training.distributed import DistContext
from metaug_training.memory_bank import MemoryBank
from metaug_training.meta import metaug_meta_step
from metaug_training.methods import objective_config, train_step
from metaug_training.methods import step as methods_mod
from metaug_training.objective import metaug_objective
from metaug_training.trainer import Trainer, TrainingDivergedError, load_data, train


def tiny(cifar_images, out_dir, *overrides: str):
    """A cheap run: 200 real images, width 0.125, two views, K 64, batch 16, one thread."""
    return load_config(None, [
        f"data.path={cifar_images}", "data.split=train", "data.cache_dir=", "data.num_workers=0",
        "model.width=0.125", "model.views=l,ab", "bank.num_negatives=64", "optim.batch_size=16",
        "optim.epochs=100", f"run.out_dir={out_dir}", "run.num_threads=1", "run.quiet=true",
        "run.log_every=20", "run.ckpt_every=1000", "run.export=false", *overrides])


def _records(out_dir):
    """The per-step records of the run's log (not its "event" records, e.g. the final stop)."""
    recs = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in recs if "event" not in r]


_CONTROL: dict[str, float] = {}


def _final_loss(cifar_images, out_dir, method, *overrides, key="loss"):
    cfg = tiny(cifar_images, out_dir, f"method={method}", "run.max_steps=200", *overrides)
    train(cfg)
    recs = _records(out_dir)
    assert [r["step"] for r in recs] == list(range(20, 201, 20))
    return recs[0][key], sum(r[key] for r in recs[-3:]) / 3


@pytest.mark.parametrize("method", ["cmc", "oucl", "metaug"])
def test_training_lowers_the_loss(cifar_images, tmp_path, method):
    """200 steps (16 epochs of 200 images) lower the loss below its first window and well
    below a control run with lr 0 (same data, crops, negatives and bank updates: only
    learning differs). MetAug's own OUCL term (loss_orig) is compared with OUCL's control."""
    control_method = "cmc" if method == "cmc" else "oucl"
    if control_method not in _CONTROL:
        _, _CONTROL[control_method] = _final_loss(cifar_images, tmp_path / "control", control_method, "optim.lr=0")
    extra = ("metaug.meta_every=2",) if method == "metaug" else ()
    key = "loss_orig" if method == "metaug" else "loss"
    first, last = _final_loss(cifar_images, tmp_path / "run", method, *extra, key=key)
    margin = 0.3 if method == "cmc" else 0.1
    assert last < first, (first, last)
    assert last < _CONTROL[control_method] - margin, (last, _CONTROL[control_method])
    if method == "metaug":
        recs = _records(tmp_path / "run")
        assert all(r["mag_grad_norm"] > 0 and r["mag_weight_norm"] > 0 for r in recs)


def _trainer(cifar_images, tmp_path, *overrides):
    cfg = tiny(cifar_images, tmp_path, "method=metaug", "bank.num_negatives=32", "optim.batch_size=8",
               "metaug.delta=0.5", "metaug.alpha=0.1", "metaug.inner_lr=0.05", *overrides)
    ctx = DistContext()
    torch.set_num_threads(1)
    return cfg, Trainer(cfg, load_data(cfg, ctx), ctx)


def _sgd_(params, grads, lr, wd):
    # torch.optim.SGD's first step with momentum: buf = g + wd * p; p -= lr * buf
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(lr * (g + wd * p))


def test_metaug_step_follows_spec_order(cifar_images, tmp_path):
    """One train_step equals docs/METHODS.md section 6 written out by hand: encoder SGD step on L_tot with MAG
    outputs (MAG weights untouched), bank <- normalise(m * slot + (1-m) * z) with the
    pre-step encoder features, then the meta gradient of the MAGs against the *updated*
    encoder and bank, then the MAG SGD step. Large delta / alpha so every part matters.

    Both paths run in float64 (train_step's casts only widen 16-bit types, so a float64 step
    stays float64). In float32 the second-order MAG gradient at this state moves
    by ~3% when one encoder weight moves by 1 ulp (its first-order part by ~2e-5), so float32
    could only be compared to a few percent; in float64 the two paths agree to ~1e-13 of the
    largest MAG update, and a wrong order (e.g. the meta step before the bank update) is off
    by ~100% of it."""
    cfg, tr = _trainer(cifar_images, tmp_path, "metaug.reg_where=both")
    st = tr.state
    x, idx, si = tr.batch(0)
    # Same Parameter objects (Module.double converts in place): the optimisers still see them.
    st.encoder.double()
    st.mags.double()
    st.bank.double()
    x = x.double()
    enc, mags = copy.deepcopy(st.encoder), copy.deepcopy(st.mags)
    mags_before = [p.detach().clone() for p in mags.parameters()]
    bank = copy.deepcopy(st.bank)
    train_step(cfg, st, x, idx, si, 0, tr.ctx)
    assert all(p.dtype == torch.float64 for p in [*st.encoder.parameters(), *st.mags.parameters(), st.bank.bank])

    obj = objective_config(cfg)
    lr, wd = cfg.optim.lr, cfg.optim.weight_decay
    z = enc.embed(x)
    z_hat = {v: mags[v](z[v]) for v in z}
    loss, _ = metaug_objective(z, z_hat, bank, si, obj, phase="encoder")
    enc_params = list(enc.parameters())
    grads = torch.autograd.grad(loss, enc_params)
    _sgd_(enc_params, grads, lr, wd)
    old = bank.bank.clone()
    bank.update({v: t.detach() for v, t in z.items()}, idx)
    for i, v in enumerate(bank.views):
        want = torch.nn.functional.normalize(0.5 * old[i, idx] + 0.5 * z[v].detach(), dim=1)
        torch.testing.assert_close(bank.bank[i, idx], want)
    mag_grads, _, _ = metaug_meta_step(enc, mags, x, bank, si, obj, inner_lr=cfg.metaug.inner_lr,
                                       grad_mode=cfg.run.meta_grad)
    names = [n for n, _ in mags.named_parameters()]
    _sgd_([dict(mags.named_parameters())[n] for n in names], [mag_grads[n] for n in names], cfg.metaug.lr,
          cfg.metaug.weight_decay)

    for (n, a), b in zip(st.encoder.named_parameters(), enc.parameters()):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10, msg=n)
    torch.testing.assert_close(st.bank.bank, bank.bank, atol=1e-12, rtol=1e-10)
    # The MAG updates to 1e-9 of the largest one (measured: ~1e-13; biases in front of BN get
    # no gradient, only weight decay and rounding, hence an absolute tolerance).
    with torch.no_grad():
        scale = max(float((b - b0).abs().max()) for b, b0 in zip(mags.parameters(), mags_before))
        for (n, a), b, b0 in zip(st.mags.named_parameters(), mags.parameters(), mags_before):
            torch.testing.assert_close(a - b0, b - b0, atol=1e-9 * scale, rtol=0, msg=n)
    assert any(not torch.equal(a, b) for a, b in zip(st.mags.parameters(), mags_before))


def test_mags_frozen_in_encoder_step_and_meta_every(cifar_images, tmp_path):
    cfg, tr = _trainer(cifar_images, tmp_path, "metaug.meta_every=2")
    st = tr.state

    def snap(m):
        return [p.detach().clone() for p in m.parameters()]

    for step in range(3):
        enc0, mag0 = snap(st.encoder), snap(st.mags)
        bank0 = st.bank.bank.clone()
        tr.step(step)
        enc_moved = any(not torch.equal(a, b) for a, b in zip(enc0, snap(st.encoder)))
        mag_moved = any(not torch.equal(a, b) for a, b in zip(mag0, snap(st.mags)))
        assert enc_moved and not torch.equal(bank0, st.bank.bank)
        assert mag_moved == (step % 2 == 0), step
    # the encoder step leaves no gradient on the MAG weights (they are frozen there)
    st.mags.zero_grad(set_to_none=True)
    tr.step(3)
    assert all(p.grad is None for p in st.mags.parameters())


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(cifar_images, tmp_path, monkeypatch):
    real = methods_mod.encoder_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, terms = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 7:  # step 7 onwards (one micro-batch per step)
            loss = loss * float("nan")
        return loss, terms

    monkeypatch.setattr(methods_mod, "encoder_loss", poisoned)
    cfg = tiny(cifar_images, tmp_path, "method=oucl", "run.ckpt_every=5", "run.log_every=3", "run.max_steps=30")
    with pytest.raises(TrainingDivergedError) as e:
        train(cfg)
    ckpt_path = tmp_path / "checkpoints" / "last.pt"
    assert "NaN or inf" in str(e.value) and str(ckpt_path) in str(e.value) and "step 9" in str(e.value)
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["step"] == 5
    assert all(torch.isfinite(t).all() for t in ckpt["encoder"].values() if t.is_floating_point())
    assert torch.isfinite(ckpt["bank"]["bank"]).all()


def test_deadline_stops_cleanly_with_checkpoint_and_export(cifar_images, tmp_path):
    cfg = tiny(cifar_images, tmp_path, "method=cmc", "run.stop_after_minutes=0.0001", "run.export=true")
    result = train(cfg)
    assert result.status == "deadline" and 1 <= result.step < 100 * 12
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["step"] == result.step
    assert (tmp_path / "export" / "config.json").is_file() and (tmp_path / "export" / "model.safetensors").is_file()
    # a resumed run continues from there
    again = train(cfg, resume=True)
    assert again.step > result.step


def test_log_records_every_term(cifar_images, tmp_path):
    cfg = tiny(cifar_images, tmp_path, "method=metaug", "run.max_steps=4", "run.log_every=2",
               "optim.schedule=cosine", "optim.epochs=1")
    train(cfg)
    recs = _records(tmp_path)
    assert [r["step"] for r in recs] == [2, 4]
    for r in recs:
        for k in ("loss", "loss_orig", "loss_aug/l", "loss_aug/ab", "loss_aug/l+ab", "mag_loss", "lr", "mag_lr",
                  "mag_grad_norm", "mag_weight_norm", "img_per_s", "epoch", "time"):
            assert k in r and r[k] == r[k], k
    spe = 200 // 16
    assert recs[1]["lr"] == pytest.approx(0.03 * 0.5 * (1 + torch.cos(torch.tensor(3.14159265358979 * 3 / spe)).item()))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["method"] == "metaug" and saved["model"]["views"] == ["l", "ab"]


def test_bank_gets_encoder_features_only(cifar_images, tmp_path):
    """After a metaug step the updated bank rows come from the encoder's embeddings, not from
    the MAG outputs (docs/METHODS.md section 3): recompute both and check which one the bank moved towards."""
    cfg, tr = _trainer(cifar_images, tmp_path, "metaug.meta_every=1000")
    st = tr.state
    enc = copy.deepcopy(st.encoder)
    old: MemoryBank = copy.deepcopy(st.bank)
    x, idx, si = tr.batch(0)
    train_step(cfg, st, x, idx, si, 0, tr.ctx)
    with torch.no_grad():
        z = enc.embed(x)
        for i, v in enumerate(st.bank.views):
            want = torch.nn.functional.normalize(0.5 * old.bank[i, idx] + 0.5 * z[v], dim=1)
            torch.testing.assert_close(st.bank.bank[i, idx], want)
        others = torch.ones(st.bank.num_samples, dtype=torch.bool)
        others[idx] = False
        assert torch.equal(st.bank.bank[:, others], old.bank[:, others])


def test_adam_option_drives_both_optimisers(cifar_images, tmp_path):
    cfg, tr = _trainer(cifar_images, tmp_path, "optim.optimizer=adam", "optim.lr=0.001", "metaug.lr=0.001")
    assert isinstance(tr.state.opt, torch.optim.Adam) and isinstance(tr.state.mag_opt, torch.optim.Adam)
    before = [p.detach().clone() for p in tr.state.mags.parameters()]
    tr.step(0)
    # Adam's first step moves every weight with a non-zero gradient by about lr
    moved = [float((p.detach() - b).abs().max()) for p, b in zip(tr.state.mags.parameters(), before)]
    assert max(moved) == pytest.approx(0.001, rel=0.05)
