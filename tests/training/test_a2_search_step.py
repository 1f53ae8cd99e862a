"""``build_latent_cache_for``, the whole ``metaug-a2-search`` step: it decodes the dataset at the
VAE's own image size and searches exactly what the three separate steps did, passes the split
and limit through, and refuses a misspelt setting or a missing VAE / dataset with the fix."""

from __future__ import annotations

import inspect

import pytest
import torch
from conftest import REPO_ROOT

from metaug_features.errors import ConfigError
from metaug_training import a2_search
from metaug_training.a2_search import build_latent_cache, build_latent_cache_for
from metaug_training.config import A2_FEATURE_MODEL, DATASET_CACHE_DIR
from metaug_training.data import load_image_array
from metaug_training.vae import IDAAVAE, VAEConfig, VAEError, save_vae
from metaug_training.view_generators import read_latent_cache

HUB_MODEL = REPO_ROOT / "hub" / "cifar10-conv"
SEARCH = {"views": 2, "steps": 1, "batch_size": 16, "seed": 3, "log": None}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    """A random-init tiny VAE (32 px, latent 32): the search only needs a working frozen G."""
    torch.manual_seed(0)
    return save_vae(IDAAVAE(VAEConfig(channels=16, latent_dim=32)), tmp_path_factory.mktemp("vae") / "vae")


def test_one_call_searches_what_the_three_steps_did(cifar_images, vae_dir, tmp_path):
    """Same latents, bit for bit, and the same metadata as reading the VAE size, decoding the
    images and calling build_latent_cache by hand (what metaug-a2-search used to do itself)."""
    meta = build_latent_cache_for(str(cifar_images), vae_dir, tmp_path / "one", model=str(HUB_MODEL), limit=16,
                                  cache_dir=None, **SEARCH)
    data = load_image_array(str(cifar_images), split="train", size=32, cache_dir=None, limit=16)
    by_hand = build_latent_cache(vae_dir, str(HUB_MODEL), torch.from_numpy(data.images), data.fingerprint,
                                 tmp_path / "hand.safetensors", **SEARCH)
    assert meta == by_hand and meta["num_images"] == 16 and meta["fingerprint"] == data.fingerprint
    one, _ = read_latent_cache(tmp_path / "one.safetensors")  # the suffix is added, as before
    hand, _ = read_latent_cache(tmp_path / "hand.safetensors")
    assert one.shape == (16, 2, 32) and torch.equal(one, hand)


def test_images_are_decoded_at_the_vae_size_with_the_split_and_limit(cifar_images, tmp_path, monkeypatch):
    """A 16 px VAE gets 16 px images; split, limit and the model reach the steps unchanged."""
    seen = {}

    def fake_search(vae_dir, model_ref, images_u8, fingerprint, out, **settings):
        seen.update(shape=tuple(images_u8.shape), model=model_ref, settings=settings, fingerprint=fingerprint)
        return {}

    monkeypatch.setattr(a2_search, "build_latent_cache", fake_search)
    vae16 = save_vae(IDAAVAE(VAEConfig(image_size=16, channels=16, latent_dim=32)), tmp_path / "vae16")
    build_latent_cache_for(str(cifar_images), vae16, tmp_path / "c", split="test", limit=5, cache_dir=None,
                           steps=7, device="cpu")
    expected = load_image_array(str(cifar_images), split="test", size=16, cache_dir=None, limit=5)
    assert seen == {"shape": (5, 16, 16, 3), "model": A2_FEATURE_MODEL, "settings": {"steps": 7, "device": "cpu"},
                    "fingerprint": expected.fingerprint}


def test_a_misspelt_setting_is_refused_before_anything_loads(tmp_path):
    # The VAE and the data do not exist: the setting is reported first, with the right names.
    with pytest.raises(ConfigError, match=r"unknown search setting\(s\) \['view'\].*'views'.*'batch_size'") as e:
        build_latent_cache_for(str(tmp_path / "no-data"), tmp_path / "no-vae", tmp_path / "c", view=3)
    assert "images_u8" not in str(e.value)  # what the function fills in itself is not offered
    assert not list(tmp_path.iterdir())


def test_a_missing_vae_or_dataset_names_what_to_do(cifar_images, vae_dir, tmp_path):
    with pytest.raises(VAEError, match="metaug-train-vae"):
        build_latent_cache_for(str(cifar_images), tmp_path / "no-vae", tmp_path / "c", cache_dir=None)
    with pytest.raises(ConfigError, match="no-data"):
        build_latent_cache_for(str(tmp_path / "no-data"), vae_dir, tmp_path / "c", cache_dir=None)
    assert not (tmp_path / "c.safetensors").exists()


def test_the_data_defaults_are_the_trainers():
    """The step's split and limit are load_image_array's (a cache of other images is refused
    by the trainer), the encoder is A2's one feature model, the dataset cache the shared one."""
    step = inspect.signature(build_latent_cache_for).parameters
    data = inspect.signature(load_image_array).parameters
    assert step["split"].default == data["split"].default and step["limit"].default == data["limit"].default
    assert step["model"].default == A2_FEATURE_MODEL and step["cache_dir"].default == DATASET_CACHE_DIR
