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
    if mode in ("I", "I;16", "F"):
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
