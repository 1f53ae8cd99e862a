"""Where timm and open_clip users look: ``encoder.transform``, ``encoder.input_size`` and
``load_encoder(..., dtype=)``."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from metaug_features import build_encoder, load_encoder, save_pretrained
from metaug_features.model_io import parse_dtype

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cifar10-sample"


@pytest.mark.parametrize("overrides, side", [
    ({"architecture": "alexnet32"}, 32),
    ({"architecture": "alexnet224"}, 224),
    ({"architecture": "resnet50", "stem": "cifar", "views": ("l",)}, 32),
    ({"architecture": "resnet50", "input_size": 96, "views": ("l",)}, 96),
])
def test_input_size_is_the_configs(overrides, side):
    with torch.device("meta"):  # no weights needed to know the geometry
        enc = build_encoder(**overrides)
    assert enc.input_size == enc.config.input_size == side


def test_transform_is_the_per_sample_preprocessing():
    enc = build_encoder(architecture="alexnet32", width=0.25).eval()
    files = sorted(SAMPLE.glob("*/0000.jpg"))[:3]
    x = enc.transform(files[0])
    assert x.shape == (3, enc.input_size, enc.input_size) and x.dtype == torch.float32
    assert torch.equal(x, enc.preprocess.transform(files[0]))
    restored = pickle.loads(pickle.dumps(enc.transform))  # DataLoader workers under spawn
    batch = torch.stack([restored(f) for f in files])
    with torch.inference_mode():
        assert torch.allclose(enc(batch), enc.extract(files), atol=1e-5)
    with pytest.raises(ValueError, match="one image"):
        enc.transform(files)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_pretrained(build_encoder(architecture="alexnet32", width=0.25), tmp_path_factory.mktemp("m") / "model")


@pytest.mark.parametrize("dtype", ["bfloat16", "torch.bfloat16", torch.bfloat16])
def test_dtype_casts_the_weights_after_loading(model_dir, dtype):
    files = sorted(SAMPLE.glob("*/0001.jpg"))[:4]
    full = load_encoder(model_dir)
    half = load_encoder(model_dir, dtype=dtype)
    floats = {t.dtype for t in half.state_dict().values() if t.is_floating_point()}
    assert floats == {torch.bfloat16}
    assert half.halves["l"].conv1[1].num_batches_tracked.dtype == torch.int64  # counters stay integers
    assert not half.training
    got, ref = half.extract(files), full.extract(files)
    # Documented: float32 on the CPU whatever the dtype; the values carry bfloat16's rounding.
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == ref.shape
    assert not torch.equal(got, ref)
    assert torch.allclose(got, ref, rtol=0.05, atol=0.05 * ref.abs().max().item())


def test_default_dtype_is_float32(model_dir):
    enc = load_encoder(model_dir)
    assert {t.dtype for t in enc.parameters()} == {torch.float32}


@pytest.mark.parametrize("bad", ["int8", "half", "float8", torch.int64, 16])
def test_bad_dtype_names_the_choices_before_loading(bad):
    with pytest.raises(ValueError, match=r"dtype must be one of \['float32', 'float16', 'bfloat16', 'float64'\]"):
        load_encoder("no-such-model-anywhere", dtype=bad)  # the dtype is checked before the reference


def test_parse_dtype_accepts_torch_spellings():
    assert parse_dtype("float16") is parse_dtype("torch.float16") is parse_dtype(torch.float16) is torch.float16
