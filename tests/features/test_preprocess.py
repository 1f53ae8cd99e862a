"""Eval preprocessing: every PIL mode to RGB, EXIF orientation, crop geometry, and the
documented reason for every kind of undecodable file (library level; the CLI tests check
that extraction reports them)."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from metaug_features import EncoderConfig, ImageDecodeError
from metaug_features.preprocess import Preprocessor, center_box


@pytest.fixture
def pre32():
    return Preprocessor(EncoderConfig(architecture="alexnet32"))


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_rgb_32x32_is_unchanged(pre32, cifar_images):
    f = next((cifar_images / "test" / "cat").glob("*.jpg"))
    out = pre32.load_image(f)
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)
    ref = np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(out.numpy(), ref)


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "YCbCr", "LA", "RGBA", "I", "I;16", "F", "HSV"])
def test_every_mode_decodes_to_rgb(pre32, mode, tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    if mode == "F":  # a float image in 0..1 (out-of-range floats: test_float_image_out_of_range_is_skipped)
        img = Image.fromarray(np.random.default_rng(1).random((40, 50), dtype=np.float32), mode="F")
    elif mode in ("I", "I;16"):
        img = Image.fromarray((np.random.default_rng(1).integers(0, 65536, (40, 50))).astype(np.uint16))
        if mode != "I;16":
            img = img.convert(mode)
    else:
        img = rgb.convert(mode)
    out = pre32.load_image(img)
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8


def test_sixteen_bit_png_is_scaled_not_clipped(pre32, tmp_path):
    arr = np.full((32, 32), 32768, dtype=np.uint16)  # mid grey in 16 bits
    path = _save(Image.fromarray(arr), tmp_path / "g16.png")
    out = pre32.load_image(path)
    assert int(out.float().mean()) in (127, 128)


def _float_tiff(values: np.ndarray, path):
    """A one-sample 32-bit float TIFF (PIL mode "F"), as scientific and HDR tools write them."""
    img = Image.fromarray(values.astype(np.float32), mode="F")
    img.save(path, format="TIFF")
    assert Image.open(path).mode == "F"
    return path


@pytest.mark.parametrize("scale", [1.0 / 255.0, 1.0], ids=["float 0..1", "float 0..255"])
def test_float_tiff_gives_the_pixels_of_the_uint8_image_it_came_from(pre32, tmp_path, scale):
    """A float TIFF in 0..1 (the usual float convention) or in 0..255 decodes to the pixels of the
    8-bit greyscale image it was made from, within 1 level, not to black."""
    grey = np.random.default_rng(3).integers(0, 256, (32, 32), dtype=np.uint8)
    grey[0, 0] = 255  # the 0..255 case must exceed 1 somewhere (it does with any real image)
    path = _float_tiff(grey.astype(np.float64) * scale, tmp_path / "f.tif")
    out = pre32.load_image(path).numpy().astype(int)
    ref = pre32.load_image(Image.fromarray(grey)).numpy().astype(int)
    assert np.abs(out - ref).max() <= 1
    assert out.mean() > 100  # a random image is mid-grey on average, never black


@pytest.mark.parametrize("values, detail", [
    (np.array([[-0.5, 0.5], [0.2, 0.1]]), "values span [-0.5, 0.5]"),
    (np.array([[0.0, 300.0], [0.2, 0.1]]), "values span [0, 300]"),
    (np.array([[np.nan, 0.5], [0.2, 0.1]]), "1 NaN or infinite value(s)"),
    (np.array([[np.inf, 0.5], [-np.inf, 0.1]]), "2 NaN or infinite value(s)"),
])
def test_float_image_out_of_range_is_skipped(pre32, tmp_path, values, detail):
    """A float image with no known scale (below 0, above 255, NaN, inf) is refused with the
    documented reason instead of being clipped (a HDR or signed image would come out wrong)."""
    path = _float_tiff(values, tmp_path / "bad.tif")
    with pytest.raises(ImageDecodeError) as e:
        pre32.load_image(path)
    assert e.value.reason == "float image out of range" and detail in e.value.detail


def test_float_rgb_tiff_is_skipped_as_unreadable(pre32, tmp_path):
    """PIL has no mode for float images with 3 samples per pixel: such a TIFF is skipped as
    "not a readable image" (documented in load_image and metaug-extract --help)."""
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.random.default_rng(0).random((8, 8, 3), dtype=np.float32), photometric="rgb")
    with pytest.raises(ImageDecodeError) as e:
        pre32.load_image(path)
    assert e.value.reason == "not a readable image"


def test_float_tiff_through_metaug_extract_is_not_black(tmp_path, cifar_images):
    """End to end: metaug-extract on a float (0..1) TIFF of a CIFAR image gives the features of
    the 8-bit greyscale image (within the rounding of one grey level), and skips the
    out-of-range TIFF beside it with its reason."""
    from _extract_helpers import make_model_folder, run_cli

    from metaug_features import load_encoder
    from metaug_features.feature_files import read_feature_set

    model = make_model_folder(tmp_path / "model")
    src = next((cifar_images / "test" / "cat").glob("*.jpg"))
    grey = np.asarray(Image.open(src).convert("L"))
    images = tmp_path / "images"
    images.mkdir()
    _float_tiff(grey / 255.0, images / "cat_float.tif")
    _float_tiff(grey * 2.0 + 1.0, images / "too_bright.tif")  # up to 511
    proc = run_cli("--model", model, "--output", tmp_path / "out", "--workers", "0", "--device", "cpu", images)
    assert proc.returncode == 0, proc.stderr
    fs = read_feature_set(tmp_path / "out")
    assert fs.paths == ["cat_float.tif"]
    assert [(p, r.split(" (")[0]) for p, r in fs.skipped] == [("too_bright.tif", "float image out of range")]
    assert "values span [1, 503]" in fs.skipped[0][1]
    enc = load_encoder(model)
    black = enc.extract([Image.new("L", grey.shape[::-1], 0)]).numpy()
    ref = enc.extract([Image.fromarray(grey)]).numpy()
    assert np.allclose(fs.features, ref, atol=1e-3 * np.abs(ref).max())
    assert not np.allclose(fs.features, black, atol=1e-3 * np.abs(black).max())


def test_alpha_is_composited_on_white(pre32):
    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))  # fully transparent black
    assert pre32.load_image(img).min() == 255


def test_exif_orientation_is_applied(pre32, tmp_path):
    # left half black, right half white; EXIF orientation 3 = rotated 180 degrees
    arr = np.zeros((32, 32, 3), dtype=np.uint8)
    arr[:, 16:] = 255
    exif = Image.Exif()
    exif[0x0112] = 3
    path = _save(Image.fromarray(arr), tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = pre32.load_image(path).float()
    assert out[:, :, :16].mean() > 200 and out[:, :, 16:].mean() < 50


def test_crop_keeps_centre_of_non_square_image():
    pre = Preprocessor(EncoderConfig(architecture="alexnet224"))
    assert center_box(512, 256, 256, 224) == (144.0, 16.0, 368.0, 240.0)
    # a wide image whose centre column is white: the crop keeps it in the middle
    arr = np.zeros((256, 1024, 3), dtype=np.uint8)
    arr[:, 500:524] = 255
    out = pre.load_image(Image.fromarray(arr)).float()
    assert out.shape == (3, 224, 224)
    assert out[:, :, 100:124].mean() > 150 and out[:, :, :50].mean() < 5


def test_extreme_aspect_ratio_is_cheap(pre32):
    assert pre32.load_image(Image.new("RGB", (1, 10000), (10, 20, 30))).shape == (3, 32, 32)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"this is text, not a jpeg\n" * 10, "not a readable image"),
    ],
)
def test_bad_bytes(pre32, tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError) as e:
        pre32.load_image(path)
    assert e.value.reason == reason


def test_truncated_jpeg(pre32, cifar_images, tmp_path):
    data = next((cifar_images / "test" / "dog").glob("*.jpg")).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError) as e:
        pre32.load_image(path)
    assert e.value.reason == "truncated or corrupt image"


def test_decompression_bomb_refused_from_header(pre32, tmp_path):
    # A real 20000 x 20000 PNG header with almost no data: refused before decoding.
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    path = tmp_path / "bomb.png"
    path.write_bytes(buf.getvalue())
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageDecodeError) as e:
        pre32.load_image(path)
    assert e.value.reason.startswith("decompression bomb")


def test_pixel_limit_is_configurable(tmp_path):
    pre = Preprocessor(EncoderConfig(architecture="alexnet32"), max_pixels=100)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        pre.load_image(Image.new("RGB", (11, 10)))


def test_missing_and_directory(pre32, tmp_path):
    with pytest.raises(ImageDecodeError) as e:
        pre32.load_image(tmp_path / "nope.jpg")
    assert e.value.reason == "file not found"
    with pytest.raises(ImageDecodeError) as e:
        pre32.load_image(tmp_path)
    assert e.value.reason == "is a directory"


def test_permission_denied_is_a_reason(pre32, tmp_path, monkeypatch):
    # Tests run as root, where chmod 000 does not stop reads: make the read itself fail.
    path = tmp_path / "locked.jpg"
    Image.new("RGB", (8, 8)).save(path)
    import builtins

    real_open = builtins.open

    def deny(file, *a, **k):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(ImageDecodeError) as e:
        pre32.load_image(path)
    assert e.value.reason == "permission denied"


def test_to_input_shapes_and_rgb_channels():
    lab_only = Preprocessor(EncoderConfig(architecture="alexnet32"))
    with_rgb = Preprocessor(EncoderConfig(architecture="alexnet32", ori_space="rgb"))
    batch = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    a, b = lab_only.to_input(batch), with_rgb.to_input(batch)
    assert a.shape == (4, 3, 32, 32) and b.shape == (4, 6, 32, 32)
    assert torch.equal(a, b[:, :3])
    assert torch.allclose(lab_only.to_input(batch.float() / 255), a)
    with pytest.raises(ValueError):
        lab_only.to_input(torch.zeros(2, 4, 32, 32, dtype=torch.uint8))
