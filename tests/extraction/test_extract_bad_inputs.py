"""Bad input to metaug-extract: every case is skipped and reported, or a clear error (exit 2)
with no partial output; never a crash, a hang or a traceback.

One CLI run (two decoding workers) over a "zoo" folder of real CIFAR-10 JPEGs plus generated
bad and unusual files; one test per case reads its row or skip reason. Images in unusual
formats (grayscale, RGBA, CMYK, 16-bit, EXIF-rotated) must give exactly the features of a
plain 8-bit RGB PNG holding the pixels they stand for.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from _extract_helpers import run_cli
from click.testing import CliRunner
from PIL import Image

import metaug_features.preprocess as preprocess_module
from metaug_cli.extract import main
from metaug_features.extract import extract_features
from metaug_features.file_decode import FileDataset
from metaug_features.feature_files import read_feature_set
from metaug_features.file_list import FileEntry

NON_UTF8_NAME = os.fsdecode(b"caf\xe9.jpg")  # latin-1 "café": not valid UTF-8
NON_UTF8_DIR = os.fsdecode(b"cl\xff")


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def zoo(cifar_images, tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo") / "zoo"
    real = root / "real"
    real.mkdir(parents=True)
    srcs = sorted((cifar_images / "test" / "cat").glob("*.jpg"))[:4]
    for s in srcs:
        shutil.copy(s, real / s.name)
    a = _rgb(srcs[0])  # [32, 32, 3] uint8, a real photo
    bad, odd = root / "bad", root / "odd"
    bad.mkdir()
    odd.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    data = srcs[1].read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (bad / "text.jpg").write_text("this is not an image\n")
    # 1-bit PNGs: tiny files that claim 120 M and 400 M pixels (PIL's warning and error
    # ranges; both must be refused before the pixels are decoded).
    Image.new("1", (12000, 10000)).save(bad / "bomb_warn.png")
    Image.new("1", (20000, 20000)).save(bad / "bomb.png")
    (bad / "notes.txt").write_text("not an image extension\n")
    os.mkfifo(bad / "pipe.jpg")
    # Unusual but valid images, each with a plain RGB PNG reference of the pixels it means.
    Image.fromarray(a[..., 1]).save(odd / "gray.png")  # mode L
    Image.fromarray(np.repeat(a[..., 1:2], 3, axis=2)).save(odd / "gray_ref.png")
    alpha = np.where(np.arange(32)[:, None] < 16, 0, 255).astype(np.uint8).repeat(32, axis=1)
    Image.fromarray(np.dstack([a, alpha]), "RGBA").save(odd / "rgba.png")
    Image.fromarray(np.where(alpha[..., None] == 0, 255, a).astype(np.uint8)).save(odd / "rgba_ref.png")  # on white
    Image.fromarray(a).convert("CMYK").save(odd / "cmyk.jpg", quality=95)
    Image.fromarray(np.asarray(Image.open(odd / "cmyk.jpg").convert("RGB"))).save(odd / "cmyk_ref.png")
    Image.fromarray(a[..., 0].astype(np.uint16) * 257).save(odd / "gray16.png")  # 16-bit, exactly 257 x 8-bit
    Image.fromarray(np.repeat(a[..., 0:1], 3, axis=2)).save(odd / "gray16_ref.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    stored = Image.fromarray(a).transpose(Image.Transpose.ROTATE_90)
    stored.save(odd / "exif_rotated.png", exif=exif.tobytes())
    stored.save(odd / "exif_stored_pixels.png")  # the same pixels without the tag
    Image.fromarray(a).save(odd / "exif_ref.png")
    shutil.copy(srcs[0], odd / NON_UTF8_NAME)
    (root / NON_UTF8_DIR).mkdir()
    shutil.copy(srcs[2], root / NON_UTF8_DIR / "x.jpg")
    return root


@pytest.fixture(scope="module")
def zoo_run(zoo, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo_out") / "feats"
    proc = run_cli("--model", model_dir, "-o", out, "--workers", "2", "--batch-size", "8", "--device", "cpu", zoo,
                   timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    fs = read_feature_set(out)
    return fs, dict(fs.skipped), {p: fs.features[i] for i, p in enumerate(fs.paths)}


def _same(rows, a, b):
    np.testing.assert_allclose(rows[a], rows[b], rtol=0, atol=1e-6)


def test_real_images_all_rows(zoo_run):
    fs, skipped, rows = zoo_run
    assert [p for p in fs.paths if p.startswith("real/")] == [f"real/{i:04d}.jpg" for i in range(4)]
    assert all(fs.labels[i] == p.split("/")[0] for i, p in enumerate(fs.paths))


def test_zero_byte_file(zoo_run):
    assert zoo_run[1]["bad/empty.jpg"] == "empty file"


def test_truncated_jpeg(zoo_run):
    assert zoo_run[1]["bad/truncated.jpg"].startswith("truncated or corrupt image")


def test_text_file_named_jpg(zoo_run):
    assert zoo_run[1]["bad/text.jpg"] == "not a readable image"


@pytest.mark.parametrize("name", ["bomb.png", "bomb_warn.png"])
def test_decompression_bomb(zoo_run, name):
    assert zoo_run[1][f"bad/{name}"].startswith("decompression bomb (too many pixels)")


def test_non_image_extension_and_fifo_are_listed(zoo_run):
    assert zoo_run[1]["bad/notes.txt"] == "not an image file extension"
    assert zoo_run[1]["bad/pipe.jpg"] == "not a regular file"  # and no hang
    # Exactly the bad files are skipped; every other file gave a row.
    assert set(zoo_run[1]) == {"bad/empty.jpg", "bad/truncated.jpg", "bad/text.jpg", "bad/bomb.png",
                               "bad/bomb_warn.png", "bad/notes.txt", "bad/pipe.jpg"}
    assert len(zoo_run[0].paths) == 4 + 12 + 1  # real, odd (incl. references), non-UTF-8 folder


def test_grayscale(zoo_run):
    _same(zoo_run[2], "odd/gray.png", "odd/gray_ref.png")


def test_rgba_is_composited_on_white(zoo_run):
    _same(zoo_run[2], "odd/rgba.png", "odd/rgba_ref.png")


def test_cmyk(zoo_run):
    _same(zoo_run[2], "odd/cmyk.jpg", "odd/cmyk_ref.png")


def test_16bit_png(zoo_run):
    _same(zoo_run[2], "odd/gray16.png", "odd/gray16_ref.png")


def test_exif_rotation_is_applied(zoo_run):
    rows = zoo_run[2]
    _same(rows, "odd/exif_rotated.png", "odd/exif_ref.png")
    assert np.abs(rows["odd/exif_rotated.png"] - rows["odd/exif_stored_pixels.png"]).max() > 1e-3


def test_non_utf8_file_and_folder_names(zoo_run):
    fs, _, rows = zoo_run
    name = f"odd/{NON_UTF8_NAME}"
    assert os.fsencode(name) == b"odd/caf\xe9.jpg"  # read back byte-exact from manifest.csv
    _same(rows, name, "real/0000.jpg")  # same bytes as real/0000.jpg
    i = fs.paths.index(f"{NON_UTF8_DIR}/x.jpg")
    assert os.fsencode(fs.labels[i]) == b"cl\xff"
    _same(rows, f"{NON_UTF8_DIR}/x.jpg", "real/0002.jpg")
    assert [os.fsencode(p) for p in fs.paths] == sorted(os.fsencode(p) for p in fs.paths)


def test_unreadable_file_permission(cifar_images, model_dir, tmp_path, monkeypatch):
    """As root, chmod 000 does not stop reads, so the read itself is made to raise
    PermissionError: the loader's module-level ``open`` is patched (forked workers inherit it)."""
    root = tmp_path / "data"
    shutil.copytree(cifar_images / "test" / "dog", root)
    locked = os.path.abspath(root / "0003.jpg")
    real_open = open

    def guarded_open(path, *args, **kwargs):
        if os.path.abspath(os.fspath(path)) == locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(preprocess_module, "open", guarded_open, raising=False)
    s = extract_features(model_dir, [root], tmp_path / "o", workers=1, batch_size=8, progress=False)
    assert s.num_rows == 19 and s.skipped == [("0003.jpg", "permission denied")]
    fs = read_feature_set(tmp_path / "o")
    assert "0003.jpg" not in fs.paths and fs.skipped == [("0003.jpg", "permission denied")]
    # A loader that lets PermissionError escape is caught by the dataset too.
    def raw(path):
        raise PermissionError(13, "Permission denied")

    ds = FileDataset([FileEntry(locked, "0003.jpg", "")], raw)
    assert ds[0] == (0, None, "permission denied")


def test_strict_fails_before_decoding_on_listed_skips(zoo, model_dir, tmp_path):
    r = CliRunner().invoke(main, ["--model", str(model_dir), "-o", str(tmp_path / "o"), "--strict", str(zoo)])
    assert r.exit_code == 2, r.output
    assert "bad/notes.txt: not an image file extension" in r.output and "bad/pipe.jpg" in r.output
    assert not (tmp_path / "o").exists()


def test_strict_fails_after_decoding_with_the_list(cifar_images, model_dir, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(cifar_images / "test" / "ship", root)
    (root / "empty.jpg").write_bytes(b"")
    r = CliRunner().invoke(main, ["--model", str(model_dir), "-o", str(tmp_path / "o"), "--strict", "--workers", "0", str(root)])
    assert r.exit_code == 2, r.output
    assert "1 file(s) would be skipped" in r.output and "empty.jpg: empty file" in r.output
    assert not (tmp_path / "o" / "extract.json").exists() and not (tmp_path / "o" / "features.npy").exists()
    # The decoded chunks are kept: the same folder without --strict finishes without recomputing.
    s = extract_features(model_dir, [root], tmp_path / "o", workers=0, progress=False)
    assert s.chunks_computed == 0 and s.num_rows == 20 and s.skipped == [("empty.jpg", "empty file")]


def test_no_readable_image_is_an_error(model_dir, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"")
    (root / "b.jpg").write_text("text")
    r = CliRunner().invoke(main, ["--model", str(model_dir), "-o", str(tmp_path / "o"), "--workers", "0", str(root)])
    assert r.exit_code == 2
    assert "no readable image among 2 file(s)" in r.output and "a.jpg: empty file" in r.output
    assert not (tmp_path / "o" / "extract.json").exists()


def test_empty_folder(model_dir, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    r = CliRunner().invoke(main, ["--model", str(model_dir), "-o", str(tmp_path / "o"), str(tmp_path / "empty")])
    assert r.exit_code == 2 and "no files found" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_missing_path(model_dir, tmp_path, cifar_images):
    r = CliRunner().invoke(main, ["--model", str(model_dir), "-o", str(tmp_path / "o"),
                                  str(cifar_images / "test" / "cat"), str(tmp_path / "nope")])
    assert r.exit_code == 2 and "input path(s) not found" in r.output and "nope" in r.output
    assert not (tmp_path / "o").exists()  # refused before any work


def test_output_not_writable(cifar_images, tmp_path, monkeypatch):
    cat = str(cifar_images / "test" / "cat")
    (tmp_path / "file").write_text("x")
    # The model reference is bogus: the output error must come first, before any model work.
    r = CliRunner().invoke(main, ["--model", str(tmp_path / "no_model"), "-o", str(tmp_path / "file" / "o"), cat])
    assert r.exit_code == 2 and "is not writable" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["--model", str(tmp_path / "no_model"), "-o", str(tmp_path / "file"), cat])
    assert r.exit_code == 2 and "exists and is not a folder" in r.output

    # A read-only folder (root ignores permission bits, so the write is made to fail).
    import metaug_features.extract_state as state

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(state, "atomic_write", denied)
    r = CliRunner().invoke(main, ["--model", str(tmp_path / "no_model"), "-o", str(tmp_path / "ro"), cat])
    assert r.exit_code == 2 and "is not writable (Permission denied)" in r.output
