"""The MetAug objective (docs/METHODS.md section 4): code terms, the paper term, where R is placed,
against explicit recomputation with the losses tested in tests/training/test_train_losses.py."""

from __future__ import annotations

import pytest
import torch

from metaug_training.losses import (
    NCELoss,
    infonce_loss,
    margin_regularizer,
    margin_thresholds,
    oucl_loss,
)
from metaug_training.config import LossConfig, MetaugConfig, expand_aug_terms
from metaug_training.memory_bank import MemoryBank
from metaug_training.objective import ObjectiveConfig, OUCLLoss, metaug_objective

from _loss_references import (
    LOSS_DEFAULTS,
    naive_margin_reg_mapped,
    naive_margin_reg_raw,
    objective,
    regularizer,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def _direct_loss(bank, z, sidx, opts=OUCLLoss(LOSS_DEFAULTS)):
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


@pytest.mark.parametrize("opts", [OUCLLoss(LOSS_DEFAULTS), OUCLLoss(LossConfig(margin=0.2, weighting="adaptive"))])
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
