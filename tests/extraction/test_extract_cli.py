"""metaug-extract end to end on real CIFAR-10 JPEGs: rows, features, labels, formats, and
what happens when the output folder already holds something."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
from _extract_helpers import output_files, run_cli
from click.testing import CliRunner

from metaug_cli.extract import main
from metaug_features import load_encoder
from metaug_features.errors import MetAugError
from metaug_features.extract import extract_features
from metaug_features.feature_files import read_feature_set


@pytest.fixture(scope="module")
def cli_run(cifar_images, model_dir, tmp_path_factory):
    """One real `metaug-extract` process over the 200 CIFAR test images (10 classes x 20)."""
    out = tmp_path_factory.mktemp("cli") / "feats"
    proc = run_cli("--model", model_dir, "--output", out, "--batch-size", "48", "--workers", "2",
                   "--device", "cpu", cifar_images / "test")
    return proc, out


def test_cli_writes_one_row_per_image_with_folder_labels(cli_run, cifar_images):
    proc, out = cli_run
    assert proc.returncode == 0, proc.stderr
    assert "wrote 200 x" in proc.stdout
    fs = read_feature_set(out)
    files = sorted(p.relative_to(cifar_images / "test").as_posix() for p in (cifar_images / "test").rglob("*.jpg"))
    assert len(files) == 200
    assert fs.paths == files  # sorted relative paths, one row each
    assert fs.labels == [p.split("/")[0] for p in files]
    assert fs.skipped == []
    assert fs.features.dtype == np.float32 and fs.features.shape[0] == 200
    assert np.isfinite(fs.features).all()


def test_cli_features_equal_load_encoder(cli_run, cifar_images, model_dir):
    _, out = cli_run
    fs = read_feature_set(out)
    enc = load_encoder(model_dir)
    ref = enc.extract([cifar_images / "test" / p for p in fs.paths], batch_size=64).numpy()
    assert fs.features.shape == ref.shape == (200, enc.feature_dim())
    # Different batch composition (48 vs 64) may change float sums, nothing more.
    np.testing.assert_allclose(fs.features, ref, rtol=0, atol=1e-5)
    assert np.abs(ref).max() > 1e-3  # not a degenerate all-zero feature


def test_cli_metadata_records_what_determines_the_numbers(cli_run, model_dir):
    _, out = cli_run
    meta = json.loads((out / "extract.json").read_text())
    assert meta["model"] == str(model_dir)
    assert meta["layer"] == load_encoder(model_dir).config.default_layer
    assert meta["batch_size"] == 48 and meta["shard"] is None and meta["num_files"] == 200
    assert meta["model_config"]["architecture"] == "alexnet32"
    assert len(meta["file_list_sha256"]) == 64 and len(meta["model_sha256"]) == 64
    assert not (out / ".partial").exists()


def test_same_command_again_does_no_work(cli_run, cifar_images, model_dir, monkeypatch):
    _, out = cli_run
    before = output_files(out)
    import metaug_features.extract as ex

    def boom(*a, **k):
        raise AssertionError("recomputed a finished extraction")

    monkeypatch.setattr(ex, "_compute_chunks", boom)
    s = extract_features(model_dir, [cifar_images / "test"], out, batch_size=48, workers=0, progress=False)
    assert s.already_complete and s.num_rows == 200
    assert output_files(out) == before


def test_other_arguments_into_finished_folder_are_refused(cli_run, cifar_images, model_dir):
    _, out = cli_run
    before = output_files(out)
    r = CliRunner().invoke(main, ["--model", str(model_dir), "-o", str(out), "--batch-size", "16",
                                  "--device", "cpu", str(cifar_images / "test")])
    assert r.exit_code == 2
    assert "batch_size differ" in r.output and "--overwrite" in r.output and "Traceback" not in r.output
    assert output_files(out) == before


def test_layer_format_and_overwrite(cifar_images, model_dir, tmp_path):
    enc = load_encoder(model_dir)
    cat = cifar_images / "test" / "cat"
    r = CliRunner().invoke(main, ["--model", str(model_dir), "-o", str(tmp_path / "o"), "--layer", "fc",
                                  "--format", "safetensors", "--workers", "0", "-q", "--device", "cpu", str(cat)])
    assert r.exit_code == 0, r.output
    assert r.output == ""  # --quiet
    fs = read_feature_set(tmp_path / "o")
    assert (tmp_path / "o" / "features.safetensors").is_file() and not (tmp_path / "o" / "features.npy").exists()
    assert fs.labels == [""] * 20  # files directly in the (single folder) root
    ref = enc.extract(sorted(cat.glob("*.jpg")), layer="fc").numpy()
    np.testing.assert_allclose(fs.features, ref, rtol=0, atol=1e-5)
    # Same folder, other layer: refused, then replaced with --overwrite.
    args = ["--model", str(model_dir), "-o", str(tmp_path / "o"), "--layer", "conv", "--workers", "0", "-q", "--device", "cpu", str(cat)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2 and "(layer, format differ)" in r.output
    r = CliRunner().invoke(main, args + ["--overwrite"])
    assert r.exit_code == 0, r.output
    fs = read_feature_set(tmp_path / "o")
    assert fs.features.shape == (20, enc.feature_dim("conv")) and fs.meta["layer"] == "conv"
    assert (tmp_path / "o" / "features.npy").is_file() and not (tmp_path / "o" / "features.safetensors").exists()


def test_unknown_layer_and_model_errors(cifar_images, model_dir, tmp_path):
    cat = str(cifar_images / "test" / "cat")
    r = CliRunner().invoke(main, ["--model", str(model_dir), "-o", str(tmp_path / "o"), "--layer", "conv9", cat])
    assert r.exit_code == 2 and "unknown --layer 'conv9'" in r.output and "fc6" in r.output
    r = CliRunner().invoke(main, ["-o", str(tmp_path / "o"), cat])
    assert r.exit_code == 2 and "--model is required" in r.output
    r = CliRunner().invoke(main, ["--model", str(tmp_path / "no_such_model"), "-o", str(tmp_path / "o2"), cat])
    assert r.exit_code == 2 and r.output.startswith("Error:") and "Traceback" not in r.output
    assert not (tmp_path / "o2" / "extract.json").exists()


def test_foreign_output_folder_is_refused(cifar_images, model_dir, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "thesis.tex").write_text("precious")
    with pytest.raises(MetAugError, match="not a metaug-extract output"):
        extract_features(model_dir, [cifar_images / "test" / "cat"], tmp_path / "o", workers=0, progress=False)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["thesis.tex"]


class _Terminal:
    """A stand-in for a terminal's stderr (isatty() is True), collecting what is written."""

    def __init__(self):
        self.parts = []

    def write(self, s):
        self.parts.append(s)
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return True


@pytest.mark.parametrize("progress", [True, False])
def test_progress_bar_only_on_a_terminal_and_not_when_quiet(cifar_images, model_dir, tmp_path, monkeypatch, progress):
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    extract_features(model_dir, [cifar_images / "test" / "frog"], tmp_path / "o", workers=0, progress=progress)
    text = "".join(term.parts)
    if progress:
        assert "20/20" in text and "img" in text
    else:
        assert text == ""


def test_progress_bar_silent_when_piped(cli_run):
    proc, _ = cli_run  # stderr was a pipe
    assert proc.stderr == ""


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error(cifar_images, model_dir, tmp_path):
    r = CliRunner().invoke(main, ["--model", str(model_dir), "-o", str(tmp_path / "o"), "--device", "cuda",
                                  str(cifar_images / "test" / "cat")])
    assert r.exit_code == 2 and "no CUDA GPU is available" in r.output and not (tmp_path / "o").exists()


def test_interrupt_exits_130_with_resume_hint(cifar_images, model_dir, tmp_path, monkeypatch):
    import metaug_cli.extract as cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "extract_features", interrupted)
    r = CliRunner().invoke(main, ["--model", str(model_dir), "-o", str(tmp_path / "o"), str(cifar_images / "test" / "cat")])
    assert r.exit_code == 130 and "run the same command again to resume" in r.output


def test_option_defaults_are_the_library_defaults():
    """One source: each option that feeds a keyword of extract_features takes its default from
    that keyword (--quiet is `progress` inverted; --output, --device and --merge are the CLI's)."""
    import inspect

    library = {n: p.default for n, p in inspect.signature(extract_features).parameters.items()
               if p.default is not p.empty}
    options = {p.name: p.default for p in main.params if isinstance(p, click.Option)}
    shared = {"layer", "batch_size", "workers", "fmt", "strict", "shard", "chunk_size", "overwrite", "decode_time_limit"}
    assert shared <= set(options) and shared <= set(library)
    assert {n: options[n] for n in shared} == {n: library[n] for n in shared}
    assert options["quiet"] is (not library["progress"])
