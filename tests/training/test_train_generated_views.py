"""IDAA and A2 generated views inside the trainer, on real CIFAR-10 images: their loss terms and
the sigma calibration record in log.jsonl, bit-exact resume with the generators' state in the
checkpoint, export and provenance, config validation, and A2's search mode with a latent cache
(built on the run's own images; one built on other images is refused)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import REPO_ROOT
from metaug_cli.a2_search import main as a2_search_main
from metaug_features import load_encoder
from metaug_features.errors import ConfigError
from metaug_features.model import MetAugEncoder
from metaug_training.a2_search import build_latent_cache
from metaug_training.checkpoint import load_checkpoint
from metaug_training.config import TrainConfig, load_config
from metaug_training.data import load_image_array
from metaug_training.trainer import train
from metaug_training.vae import IDAAVAE, VAEConfig, save_vae, vae_digest
from metaug_training.view_generators import read_latent_cache
from _train_helpers import assert_same_state

HUB_MODEL = REPO_ROOT / "hub" / "cifar10-conv"
VAE_LABEL = "VAE (not the paper's StyleGAN2)"


def tiny(cifar_images, out_dir, *overrides: str) -> list[str]:
    """A cheap run (as tests/training/test_train_loop.py's): 200 real images, width 0.125, views l,ab,
    K 64, batch 16, one thread; cmc unless an override says otherwise."""
    return [f"data.path={cifar_images}", "data.split=train", "data.cache_dir=", "data.num_workers=0",
            "method=cmc", "model.width=0.125", "model.views=l,ab", "bank.num_negatives=64", "optim.batch_size=16",
            "optim.epochs=3", "optim.milestones=1,2", f"run.out_dir={out_dir}", "run.num_threads=1",
            "run.quiet=true", "run.log_every=2", "run.ckpt_every=1000", "run.export=false", *overrides]


def idaa(vae, *extra: str) -> list[str]:
    return ["idaa.enabled=true", f"idaa.vae={vae}", "idaa.separate_bn=true", *extra]


def a2(vae, *extra: str) -> list[str]:
    return ["a2.enabled=true", f"a2.vae={vae}", *extra]


def records(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


def step_records(out_dir) -> list[dict]:
    return [r for r in records(out_dir) if "event" not in r and "step" in r and "loss" in r]


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    """A random-init tiny VAE folder (channels 16, latent 32): the generators only need a
    working frozen G, not a good one."""
    torch.manual_seed(0)
    return save_vae(IDAAVAE(VAEConfig(channels=16, latent_dim=32)), tmp_path_factory.mktemp("vae") / "vae")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


# ---------------------------------------------------------------------- loss terms and calibration


@pytest.mark.parametrize("method", [
    "cmc",
    "oucl",
    "metaug",
])
def test_idaa_run_logs_its_loss_term(cifar_images, tmp_path, vae_dir, method):
    res = train(load_config(None, tiny(cifar_images, tmp_path, f"method={method}", "metaug.meta_every=2",
                                       "run.max_steps=6", *idaa(vae_dir))))
    assert res.status == "max_steps" and res.step == 6
    recs = step_records(tmp_path)
    assert [r["step"] for r in recs] == [2, 4, 6]
    for r in recs:
        assert "loss_idaa" in r and torch.isfinite(torch.tensor(r["loss_idaa"])), r
        assert "loss_a2" not in r
    # the separate BN exists and trained: it left the encoder's clean-input BN behind
    gens = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["generators"]
    assert len(gens) == 1 and any(k.startswith("bn_params.") for k in gens[0])


def test_a2_run_logs_its_loss_term_and_the_sigma_calibration(cifar_images, tmp_path, vae_dir):
    cfg = load_config(None, tiny(cifar_images, tmp_path, "run.max_steps=6",
                                 *a2(vae_dir, "a2.sigma=0", f"a2.calibration_model={HUB_MODEL}",
                                     "a2.calibration_images=16")))
    assert train(cfg).step == 6
    recs = records(tmp_path)
    cal = [r for r in recs if r.get("event") == "a2-calibration"]
    assert len(cal) == 1, recs
    cal = cal[0]
    assert {"sigma", "cosine", "target_cosine"} <= cal.keys()
    assert cal["step"] == 0 and cal["images"] == 16 and cal["model"] == str(HUB_MODEL)
    assert cal["target_cosine"] == 0.85 and cal["sigma"] > 0
    assert recs.index(cal) < recs.index(step_records(tmp_path)[0])  # logged before the first step
    steps = step_records(tmp_path)
    assert [r["step"] for r in steps] == [2, 4, 6]
    assert all("loss_a2" in r and "loss_idaa" not in r for r in steps)
    # the calibrated sigma is what the generator kept (and checkpointed)
    gens = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["generators"]
    assert gens[0]["_extra_state"] == {"sigma": cal["sigma"]}


# ---------------------------------------------------------------------- resume


def test_resume_with_generators_equals_uninterrupted(cifar_images, tmp_path, vae_dir):
    """Steps [0, 8) in one run == [0, 4) + resume + [4, 8), IDAA (separate BN) and A2 both on:
    encoder, bank, optimiser (with IDAA's BN param group) and the generators' states."""
    gens = (*idaa(vae_dir), *a2(vae_dir, "a2.sigma=0.5"))
    train(load_config(None, tiny(cifar_images, tmp_path / "full", "run.max_steps=8", *gens)))
    part = tiny(cifar_images, tmp_path / "part", *gens)
    first = train(load_config(None, part + ["run.max_steps=4"]))
    assert first.status == "max_steps" and first.step == 4
    assert train(load_config(None, part + ["run.max_steps=8"]), resume=True).step == 8

    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert_same_state(full, resumed)
    enc_a, enc_b = full["encoder"], resumed["encoder"]
    assert enc_a.keys() == enc_b.keys() and all(torch.equal(enc_a[k], enc_b[k]) for k in enc_a)
    ga, gb = full["generators"], resumed["generators"]
    assert len(ga) == len(gb) == 2
    for a_sd, b_sd in zip(ga, gb):
        assert a_sd.keys() == b_sd.keys()
        for k in a_sd:
            if isinstance(a_sd[k], torch.Tensor):
                assert torch.equal(a_sd[k], b_sd[k]), k
            else:
                assert a_sd[k] == b_sd[k], k
    assert ga[1]["_extra_state"] == {"sigma": 0.5}
    # IDAA's separate BN was trained apart from the encoder's (the comparison above is not vacuous)
    bn_keys = [k for k in ga[0] if k.startswith("bn_params.")]
    assert bn_keys
    differs = [k for k in bn_keys
               if not torch.equal(ga[0][k], enc_a[k[len("bn_params."):].replace("__", ".")])]
    assert differs, "the separate BN parameters never moved away from the encoder's"
    # the optimiser trains the separate BN as an extra param group
    assert len(full["optimizer"]["param_groups"]) == 2
    # the part run's log has no second calibration record and continues at step 6
    assert [r["step"] for r in step_records(tmp_path / "part")] == [2, 4, 6, 8]


# ---------------------------------------------------------------------- export


def test_export_of_a_generator_run_loads_and_records_provenance(cifar_images, tmp_path, vae_dir):
    out = tmp_path / "run"
    cfg = load_config(None, tiny(cifar_images, out, "run.max_steps=5", "run.export=true", *idaa(vae_dir, "idaa.eps=0.2"),
                                 *a2(vae_dir, "a2.sigma=0.5", "a2.loss=simclr")))
    res = train(cfg)
    assert res.export_dir == out / "export"
    enc = load_encoder(res.export_dir)
    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
    assert enc.state_dict().keys() == ckpt["encoder"].keys()  # the clean-input encoder only, no separate BN

    trained = MetAugEncoder(TrainConfig.from_dict(ckpt["config"]).encoder_config())
    trained.load_state_dict(ckpt["encoder"])
    trained.eval()
    paths = sorted((cifar_images / "test" / "dog").glob("*.jpg"))[:8]
    for layer in enc.layers:
        assert torch.equal(enc.extract(paths, layer=layer), trained.extract(paths, layer=layer)), layer

    prov = json.loads((res.export_dir / "config.json").read_text())["provenance"]
    assert prov["method"] == "cmc" and prov["steps"] == 5
    assert prov["idaa"] == {"eps": 0.2, "steps": 1, "weight": 1.0, "separate_bn": True}
    assert prov["a2"]["generator"] == VAE_LABEL and "StyleGAN" in prov["a2"]["generator"]
    assert prov["a2"]["mode"] == "perturb" and prov["a2"]["loss"] == "simclr"
    assert enc.config.provenance["a2"]["generator"] == VAE_LABEL


# ---------------------------------------------------------------------- config validation


@pytest.mark.parametrize("overrides, key", [
    (["idaa.enabled=true"], "idaa.vae"),
    (["a2.enabled=true", "a2.vae=somewhere", "a2.mode=search"], "a2.cache"),
    (["a2.loss=bogus"], "a2.loss"),
    (["a2.enabled=true", "a2.vae=somewhere", "a2.loss=bogus"], "a2.loss"),
    (["idaa.steps=0"], "idaa.steps"),
    (["a2.enabled=true"], "a2.vae"),
    (["a2.mode=bogus"], "a2.mode"),
    (["a2.enabled=true", "a2.vae=x", "a2.calibration_model="], "a2.calibration_model"),
    (["a2.target_cosine=1"], "a2.target_cosine"),
    (["a2.calibration_images=1"], "a2.calibration_images"),
    (["idaa.eps=-0.1"], "idaa.eps"),
])
def test_generator_config_errors_name_the_key(cifar_images, tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_config(None, tiny(cifar_images, tmp_path, *overrides))


def test_a_missing_vae_folder_is_a_clear_error(cifar_images, tmp_path):
    from metaug_training.vae import VAEError

    with pytest.raises(VAEError, match="config.json is missing"):
        train(load_config(None, tiny(cifar_images, tmp_path, "run.max_steps=1", *idaa(tmp_path / "no-vae"))))


# ---------------------------------------------------------------------- A2 search mode


LIMIT = 64


def _cache(cifar_images, vae_dir, out, limit: int):
    data = load_image_array(str(cifar_images), split="train", size=32, cache_dir=None, limit=limit)
    meta = build_latent_cache(vae_dir, str(HUB_MODEL), torch.from_numpy(data.images), data.fingerprint, out,
                              views=2, steps=1, batch_size=32, log=None)
    return data, meta


def test_a2_search_mode_trains_from_a_latent_cache_of_its_images(cifar_images, tmp_path, vae_dir):
    cache = tmp_path / "latents.safetensors"
    data, meta = _cache(cifar_images, vae_dir, cache, LIMIT)
    assert meta["fingerprint"] == data.fingerprint and meta["num_images"] == LIMIT and meta["generator"] == VAE_LABEL
    assert meta["vae_sha256"] == vae_digest(vae_dir)
    latents, on_disk = read_latent_cache(cache)
    assert latents.shape == (LIMIT, 2, 32) and latents.dtype == torch.float16 and on_disk == meta
    assert not cache.with_suffix(".partial.safetensors").exists()

    base = tiny(cifar_images, tmp_path / "run", f"data.limit={LIMIT}", "run.max_steps=4",
                *a2(vae_dir, "a2.mode=search", f"a2.cache={cache}"))
    res = train(load_config(None, base))
    assert res.step == 4
    steps = step_records(tmp_path / "run")
    assert [r["step"] for r in steps] == [2, 4] and all("loss_a2" in r for r in steps)
    assert not [r for r in records(tmp_path / "run") if r.get("event") == "a2-calibration"]

    # a cache searched on other images (another limit) is refused
    other = tmp_path / "other.safetensors"
    _cache(cifar_images, vae_dir, other, 48)
    with pytest.raises(ConfigError, match="'a2.cache'.*other images"):
        train(load_config(None, tiny(cifar_images, tmp_path / "run2", f"data.limit={LIMIT}", "run.max_steps=1",
                                     *a2(vae_dir, "a2.mode=search", f"a2.cache={other}"))))
    # ... and so is one searched with another VAE
    torch.manual_seed(1)
    vae2 = save_vae(IDAAVAE(VAEConfig(channels=16, latent_dim=32)), tmp_path / "vae2")
    with pytest.raises(ConfigError, match="'a2.cache'.*another VAE"):
        train(load_config(None, tiny(cifar_images, tmp_path / "run3", f"data.limit={LIMIT}", "run.max_steps=1",
                                     *a2(vae2, "a2.mode=search", f"a2.cache={cache}"))))
    # ... and a missing cache file names the key
    with pytest.raises(ConfigError, match="'a2.cache'.*no latent cache"):
        train(load_config(None, tiny(cifar_images, tmp_path / "run4", f"data.limit={LIMIT}", "run.max_steps=1",
                                     *a2(vae_dir, "a2.mode=search", f"a2.cache={tmp_path / 'nope.safetensors'}"))))


def test_a2_search_cli_cache_is_accepted_by_the_trainer(cifar_images, tmp_path, vae_dir, monkeypatch):
    """metaug-a2-search with the run's split and limit makes a cache the trainer accepts."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the command's dataset cache lands here
    cache = tmp_path / "cli-latents.safetensors"
    res = CliRunner().invoke(a2_search_main, [str(cifar_images), str(vae_dir), "-o", str(cache), "--model", str(HUB_MODEL),
                                              "--limit", "32", "--steps", "1", "--batch-size", "32",
                                              "--device", "cpu"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert f"wrote {cache}" in res.output
    latents, meta = read_latent_cache(cache)
    assert latents.shape == (32, 2, 32) and meta["steps"] == 1
    out = tmp_path / "run"
    assert train(load_config(None, tiny(cifar_images, out, "data.limit=32", "run.max_steps=2",
                                        *a2(vae_dir, "a2.mode=search", f"a2.cache={cache}")))).step == 2
    assert "loss_a2" in step_records(out)[-1]


def test_a_vae_of_another_image_size_is_refused_before_training(cifar_images, tmp_path):
    from metaug_training.vae import IDAAVAE, VAEConfig, save_vae

    vae16 = save_vae(IDAAVAE(VAEConfig(image_size=16, channels=16, latent_dim=32)), tmp_path / "vae16")
    with pytest.raises(ConfigError, match="16 px images but the encoder's training crops are 32 px"):
        train(load_config(None, tiny(cifar_images, tmp_path / "run", "run.max_steps=1", "idaa.enabled=true",
                                     f"idaa.vae={vae16}")))
