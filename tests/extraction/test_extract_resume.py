"""Resume: a real metaug-extract process killed with SIGKILL mid-run, restarted, ends
bit-identical to an uninterrupted run without recomputing finished chunks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
from _extract_helpers import cli_cmd, interrupt_after_one_chunk, output_files, run_cli

from metaug_features.errors import MetAugError
from metaug_features.extract import extract_features
from metaug_features.extract_state import PartialStore

CHUNK = 16
BATCH = 8


@pytest.fixture(scope="module")
def reference(cifar_images, model_dir, tmp_path_factory):
    """An uninterrupted run over the 200 CIFAR test images, chunks of 16 files (13 chunks).
    In-process to save a process start; the CLI's numbers are the library's (same call)."""
    out = tmp_path_factory.mktemp("ref") / "feats"
    extract_features(str(model_dir), [cifar_images / "test"], out, chunk_size=CHUNK, batch_size=BATCH,
                     workers=0, device="cpu", progress=False)
    return output_files(out)


def _chunk_files(out):
    return sorted((out / ".partial").glob("chunk-*.npz")) if (out / ".partial").is_dir() else []


def test_sigkill_mid_run_then_restart_is_bit_identical(cifar_images, model_dir, reference, tmp_path):
    out = tmp_path / "feats"
    args = ["--model", model_dir, "-o", out, "--chunk-size", CHUNK, "--batch-size", BATCH,
            "--workers", "1", "--device", "cpu", cifar_images / "test"]
    proc = subprocess.Popen(cli_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # own group: the kill reaches the decoding worker too
    try:
        deadline = time.monotonic() + 240
        while len(_chunk_files(out)) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no chunk written in time"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _chunk_files(out)}
    total = -(-200 // CHUNK)
    assert 3 <= len(done) < total, "the kill must land mid-run"
    assert not (out / "extract.json").exists()  # no partial final output

    restart = run_cli(*args)
    assert restart.returncode == 0, restart.stderr
    # Only the missing chunks were computed again.
    assert f"{len(done)} of {total} chunks resumed" in restart.stdout
    assert output_files(out) == reference  # features, manifest, skipped, extract.json: bit-exact
    assert not (out / ".partial").exists()


def test_interrupt_at_any_chunk_then_resume_in_process(cifar_images, model_dir, reference, tmp_path, monkeypatch):
    """Stop after the k-th chunk for several k (the last one included) and resume."""
    out = tmp_path / "feats"
    kw = dict(chunk_size=CHUNK, batch_size=BATCH, workers=0, device="cpu", progress=False)
    written = []
    original = PartialStore.write_chunk

    for stop_after in (1, 6, 13):
        def write_then_stop(self, result, key_hash):
            original(self, result, key_hash)
            written.append(result.index)
            if len(_chunk_files(out)) >= stop_after:
                raise KeyboardInterrupt

        monkeypatch.setattr(PartialStore, "write_chunk", write_then_stop)
        with pytest.raises(KeyboardInterrupt):
            extract_features(str(model_dir), [cifar_images / "test"], out, **kw)
        assert not (out / "extract.json").exists()
    monkeypatch.setattr(PartialStore, "write_chunk", original)
    assert sorted(written) == list(range(13))  # every chunk computed exactly once
    s = extract_features(str(model_dir), [cifar_images / "test"], out, **kw)
    assert (s.chunks_resumed, s.chunks_computed) == (13, 0)
    assert output_files(out) == reference


def test_killed_after_final_write_is_cleaned_up(cifar_images, model_dir, tmp_path):
    cat = [cifar_images / "test" / "cat"]
    out = tmp_path / "feats"
    kw = dict(chunk_size=8, batch_size=4, workers=0, device="cpu", progress=False)
    extract_features(model_dir, cat, out, **kw)
    before = output_files(out)
    # Simulate a kill between the final write and the removal of .partial.
    (out / ".partial").mkdir()
    (out / ".partial" / "chunk-000000.npz").write_bytes(b"leftover")
    s = extract_features(model_dir, cat, out, **kw)
    assert s.already_complete and not (out / ".partial").exists()
    assert output_files(out) == before


def test_unfinished_folder_of_other_arguments_is_refused(cifar_images, model_dir, tmp_path, monkeypatch):
    cat = [cifar_images / "test" / "cat"]
    out = tmp_path / "feats"
    interrupt_after_one_chunk(monkeypatch, model_dir, cat, out, chunk_size=8, batch_size=4, workers=0, progress=False)
    kept = {p.name: p.read_bytes() for p in _chunk_files(out)}
    with pytest.raises(MetAugError, match="unfinished extraction with different arguments.*--overwrite"):
        extract_features(model_dir, cat, out, chunk_size=8, batch_size=2, workers=0, progress=False)
    assert {p.name: p.read_bytes() for p in _chunk_files(out)} == kept  # nothing lost
    s = extract_features(model_dir, cat, out, chunk_size=8, batch_size=2, workers=0, progress=False, overwrite=True)
    assert s.chunks_resumed == 0 and s.num_rows == 20
    shutil.rmtree(out)


def test_output_folder_inside_the_input_folder(cifar_images, model_dir, tmp_path, monkeypatch):
    """The output (and its .partial chunks) must not leak into the file list, or a resume
    would see another list and refuse its own chunks."""
    data = tmp_path / "data"
    shutil.copytree(cifar_images / "test" / "horse", data / "horse")
    out = data / "feats"
    interrupt_after_one_chunk(monkeypatch, model_dir, [data], out, chunk_size=8, batch_size=4, workers=0, progress=False)
    s = extract_features(model_dir, [data], out, chunk_size=8, batch_size=4, workers=0, progress=False)
    assert (s.chunks_resumed, s.chunks_computed, s.num_rows, s.num_skipped) == (1, 2, 20, 0)
    s = extract_features(model_dir, [data], out, chunk_size=8, batch_size=4, workers=0, progress=False)
    assert s.already_complete
