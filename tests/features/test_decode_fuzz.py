"""Property-based fuzzing of image decoding (hypothesis): whatever bytes a file holds, and
whatever mode and size a valid image has, loading it either gives a uint8 [3, S, S] tensor or
raises ImageDecodeError with a documented reason, never another exception. Extraction of a
folder of such files never crashes and lists every file without a row in skipped.csv."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from metaug_features.config import EncoderConfig
from metaug_features.errors import ImageDecodeError
from metaug_features.preprocess import Preprocessor

# Full tier only (python -m pytest -q --run-slow): hundreds of fuzzed files through the decode pool.
pytestmark = pytest.mark.slow

PRE = Preprocessor(EncoderConfig(architecture="alexnet32", views=("l", "ab")))
REASONS = {"file not found", "permission denied", "is a directory", "cannot read file", "empty file",
           "not a readable image", "decompression bomb (too many pixels)", "image has no pixels",
           "truncated or corrupt image", "float image out of range"}
#: every PIL mode a user's folder may hold, with the formats that can store it
MODES = {"1": "PNG", "L": "PNG", "LA": "PNG", "P": "PNG", "RGB": "JPEG", "RGBA": "PNG", "CMYK": "JPEG",
         "I": "TIFF", "I;16": "PNG", "F": "TIFF", "YCbCr": "JPEG", "PA": "PNG", "La": "TIFF", "RGBa": "TIFF",
         "HSV": "TIFF", "LAB": "TIFF"}
#: Examples per property: a few hundred in the default suite (about a second);
#: benchmarks/hardening_report.py raises it with METAUG_FUZZ_EXAMPLES for the recorded run.
FUZZ = settings(max_examples=int(os.environ.get("METAUG_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _load(tmp_path, data: bytes, name: str = "x.jpg"):
    p = tmp_path / name
    p.write_bytes(data)
    try:
        t = PRE.load_image(p)
    except ImageDecodeError as e:
        assert e.reason in REASONS, e.reason
        return None
    assert t.dtype.is_floating_point is False and tuple(t.shape) == (3, 32, 32)
    return t


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_decode_or_skip_with_a_reason(tmp_path, data, hardening_record):
    hardening_record.add("image fuzzing: random byte strings")
    _load(tmp_path, data)


def _image_bytes(mode: str, w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.frombytes("RGB", (w, h), rng.integers(0, 256, (h, w, 3), dtype=np.uint8).tobytes())
    try:
        img = img.convert(mode)
    except ValueError:
        img = Image.new(mode, (w, h))
    buf = io.BytesIO()
    img.save(buf, format=MODES[mode])
    return buf.getvalue()


def _writable_modes() -> list[str]:
    ok = []
    for mode in sorted(MODES):
        try:
            _image_bytes(mode, 2, 2, 0)
            ok.append(mode)
        except (OSError, KeyError, ValueError):
            pass  # a PIL writer limitation, not a reader one
    return ok


WRITABLE = _writable_modes()


def test_the_fuzzed_modes_cover_what_users_have():
    assert {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F"} <= set(WRITABLE), WRITABLE


@FUZZ
@given(mode=st.sampled_from(WRITABLE), w=st.integers(1, 70), h=st.integers(1, 70), seed=st.integers(0, 2**16),
       cut=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_valid_images_of_every_mode_and_size_and_their_truncations(tmp_path, mode, w, h, seed, cut, hardening_record):
    hardening_record.add("image fuzzing: valid images of every PIL mode and size, whole or truncated")
    data = _image_bytes(mode, w, h, seed)
    if cut is not None:
        data = data[: int(len(data) * cut)]
    t = _load(tmp_path, data, "x" + {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}[MODES[mode]])
    if cut is None:
        assert t is not None, f"a valid {mode} {w}x{h} image was skipped"


@pytest.mark.parametrize("w, h", [(1, 1), (1, 10000), (10000, 1), (3, 2)])
def test_extreme_aspect_ratios_decode(tmp_path, w, h, hardening_record):
    hardening_record.add("image fuzzing: fixed odd cases (sizes, 20000x20000 header, GIF/TIFF frames, SVG/HEIC)")
    assert _load(tmp_path, _image_bytes("RGB", w, h, 0), "x.png") is not None


def test_huge_header_is_refused_before_decoding(tmp_path, hardening_record):
    hardening_record.add("image fuzzing: fixed odd cases (sizes, 20000x20000 header, GIF/TIFF frames, SVG/HEIC)")
    """A PNG that claims 20000 x 20000 pixels in a few bytes (zeros compress well)."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 200_000
    p = tmp_path / "bomb.png"
    p.write_bytes(buf.getvalue())
    with pytest.raises(ImageDecodeError) as e:
        PRE.load_image(p)
    assert e.value.reason == "decompression bomb (too many pixels)"


def test_animated_gif_and_multipage_tiff_use_the_first_frame(tmp_path, hardening_record):
    hardening_record.add("image fuzzing: fixed odd cases (sizes, 20000x20000 header, GIF/TIFF frames, SVG/HEIC)", 2)
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    for fmt, name in (("GIF", "a.gif"), ("TIFF", "a.tif")):
        buf = io.BytesIO()
        frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:])
        t = _load(tmp_path, buf.getvalue(), name)
        assert t is not None and int(t[0].float().mean()) > 200 and int(t[1].float().mean()) < 30


@pytest.mark.parametrize("data, name", [
    (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>', "x.svg"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "x.heic"),
])
def test_formats_the_decoder_cannot_read_are_skipped(tmp_path, data, name, hardening_record):
    hardening_record.add("image fuzzing: fixed odd cases (sizes, 20000x20000 header, GIF/TIFF frames, SVG/HEIC)")
    assert _load(tmp_path, data, name) is None


def test_extraction_of_a_fuzzed_folder_accounts_for_every_file(tmp_path, hardening_record):
    """40 seeded random files (random bytes, and valid images of every writable mode, some
    truncated) through metaug-extract's engine: no crash, rows + skips = files, every skip has
    a documented reason."""
    from _extract_helpers import make_model_folder

    from metaug_features.extract import extract_features

    rng = np.random.default_rng(0)
    folder = tmp_path / "fuzz"
    folder.mkdir()
    for i in range(40):
        if i % 3 == 0:
            data = rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes()
            name = f"{i:02d}.jpg"
        else:
            mode = WRITABLE[i % len(WRITABLE)]
            data = _image_bytes(mode, int(rng.integers(1, 60)), int(rng.integers(1, 60)), i)
            if i % 5 == 0:
                data = data[: len(data) // 2]
            name = f"{i:02d}" + {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}[MODES[mode]]
        (folder / name).write_bytes(data)
    model = make_model_folder(tmp_path / "model")
    s = extract_features(model, [folder], tmp_path / "out", workers=1, progress=False)
    assert s.num_rows + s.num_skipped == 40 and s.num_rows > 20
    # a skip reads "<reason>" or "<reason> (<detail>)"
    assert all(reason.split(" (")[0] in REASONS for _, reason in s.skipped), s.skipped
    hardening_record.add("image fuzzing: files of a fuzzed folder through extraction", 40)
