"""The encoder as users call it: every accepted kind of image input, dtype and device casting,
the input-size check of forward, and the per-sample transform in a user's own DataLoader."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaug_features import build_encoder

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cifar10-sample"
CAT = SAMPLE / "cat" / "0000.jpg"


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder(architecture="alexnet32", width=0.125).eval()


@pytest.fixture(scope="module")
def cat_pixels() -> np.ndarray:
    return np.asarray(Image.open(CAT).convert("RGB"))  # uint8 [32, 32, 3]


def _odd_sized_image(seed: int = 0) -> np.ndarray:
    """A smooth uint8 RGB image of a size other than the model's (48 x 40), so resampling runs."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((40, 48), Image.Resampling.BICUBIC))


def test_single_path_is_one_image_not_its_letters(encoder):
    one = encoder.extract(str(CAT))
    assert one.shape == (1, encoder.feature_dim())
    assert torch.equal(one, encoder.extract([CAT]))  # str and Path, single and in a list


def test_numpy_hwc_uint8_equals_the_file(encoder, cat_pixels):
    assert torch.equal(encoder.extract(cat_pixels), encoder.extract(CAT))


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_numpy_modes_follow_the_decoder(encoder, mode):
    pil = Image.fromarray(_odd_sized_image()).convert(mode)
    arr = np.asarray(pil)  # [H, W] for L, [H, W, 4] for RGBA
    assert torch.equal(encoder.extract(arr), encoder.extract(pil))


def test_uint8_tensor_of_another_size_is_preprocessed_like_a_file(encoder, tmp_path):
    arr = _odd_sized_image()
    png = tmp_path / "odd.png"
    Image.fromarray(arr).save(png)
    chw = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    assert torch.equal(encoder.preprocess.load_batch([chw]), encoder.preprocess.load_batch([png]))
    assert torch.equal(encoder.extract(chw), encoder.extract(png))


def test_float_tensor_of_another_size_is_rgb_in_0_1(encoder):
    arr = _odd_sized_image()
    u8 = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    f32 = u8.float() / 255.0
    pixels_float = encoder.preprocess.load_batch([f32])
    pixels_u8 = encoder.preprocess.load_batch([u8])
    assert pixels_float.dtype == torch.float32 and pixels_float.shape == (1, 3, 32, 32)
    # The same resampling, once in float and once in 8 bits (PIL rounds after each of its two
    # separable passes): at most one level apart.
    assert (pixels_float * 255 - pixels_u8.float()).abs().max() <= 1.0 + 1e-3
    feats_float, feats_u8 = encoder.extract(f32), encoder.extract(u8)
    assert torch.nn.functional.cosine_similarity(feats_float, feats_u8).item() > 0.999
    # A 0..255 float tensor is a mistake the message explains, never silently clipped.
    with pytest.raises(ValueError, match=r"RGB in \[0, 1\].*\[0, 255\]"):
        encoder.extract(u8.float())
    with pytest.raises(ValueError, match="NaN"):
        encoder.extract(torch.full((3, 8, 8), float("nan")))


def test_mixed_list_and_batch_tensor(encoder, cat_pixels):
    u8 = torch.from_numpy(cat_pixels.copy()).permute(2, 0, 1)
    batch = torch.stack([u8, u8.flip(-1)])
    rows = encoder.extract(batch)
    assert rows.shape[0] == 2
    assert torch.allclose(rows[1:], encoder.extract(u8.flip(-1)), atol=1e-5)
    mixed = encoder.extract([CAT, u8.float() / 255.0, Image.open(CAT)])
    assert torch.allclose(mixed[0], mixed[1], atol=1e-5) and torch.allclose(mixed[0], mixed[2], atol=1e-5)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (np.zeros((3, 32, 32), np.uint8), ValueError, r"\[H, W, C\]"),
        (np.zeros((32, 32, 3), np.int32), TypeError, "uint8"),
        (torch.zeros(32, 32, 3, dtype=torch.uint8), ValueError, r"\[C, H, W\]"),
        (b"cat.jpg", TypeError, "bytes"),
        (3.5, TypeError, "unsupported image type"),
    ],
)
def test_bad_inputs_are_named(encoder, bad, error, match):
    with pytest.raises(error, match=match):
        encoder.extract([bad])


def test_half_precision_extracts(cat_pixels):
    torch.manual_seed(0)
    enc = build_encoder(architecture="alexnet32", width=0.125).eval()
    full = enc.extract(cat_pixels)
    half = enc.half().extract(cat_pixels)
    assert half.dtype == torch.float32  # features are returned in float32 whatever the weights
    assert torch.nn.functional.cosine_similarity(full, half).item() > 0.999


def test_forward_refuses_another_input_size(encoder):
    x = encoder.preprocess([CAT])
    assert encoder(x).shape == (1, encoder.feature_dim())
    big = torch.zeros(1, 3, 224, 224)
    with pytest.raises(ValueError, match=r"expected network input \[B, 3, 32, 32\], got shape \(1, 3, 224, 224\)"):
        encoder(big)
    with pytest.raises(TypeError, match="must be float"):
        encoder(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_forward_casts_to_the_weights_dtype(cat_pixels):
    torch.manual_seed(0)
    enc = build_encoder(architecture="alexnet32", width=0.125).eval()
    x = enc.preprocess([cat_pixels])  # float32
    with torch.inference_mode():
        ref = enc(x)
        out = enc.double()(x)
    assert out.dtype == torch.float64 and torch.allclose(out.float(), ref, atol=1e-4)


def test_preprocessor_repr_says_what_it_does(encoder):
    text = repr(encoder.preprocess)
    for part in ("resize_shorter_side=32", "center_crop=32", "bilinear", "lab", "50.0, 6.025, -6.6895", "[B, 3, 32, 32]"):
        assert part in text


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(self.paths[i])


def test_transform_in_a_users_dataloader(encoder):
    paths = sorted(SAMPLE.glob("*/0000.jpg"))
    transform = encoder.transform
    assert transform(paths[0]).shape == (3, 32, 32)
    pickle.dumps(transform)  # DataLoader workers under spawn need it picklable
    loader = torch.utils.data.DataLoader(_Files(paths, transform), batch_size=4, num_workers=2)
    with torch.inference_mode():
        feats = torch.cat([encoder(x) for x in loader])
    assert torch.allclose(feats, encoder.extract(paths), atol=1e-5)
    with pytest.raises(ValueError, match="one image"):
        transform(paths[:2])
