"""IDAA and A2 view generators (docs/METHODS.md sections 8-9): the adversarial view's exactness at eps = 0
and its ascent, gradient isolation, separate BN, A2's losses against naive loops, the
alignment term's pull, seeded draws that do not depend on how a batch is split, and the sigma
calibration."""

from __future__ import annotations

import math

import pytest
import torch

from metaug_features.model import build_encoder
from metaug_training.a2_losses import a2_full, a2_infonce, a2_simclr, alignment
from metaug_training.augment import sample_crop_params
from metaug_training.losses import infonce_loss
from metaug_training.memory_bank import MemoryBank
from metaug_training.vae import IDAAVAE, VAEConfig, freeze
from metaug_training.config import A2Config, IDAAConfig, RunConfig
from metaug_training.view_generators import A2Views, GeneratorBatch, IDAAViews, calibrate_sigma

VIEWS = ("l", "ab")


def _vae(seed: int = 0) -> IDAAVAE:
    torch.manual_seed(seed)
    return freeze(IDAAVAE(VAEConfig(channels=16, latent_dim=32)))

def idaa_views(vae: IDAAVAE, separate_bn_of=None, **changes) -> IDAAViews:
    """IDAAViews at the ``idaa`` config section's defaults except ``changes``."""
    c = IDAAConfig()
    opts = {"eps": c.eps, "steps": c.steps, "weight": c.weight, **changes}
    return IDAAViews(vae, separate_bn_of=separate_bn_of, **opts)


def a2_views(vae: IDAAVAE, latents=None, **changes) -> A2Views:
    """A2Views at the ``a2`` config section's defaults (and the run's seed) except ``changes``."""
    c = A2Config()
    opts = {"mode": c.mode, "sigma": c.sigma, "loss": c.loss, "alpha": c.alpha, "tau": c.tau,
            "weight": c.weight, "seed": RunConfig().seed, **changes}
    return A2Views(vae, latents=latents, **opts)



def _encoder(seed: int = 0):
    torch.manual_seed(seed)
    return build_encoder(architecture="alexnet32", width=0.125, views=VIEWS).train()


def _batch(b: int = 8, seed: int = 0, step: int = 0) -> GeneratorBatch:
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(b, 3, 32, 32, generator=g)
    return GeneratorBatch(rgb, torch.arange(b), torch.arange(b), b, step, sample_crop_params(b, 32, 32, generator=g))


def _contrastive(encoder, b: int = 8):
    """A memory-bank InfoNCE objective like the cmc method's (bank fixed, K = 16)."""
    bank = MemoryBank(VIEWS, 64, 128, 16, 0.5, "full", generator=torch.Generator().manual_seed(1))
    sample_idx = bank.sample(torch.arange(b), torch.Generator().manual_seed(2))

    def loss(z):
        scores = bank.scores(z, sample_idx)
        return infonce_loss([scores[p] for p in bank.pairs], 0.07)

    return loss


def _attack(gen, encoder, contrastive):
    def attack(rgb):
        return contrastive(gen.embed(encoder, encoder.preprocess.to_input(rgb), update_bn=False))
    return attack


# ---------------------------------------------------------------------- IDAA


def test_idaa_at_eps_zero_returns_the_input_exactly():
    enc = _encoder()
    gen = idaa_views(_vae(), eps=0.0, steps=2)
    batch = _batch()
    x_adv = gen.generate(batch, _attack(gen, enc, _contrastive(enc)))
    assert torch.equal(x_adv, batch.rgb)


def test_idaa_ascent_step_raises_the_loss_it_attacks():
    enc = _encoder()
    gen = idaa_views(_vae(), eps=0.05, steps=1)
    batch = _batch()
    attack = _attack(gen, enc, _contrastive(enc))
    with torch.no_grad():
        base = attack(batch.rgb)
        # the same objective at the un-attacked latent (x1 itself) and at the attacked one
        after = attack(gen.generate(batch, attack))
    assert after > base + 1e-4, (float(base), float(after))
    # ...and a step of the same size in the opposite direction lowers it: the sign is right
    opposite = idaa_views(gen.vae, eps=-0.05, steps=1)
    with torch.no_grad():
        lower = attack(opposite.generate(batch, attack))
    assert lower < base


def test_idaa_several_steps_stay_in_the_eps_ball():
    enc = _encoder()
    vae = _vae()
    captured = []
    orig_decode = vae.decode

    def spy(z):
        captured.append(z.detach().clone())
        return orig_decode(z)

    vae.decode = spy
    gen = idaa_views(vae, eps=0.1, steps=3)
    gen.generate(_batch(), _attack(gen, enc, _contrastive(enc)))
    z0, z_last = captured[0], captured[-1]
    assert (z_last - z0).abs().max() <= 0.1 + 1e-6
    assert len(captured) == 1 + 3 + 1  # G(x1), one decode per ascent step, the final view


def test_view_generation_gives_no_gradient_to_any_parameter():
    enc = _encoder()
    vae = _vae()
    gen = idaa_views(vae, eps=0.1, steps=2, separate_bn_of=enc)
    a2 = a2_views(vae, sigma=0.5)
    batch = _batch()
    gen.generate(batch, _attack(gen, enc, _contrastive(enc)))
    a2.generate(batch, None)
    for name, p in list(enc.named_parameters()) + list(gen.named_parameters()):
        assert p.grad is None, name
    assert all(not p.requires_grad and p.grad is None for p in vae.parameters())
    assert not vae.training
    assert "vae" not in dict(gen.named_children()) and not any(k.startswith("vae") for k in gen.state_dict())


def test_attack_forwards_leave_running_statistics_alone_and_separate_bn_is_separate():
    enc = _encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    gen = idaa_views(_vae(), eps=0.1, steps=2, separate_bn_of=enc)
    batch = _batch()
    adv_before = {k: v.clone() for k, v in gen.state_dict().items()}
    x_adv = gen.generate(batch, _attack(gen, enc, _contrastive(enc)))
    # generation: nothing changed anywhere
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k, v in gen.state_dict().items():
        assert torch.equal(v, adv_before[k]), k
    # embedding the adversarial view: only the separate BN's running statistics move
    gen.embed(enc, enc.preprocess.to_input(x_adv))
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    moved = [k for k, v in gen.state_dict().items() if "running_mean" in k and not torch.equal(v, adv_before[k])]
    assert moved
    # the separate BN's affine weights take gradients, the encoder's BN weights take none
    z = gen.embed(enc, enc.preprocess.to_input(x_adv))
    sum(t.sum() for t in z.values()).backward()
    assert all(p.grad is not None for p in gen.bn_params.values())
    bn_weight = enc.halves["l"].conv1[1].weight if hasattr(enc.halves["l"], "conv1") else None
    if bn_weight is not None:
        assert bn_weight.grad is None


# ---------------------------------------------------------------------- A2 losses


def _naive_ce(logits_row, target):
    m = max(logits_row)
    lse = m + math.log(sum(math.exp(v - m) for v in logits_row))
    return lse - logits_row[target]


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _emb(n_sets, b=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.functional.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1) for _ in range(n_sets)]


def _naive_alignment(E, G):
    b = len(E[0])
    return sum(_dot(e[i], g[i]) for e in E for g in G for i in range(b)) / (b * len(E) * len(G))


def _naive_a2(E, G, alpha, tau, same_view_negatives):
    """The mean over ordered expert-view pairs (x, y) of the cross-entropy of anchor E[x][i]
    against E[y] (positive at i), plus, for SimCLR's NT-Xent, the other rows of E[x]; minus
    alpha / tau times the alignment."""
    E = [e.tolist() for e in E]
    G = [g.tolist() for g in G]
    b = len(E[0])
    terms = []
    for x in range(len(E)):
        for y in range(len(E)):
            if x == y:
                continue
            total = 0.0
            for i in range(b):
                row = [_dot(E[x][i], E[y][j]) / tau for j in range(b)]
                if same_view_negatives:
                    row += [_dot(E[x][i], E[x][j]) / tau for j in range(b) if j != i]
                total += _naive_ce(row, i)
            terms.append(total / b)
    return sum(terms) / len(terms) - alpha / tau * _naive_alignment(E, G)


def naive_a2_infonce(E, G, alpha, tau):
    return _naive_a2(E, G, alpha, tau, same_view_negatives=False)


def naive_a2_simclr(E, G, alpha, tau):
    return _naive_a2(E, G, alpha, tau, same_view_negatives=True)


def naive_a2_full(E, G, tau):
    pool = [(s, i, v) for s, m in enumerate([e.tolist() for e in E] + [g.tolist() for g in G]) for i, v in enumerate(m)]
    total = 0.0
    for a, (sa, ia, va) in enumerate(pool):
        others = [(sb, ib, vb) for b, (sb, ib, vb) in enumerate(pool) if b != a]
        denom = math.log(sum(math.exp(_dot(va, vb) / tau) for _, _, vb in others))
        pos = [_dot(va, vb) / tau - denom for sb, ib, vb in others if ib == ia]
        total += -sum(pos) / len(pos)
    return total / len(pool)


@pytest.mark.parametrize("n_views", [2, 3])
def test_a2_losses_equal_naive_references(n_views):
    E, G = _emb(n_views, seed=1), _emb(n_views, seed=2)
    for alpha, tau in ((0.5, 0.5), (0.0, 0.2), (1.3, 0.9)):
        assert float(a2_infonce(E, G, alpha, tau)) == pytest.approx(naive_a2_infonce(E, G, alpha, tau), rel=1e-10)
        assert float(a2_simclr(E, G, alpha, tau)) == pytest.approx(naive_a2_simclr(E, G, alpha, tau), rel=1e-10)
        assert float(a2_full(E, G, alpha, tau)) == pytest.approx(naive_a2_full(E, G, tau), rel=1e-10)
    # the paper's case: two experts and ONE generated embedding
    one = G[:1]
    assert float(alignment(E[:2], one)) == pytest.approx(
        0.5 * (float((E[0] * one[0]).sum(1).mean()) + float((E[1] * one[0]).sum(1).mean())), rel=1e-12)


@pytest.mark.parametrize("fn", [a2_infonce, a2_simclr, a2_full])
def test_a2_alignment_pulls_the_generated_embedding_toward_its_anchors(fn):
    E = _emb(2, b=8, d=16, seed=3)
    g = _emb(2, b=8, d=16, seed=4)
    leaf = [t.clone().requires_grad_(True) for t in g]

    def cos_to_anchors(gs):
        return float(sum((torch.nn.functional.normalize(x.detach(), dim=1) * e).sum(1).mean() for x in gs for e in E))

    loss = fn(E, leaf, 0.5, 0.5)
    grads = torch.autograd.grad(loss, leaf)
    stepped = [t - 0.05 * gr for t, gr in zip(leaf, grads)]
    assert cos_to_anchors(stepped) > cos_to_anchors(g) + 1e-4
    if fn is not a2_full:
        # alpha = 0: the generated view plays no part in the loss
        loss0 = fn(E, leaf, 0.0, 0.5)
        grads0 = torch.autograd.grad(loss0, leaf, allow_unused=True, materialize_grads=True)
        assert all(float(gr.abs().max()) == 0.0 for gr in grads0)


# ---------------------------------------------------------------------- A2 views


def test_a2_perturb_at_sigma_zero_is_the_reconstruction_and_noise_scales_with_sigma():
    vae = _vae()
    batch = _batch()
    recon = vae.reconstruct(batch.rgb)
    assert torch.equal(a2_views(vae, sigma=0.0).generate(batch, None), recon)
    small = (a2_views(vae, sigma=0.01).generate(batch, None) - recon).abs().mean()
    large = (a2_views(vae, sigma=1.0).generate(batch, None) - recon).abs().mean()
    assert 0 < small < large


def test_a2_draws_do_not_depend_on_how_the_batch_is_split():
    vae = _vae()
    gen = a2_views(vae, sigma=0.7, seed=3)
    whole = _batch(b=8, step=5)
    full = gen.generate(whole, None)
    parts = torch.cat([gen.generate(p, None) for p in whole.chunk(2)])
    assert torch.allclose(full, parts, atol=1e-6)
    other_step = gen.generate(_batch(b=8, step=6), None)
    assert not torch.allclose(full, other_step)


def test_a2_search_mode_decodes_the_cached_latents_with_the_batch_crops():
    from metaug_training.augment import apply_crops

    vae = _vae()
    latents = torch.randn(8, 1, 32).half()
    gen = a2_views(vae, mode="search", latents=latents)
    batch = _batch(b=8)
    out = gen.generate(batch, None)
    want = apply_crops(vae.decode(latents[:, 0].float()), batch.crops, 32)
    assert torch.equal(out, want)


def test_sigma_calibration_hits_the_target_cosine():
    vae = _vae()
    rgb = _batch(b=32).rgb

    def features(x):  # centred pixels: a feature whose cosine falls steadily with sigma
        return x.flatten(1) - 0.5

    rec = calibrate_sigma(vae, features, rgb, target=0.9)
    assert abs(rec["cosine"] - 0.9) < 0.01
    gen = a2_views(vae, sigma=rec["sigma"])
    with torch.no_grad():
        mu = vae.encode(rgb)[0]
        noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))
        f0 = torch.nn.functional.normalize(features(vae.decode(mu)), dim=1)
        f1 = torch.nn.functional.normalize(features(vae.decode(mu + gen.sigma * noise)), dim=1)
    assert float((f0 * f1).sum(1).mean()) == pytest.approx(rec["cosine"], abs=1e-4)
