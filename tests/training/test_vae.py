"""The IDAA-shaped VAE (metaug_training/vae.py, metaug_training/vae_train.py, metaug-train-vae): its loss and
PSNR against naive loops, the folder format (bit-exact round trip, frozen on load, refusals),
training on real CIFAR-10 images with its report and resume, and the command end to end."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from metaug_cli.train_vae import main as train_vae_main
from metaug_training.checkpoint import CheckpointError
from metaug_training.vae import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    IDAAVAE,
    VAEConfig,
    VAEError,
    load_vae,
    psnr,
    read_vae_config,
    save_vae,
    vae_loss,
)
from metaug_training.vae_train import STATE_NAME, train_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = VAEConfig(channels=16, latent_dim=32)


def _small_vae(seed: int = 0, latent_dim: int = 32) -> IDAAVAE:
    torch.manual_seed(seed)
    return IDAAVAE(VAEConfig(channels=16, latent_dim=latent_dim))


def _train(cifar_images, out, **kw):
    args = dict(epochs=1, batch_size=16, limit=64, cache_dir=None, device="cpu", config=SMALL, log=None)
    args.update(kw)
    return train_vae(str(cifar_images), out, **args)


@pytest.fixture(scope="module")
def trained(cifar_images, tmp_path_factory):
    """A tiny VAE trained for 1 epoch on 64 real training images: (folder, report, log lines)."""
    out = tmp_path_factory.mktemp("vae") / "vae"
    lines: list[str] = []
    report = _train(cifar_images, out, log=lines.append)
    return out, report, lines


# ---------------------------------------------------------------------- loss and PSNR


def test_vae_loss_equals_a_naive_loop_of_its_formula():
    g = torch.Generator().manual_seed(0)
    b, s, d = 5, 8, 7
    x = torch.rand(b, 3, s, s, generator=g, dtype=torch.float64)
    x_rec = torch.rand(b, 3, s, s, generator=g, dtype=torch.float64)
    mu = torch.randn(b, d, generator=g, dtype=torch.float64)
    logvar = torch.randn(b, d, generator=g, dtype=torch.float64)
    kl_weight = 0.3
    total, mse, kl = vae_loss(x, x_rec, mu, logvar, kl_weight)

    sq, count = 0.0, 0
    for i in range(b):
        for c in range(3):
            for h in range(s):
                for w in range(s):
                    sq += (float(x_rec[i, c, h, w]) - float(x[i, c, h, w])) ** 2
                    count += 1
    want_mse = sq / count
    kls = []
    for i in range(b):
        k = 0.0
        for j in range(d):
            lv, m = float(logvar[i, j]), float(mu[i, j])
            k += -0.5 * (1 + lv - m * m - math.exp(lv))
        kls.append(k / (3 * s * s))  # per image, divided by its pixel values
    want_kl = sum(kls) / b
    assert mse.dtype == torch.float64 and kl.dtype == torch.float64
    assert float(mse) == pytest.approx(want_mse, rel=1e-12, abs=1e-15)
    assert float(kl) == pytest.approx(want_kl, rel=1e-12, abs=1e-15)
    assert float(total) == pytest.approx(want_mse + kl_weight * want_kl, rel=1e-12, abs=1e-15)
    # kl_weight 0: the reconstruction term alone
    assert float(vae_loss(x, x_rec, mu, logvar, 0.0)[0]) == pytest.approx(want_mse, rel=1e-12)


def test_kl_term_is_zero_at_the_prior():
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    zeros = torch.zeros(3, 4, dtype=torch.float64)
    total, mse, kl = vae_loss(x, x, zeros, zeros, 1.0)
    assert float(kl) == 0.0 and float(mse) == 0.0 and float(total) == 0.0


def test_psnr_equals_a_naive_per_image_computation():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 6, 6, generator=g)
    y = (x + 0.1 * torch.randn(4, 3, 6, 6, generator=g)).clamp(0, 1)
    got = psnr(x, y)
    assert got.shape == (4,)
    for i in range(4):
        sq = [(float(a) - float(b)) ** 2 for a, b in zip(x[i].flatten(), y[i].flatten())]
        mse = sum(sq) / len(sq)
        assert float(got[i]) == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    # uint8-derived images are compared in float; identical images give a finite (clamped) value
    same = psnr(x, x)
    assert torch.isfinite(same).all() and (same > 100).all()


# ---------------------------------------------------------------------- folder I/O


def test_save_load_round_trip_is_bit_exact_and_frozen(tmp_path):
    vae = _small_vae(3)
    # make the BN running statistics non-trivial so the buffers are checked too
    vae.train()
    with torch.no_grad():
        vae(torch.rand(4, 3, 32, 32))
    folder = save_vae(vae, tmp_path / "v")
    assert (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    assert cfg["format"] == "metaug-vae" and cfg["version"] == 1 and cfg["latent_dim"] == 32 and cfg["channels"] == 16
    assert read_vae_config(folder) == vae.config

    loaded = load_vae(folder)
    a, b = vae.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert not loaded.training and all(not m.training for m in loaded.modules())
    params = list(loaded.parameters())
    assert params and all(not p.requires_grad for p in params)
    # the loaded VAE computes what the saved one does (eval mode)
    x = torch.rand(2, 3, 32, 32)
    vae.eval()
    with torch.no_grad():
        assert torch.equal(loaded.reconstruct(x), vae.reconstruct(x))


def test_load_refuses_a_missing_folder(tmp_path):
    with pytest.raises(VAEError, match="config.json is missing"):
        load_vae(tmp_path / "nope")
    with pytest.raises(VAEError, match="config.json is missing"):
        read_vae_config(tmp_path / "nope")


def test_load_refuses_another_format(tmp_path):
    folder = save_vae(_small_vae(), tmp_path / "v")
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    cfg["format"] = "metaug-encoder"
    (folder / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(VAEError, match="not a metaug VAE config.*metaug-encoder"):
        read_vae_config(folder)
    with pytest.raises(VAEError, match="not a metaug VAE config"):
        load_vae(folder)


def test_load_refuses_an_unsupported_version(tmp_path):
    folder = save_vae(_small_vae(), tmp_path / "v")
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    cfg["version"] = 2
    (folder / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(VAEError, match="version 2 is not supported"):
        load_vae(folder)


def test_load_refuses_weights_that_do_not_match_the_config(tmp_path):
    folder = save_vae(_small_vae(latent_dim=16), tmp_path / "v")
    cfg = json.loads((folder / CONFIG_NAME).read_text())
    cfg["latent_dim"] = 32
    (folder / CONFIG_NAME).write_text(json.dumps(cfg))
    assert read_vae_config(folder).latent_dim == 32  # the config alone is well-formed
    with pytest.raises(VAEError, match="does not hold the weights of the VAE described by"):
        load_vae(folder)


def test_load_refuses_a_non_safetensors_weights_file(tmp_path):
    folder = save_vae(_small_vae(), tmp_path / "v")
    (folder / WEIGHTS_NAME).write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(VAEError, match="not a readable safetensors file"):
        load_vae(folder)
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(VAEError, match="no VAE weights"):
        load_vae(folder)


def test_read_config_refuses_malformed_values(tmp_path):
    folder = save_vae(_small_vae(), tmp_path / "v")
    good = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text("{not json")
    with pytest.raises(VAEError, match="not readable JSON"):
        read_vae_config(folder)
    (folder / CONFIG_NAME).write_text(json.dumps({**good, "image_size": 30}))
    with pytest.raises(VAEError, match="multiple of 4"):
        read_vae_config(folder)
    (folder / CONFIG_NAME).write_text(json.dumps({k: v for k, v in good.items() if k != "channels"}))
    with pytest.raises(VAEError, match="lacks the key 'channels'"):
        read_vae_config(folder)


# ---------------------------------------------------------------------- training


def test_train_vae_writes_a_loadable_folder_with_its_report(trained, cifar_images):
    out, report, lines = trained
    vae = load_vae(out)
    assert vae.config.latent_dim == 32 and vae.config.channels == 16
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    assert report["test_psnr_db"] > 5, report
    assert "test split" in report["psnr_measured_on"] and "200 images" in report["psnr_measured_on"]
    assert report["num_train"] == 64 and report["epochs"] == 1 and report["dataset"] == cifar_images.name
    # the report is stored as config.json's record
    assert read_vae_config(out).record == report
    assert (out / STATE_NAME).is_file()
    assert any(line.startswith("epoch 1/1:") for line in lines)
    assert any("PSNR" in line and "test split" in line for line in lines)


def test_train_vae_without_a_test_split_holds_out_training_images(cifar_images, tmp_path):
    flat = tmp_path / "flat"
    for p in sorted((cifar_images / "train").rglob("*.jpg"))[:50]:
        (flat / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, flat / p.parent.name / p.name)
    report = _train(flat, tmp_path / "vae", limit=0)
    assert report["psnr_measured_on"].startswith("held-out"), report
    assert report["psnr_measured_on"] == "held-out 1 of 50 training images"
    assert report["num_train"] == 49 and report["test_psnr_db"] > 5


def test_train_vae_resumes_at_the_last_whole_epoch(cifar_images, tmp_path):
    out = tmp_path / "vae"
    first: list[str] = []
    _train(cifar_images, out, epochs=1, log=first.append)
    assert torch.load(out / STATE_NAME, weights_only=True)["epoch"] == 1
    after_first = load_file(str(out / WEIGHTS_NAME))
    second: list[str] = []
    report = _train(cifar_images, out, epochs=2, resume=True, log=second.append)
    assert "resuming VAE training at epoch 1" in second
    epochs = [line.split(":")[0] for line in second if line.startswith("epoch ")]
    assert epochs == ["epoch 2/2"], second
    assert report["epochs"] == 2
    assert torch.load(out / STATE_NAME, weights_only=True)["epoch"] == 2
    after_second = load_file(str(out / WEIGHTS_NAME))
    assert any(not torch.equal(after_first[k], after_second[k]) for k in after_first)

    # resuming at the end trains nothing more
    third: list[str] = []
    _train(cifar_images, out, epochs=2, resume=True, log=third.append)
    assert "resuming VAE training at epoch 2" in third
    assert not [line for line in third if line.startswith("epoch ")]

    # the resumed run equals an uninterrupted two-epoch run, bit for bit
    _train(cifar_images, tmp_path / "straight", epochs=2)
    straight = load_file(str(tmp_path / "straight" / WEIGHTS_NAME))
    assert all(torch.equal(straight[k], after_second[k]) for k in straight)

    # other images (another limit): refused
    with pytest.raises(CheckpointError, match="trained on other images"):
        _train(cifar_images, out, epochs=3, limit=48, resume=True)


def test_train_vae_without_a_test_split_does_not_call_training_images_a_test_split(cifar_images, tmp_path):
    """A folder holding only train/: loading a 'test' split would read the whole folder, i.e.
    the training images; the PSNR must be measured on held-out images instead."""
    only_train = tmp_path / "only-train"
    shutil.copytree(cifar_images / "train", only_train / "train")
    report = _train(only_train, tmp_path / "vae", limit=0)
    assert report["psnr_measured_on"].startswith("held-out"), report["psnr_measured_on"]


def test_train_vae_refuses_a_batch_larger_than_the_images(cifar_images, tmp_path):
    with pytest.raises(ValueError, match="batch_size 128 is larger than the 64 training images"):
        _train(cifar_images, tmp_path / "vae", batch_size=128)


# ---------------------------------------------------------------------- the command


def test_train_vae_cli_end_to_end(cifar_images, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the command's dataset cache lands here
    out = tmp_path / "vae"
    res = CliRunner().invoke(train_vae_main, [str(cifar_images), "-o", str(out), "--limit", "48", "--epochs", "1",
                                              "--batch-size", "16", "--latent-dim", "32", "--device", "cpu"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "epoch 1/1:" in res.output
    assert f"VAE saved to {out}: PSNR" in res.output and "dB on the test split (200 images)" in res.output
    vae = load_vae(out)
    assert vae.config.latent_dim == 32 and vae.config.image_size == 32
    assert json.loads((out / "report.json").read_text())["num_train"] == 48


def test_train_vae_cli_refuses_a_bad_image_size(cifar_images, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(train_vae_main, [str(cifar_images), "-o", str(tmp_path / "vae"), "--limit", "32",
                                              "--epochs", "1", "--batch-size", "16", "--image-size", "30"])
    assert res.exit_code != 0
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Error:" in res.output and "image_size must be a multiple of 4" in res.output and "30" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "vae").exists()


def test_train_vae_cli_refuses_a_missing_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(train_vae_main, [str(tmp_path / "nowhere"), "-o", str(tmp_path / "vae")])
    assert res.exit_code != 0 and isinstance(res.exception, SystemExit), repr(res.exception)
    assert "does not exist" in res.output and "Traceback" not in res.output
