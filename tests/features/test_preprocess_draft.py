"""Large JPEGs decode through PIL's draft mode (DCT scaling) in ``Preprocessor.load_image``:
the reduction chosen, pixels close to a full decode, EXIF orientation, the bomb guard on the
declared size, and everything else (small JPEGs, other formats, PIL images) bit-exact as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

from metaug_features import EncoderConfig, ImageDecodeError
from metaug_features.preprocess import JPEG_DRAFT_MIN_RATIO, Preprocessor, center_box, draft_scale


@pytest.fixture
def pre32():
    return Preprocessor(EncoderConfig(architecture="alexnet32"))


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Photo-like RGB: a coarse random scene upsampled (smooth regions, soft edges) plus grain."""
    rng = np.random.default_rng(seed)
    scene = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    arr = np.asarray(scene, dtype=np.float32) + rng.normal(0, 3, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _reference(pre: Preprocessor, src) -> np.ndarray:
    """The pixels of metaug-features 0.1.0: full decode, EXIF transpose, RGB, centre box
    resampled bilinear (written out here so the test does not depend on the code under test)."""
    img = Image.open(src) if not isinstance(src, Image.Image) else src
    img.load()
    img = ImageOps.exif_transpose(img).convert("RGB")
    s = pre.input_size
    img = img.resize((s, s), Image.Resampling.BILINEAR, box=center_box(img.width, img.height, pre.resize_size, s))
    return np.asarray(img).transpose(2, 0, 1)


@pytest.fixture
def draft_spy(monkeypatch):
    """Records (requested size, size after draft) of every JpegImageFile.draft call."""
    calls: list[tuple[tuple[int, int], tuple[int, int]]] = []
    original = JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        calls.append((size, self.size))
        return result

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    return calls


# ---------------------------------------------------------------------- the scale (pure)
@pytest.mark.parametrize(
    "size, arch, expected",
    [
        ((4000, 3000), "alexnet32", 8),   # 12 MP photo: box 3000 -> 375 decoded pixels for 32
        ((2000, 1500), "alexnet32", 8),
        ((32, 32), "alexnet32", 1),       # CIFAR: never drafted
        ((255, 255), "alexnet32", 1),     # box / 2 = 127.5 < 4 x 32
        ((256, 192), "alexnet32", 1),     # the box is the shorter side: 192 / 2 = 96 < 128
        ((256, 256), "alexnet32", 2),     # exactly 4x the input after halving
        ((1024, 768), "alexnet32", 4),    # 768 / 8 = 96 < 128 <= 768 / 4
        ((2048, 2048), "alexnet224", 2),  # box 1792 (resize 256, crop 224): 896 = 4 x 224
        ((2047, 4000), "alexnet224", 1),
        ((4000, 3000), "alexnet224", 2),  # box 2625 -> 1312 at 1/2, 656 < 896 at 1/4
    ],
)
def test_draft_scale_keeps_a_margin_over_the_input_in_the_box(size, arch, expected):
    cfg = EncoderConfig(architecture=arch)
    k = draft_scale(*size, cfg.resize_size, cfg.input_size)
    assert k == expected
    box_side = min(size) * cfg.input_size / cfg.resize_size
    assert k == 1 or box_side / k >= JPEG_DRAFT_MIN_RATIO * cfg.input_size
    assert k == 8 or box_side / (2 * k) < JPEG_DRAFT_MIN_RATIO * cfg.input_size  # the largest such scale


# ---------------------------------------------------------------------- large JPEGs
@pytest.mark.parametrize("progressive", [False, True])
def test_large_jpeg_is_decoded_reduced_and_close_to_full_decode(pre32, tmp_path, draft_spy, progressive):
    path = tmp_path / "photo.jpg"
    _photo(2000, 1500).save(path, quality=90, progressive=progressive)
    out = pre32.load_image(path)
    # 1/8 scale; 1500 is not a multiple of 8, so the last decoded row stands for half a block.
    assert draft_spy == [((250, 187), (250, 188))]
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    ref = _reference(pre32, path)
    diff = np.abs(out.numpy().astype(int) - ref.astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 2
    # draft=False is the full decode, bit for bit (what benchmarks/draft_decode.py compares with).
    assert np.array_equal(pre32.load_image(path, draft=False).numpy(), ref)
    assert len(draft_spy) == 1


@pytest.mark.parametrize("size, decoded", [((256, 256), (128, 128)), ((1024, 768), (256, 192))])
def test_jpegs_at_the_threshold_stay_within_a_level_or_two(pre32, tmp_path, size, decoded, draft_spy):
    """The least reduced case (centre box exactly JPEG_DRAFT_MIN_RATIO x the input after
    reduction) on a resized photo, the usual content of such files."""
    path = tmp_path / "resized.jpg"
    _photo(4 * size[0], 4 * size[1]).resize(size, Image.Resampling.LANCZOS).save(path, quality=90)
    out = pre32.load_image(path).numpy().astype(int)
    assert draft_spy[0][1] == decoded
    diff = np.abs(out - _reference(pre32, path).astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 2


def test_box_is_centred_exactly_on_sizes_that_are_not_multiples_of_the_scale(pre32, tmp_path):
    """A thin bright line through the image centre stays at the centre of the output: the box is
    mapped by the exact scale, not computed on the rounded-up decoded size."""
    arr = np.full((1500, 2001, 3), 40, np.uint8)
    arr[:, 996:1005] = 250  # 9 columns centred on x = 1000.5, the centre of 2001 columns
    path = tmp_path / "line.jpg"
    Image.fromarray(arr).save(path, quality=95)
    out = pre32.load_image(path).float().mean(0)  # [32, 32]
    ref = torch.from_numpy(_reference(pre32, path).copy()).float().mean(0)
    profile, ref_profile = out.mean(0), ref.mean(0)
    centroid = lambda p: float((p - p.min()) @ torch.arange(32.0) / (p - p.min()).sum())  # noqa: E731
    assert abs(centroid(profile) - centroid(ref_profile)) < 0.02  # output pixels
    assert abs(centroid(profile) - 15.5) < 0.05


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_of_large_jpeg_matches_full_decode(pre32, tmp_path, orientation, draft_spy):
    img = np.array(_photo(2000, 1500, seed=orientation))
    img[300:700, 300:700] = (255, 255, 0)  # a bright corner of the centre box: shows any wrong turn
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    Image.fromarray(img).save(path, quality=90, exif=exif.tobytes())
    out = pre32.load_image(path).numpy().astype(int)
    assert draft_spy and draft_spy[0][1] == (250, 188)  # drafted in the stored orientation
    ref = _reference(pre32, path).astype(int)
    assert np.abs(out - ref).mean() < 0.5
    unrotated = _reference(pre32, Image.fromarray(img)).astype(int)
    assert np.abs(out - unrotated).mean() > 10  # the orientation was applied, not ignored


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_large_greyscale_and_cmyk_jpegs(pre32, tmp_path, mode, draft_spy):
    path = tmp_path / f"photo-{mode}.jpg"
    _photo(1200, 900).convert(mode).save(path, quality=90)
    out = pre32.load_image(path)
    assert draft_spy and out.shape == (3, 32, 32) and out.dtype == torch.uint8
    assert np.abs(out.numpy().astype(int) - _reference(pre32, path).astype(int)).mean() < 0.5


def test_large_mpo_is_drafted_like_a_jpeg(pre32, tmp_path, draft_spy):
    """Camera MPO files (JPEG + extra frames) are JpegImageFiles; the first frame is decoded."""
    first, second = _photo(1600, 1200, seed=1), _photo(1600, 1200, seed=2)
    path = tmp_path / "camera.mpo"
    first.save(path, save_all=True, append_images=[second], quality=90)
    out = pre32.load_image(path)
    assert draft_spy
    assert np.abs(out.numpy().astype(int) - _reference(pre32, path).astype(int)).mean() < 0.5


def test_bomb_guard_uses_the_declared_size_before_drafting(tmp_path, draft_spy):
    path = tmp_path / "big.jpg"
    _photo(2000, 1500).save(path, quality=80)
    pre = Preprocessor(EncoderConfig(architecture="alexnet32"), max_pixels=1_000_000)
    with pytest.raises(ImageDecodeError, match="decompression bomb") as e:
        pre.load_image(path)
    assert "2000x1500" in str(e.value)  # the declared size, not the 250 x 188 a draft would decode
    assert draft_spy == []


def test_truncated_large_jpeg_is_a_reason(pre32, tmp_path):
    data = (tmp_path / "p.jpg")
    _photo(2000, 1500).save(data, quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(ImageDecodeError) as e:
        pre32.load_image(cut)
    assert e.value.reason == "truncated or corrupt image"


# ---------------------------------------------------------------------- unchanged
@pytest.mark.parametrize("size", [(32, 32), (100, 80), (255, 255), (4000, 200)])
def test_small_jpegs_are_bit_exact_as_before(pre32, tmp_path, size, draft_spy):
    path = tmp_path / "small.jpg"
    _photo(*size).save(path, quality=90)
    assert np.array_equal(pre32.load_image(path).numpy(), _reference(pre32, path))
    assert draft_spy == []


def test_cifar_jpegs_are_bit_exact_as_before(pre32, cifar_images, draft_spy):
    for f in sorted((cifar_images / "test" / "dog").glob("*.jpg"))[:5]:
        assert np.array_equal(pre32.load_image(f).numpy(), _reference(pre32, f))
    assert draft_spy == []


def test_large_png_and_pil_images_are_not_drafted(pre32, tmp_path, draft_spy):
    png = tmp_path / "photo.png"
    _photo(1200, 900).save(png)
    assert np.array_equal(pre32.load_image(png).numpy(), _reference(pre32, png))
    jpg = tmp_path / "photo.jpg"
    _photo(1200, 900).save(jpg, quality=90)
    opened = Image.open(jpg)  # the caller's object: not drafted behind the caller's back
    out = pre32.load_image(opened)
    assert opened.size == (1200, 900) and draft_spy == []
    assert np.array_equal(out.numpy(), _reference(pre32, jpg))


def test_recorded_benchmark_matches_the_code_and_results_md():
    """benchmarks/draft_decode.json was measured with this threshold, and its RESULTS.md section
    is the one the record tooling renders from it (not edited by hand)."""
    import json

    from metaug_release.draft_decode_table import SECTION, markdown
    from metaug_release.paths import BENCHMARKS
    from metaug_release.sections import read_section

    record = json.loads((BENCHMARKS / "draft_decode.json").read_text())
    assert record["min_ratio"] == JPEG_DRAFT_MIN_RATIO
    assert all(r["draft_scale"] == draft_scale(4000, 3000, 32, 32) for r in record["rows"])
    assert read_section(BENCHMARKS / "RESULTS.md", SECTION) == markdown(record)
