"""The per-file decode time limit and crash isolation of extraction (metaug_features.decode_pool).

A file whose decoder hangs (in Python or inside C code holding the GIL) or kills its process
is skipped with its reason; every other file decodes as usual, batches come back in order, and
the run ends in about the time limit, not never. A SIGKILLed extraction leaves no decoding
worker behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _extract_helpers import run_cli
from PIL import Image

from metaug_features.decode_pool import Decoding, DecodePool, crash_reason, decode_batches, time_limit_reason
from metaug_features.errors import ImageDecodeError
from metaug_features.extract import extract_features
from metaug_features.feature_files import read_feature_set
from metaug_features.preprocess import Preprocessor

HANG, C_HANG, SEGV, EXIT = 5, 6, 9, 14  # the misbehaving file indices of the unit tests


def _decode(i: int):
    """A stand-in decoder: a [3, 2, 2] image filled with i, except for the misbehaving files."""
    if i == HANG:
        time.sleep(10_000)  # a Python-level hang
    if i == C_HANG:
        ctypes.PyDLL(None).sleep(10_000)  # inside C, holding the GIL: only a kill ends it
    if i == SEGV:
        os.kill(os.getpid(), signal.SIGSEGV)
    if i == EXIT:
        os._exit(3)
    return i, torch.full((3, 2, 2), i, dtype=torch.uint8), None


def _batches(n: int, size: int) -> list[list[int]]:
    return [list(range(s, min(s + size, n))) for s in range(0, n, size)]


def _flat(decoded) -> list[tuple[int, int | None, str | None]]:
    return [(i, None if t is None else int(t[0, 0, 0]), r) for batch in decoded for i, t, r in batch]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 3])
def test_hangs_and_crashes_are_skipped_with_their_reason_and_the_rest_decodes(workers, hardening_record):
    t0 = time.monotonic()
    with DecodePool(_decode, workers=workers, time_limit=1.0) as pool:
        got = _flat(pool.run(_batches(20, 4)))
        incidents = dict(pool.incidents)
    elapsed = time.monotonic() - t0
    bad = {HANG: time_limit_reason(1.0), C_HANG: time_limit_reason(1.0),
           SEGV: crash_reason(-signal.SIGSEGV), EXIT: crash_reason(3)}
    expected = [(i, None, bad[i]) if i in bad else (i, i, None) for i in range(20)]
    assert got == expected  # every file, in order, the bad ones with their reason
    assert incidents == bad
    hardening_record.add("decoders made to hang (Python or C) or crash, each cut off and skipped", len(bad))
    assert bad[SEGV] == "decoder crashed (SIGSEGV)" and bad[EXIT] == "decoder crashed (exit code 3)"
    # Two hangs of 1 s each, at worst one after the other, plus worker start-ups.
    assert elapsed < 2 * 1.0 + 10


def test_results_do_not_depend_on_the_number_of_workers():
    batches = _batches(50, 7)

    def fine(i):
        return i, torch.full((3, 2, 2), (i * 37) % 251, dtype=torch.uint8), None

    reference = _flat(decode_batches(fine, batches, Decoding(workers=0)))
    for workers in (1, 2, 4):
        assert _flat(decode_batches(fine, batches, Decoding(workers=workers, time_limit=30))) == reference


def test_no_limit_waits_for_a_slow_file():
    def slow(i):
        if i == 1:
            time.sleep(1.5)
        return i, torch.zeros(3, 1, 1, dtype=torch.uint8), None

    got = _flat(decode_batches(slow, [[0, 1, 2]], Decoding(workers=1, time_limit=None)))
    assert got == [(0, 0, None), (1, 0, None), (2, 0, None)]


def test_bad_pool_arguments():
    with pytest.raises(ValueError, match="at least one worker"):
        DecodePool(_decode, workers=0, time_limit=1.0)
    with pytest.raises(ValueError, match="> 0"):
        DecodePool(_decode, workers=1, time_limit=0)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_killed_parent_leaves_no_worker_behind(tmp_path):
    """The extraction process is SIGKILLed while its worker is stuck in a hanging decode; the
    worker notices that its parent is gone and exits by itself."""
    pid_file = tmp_path / "worker.pid"
    script = textwrap.dedent(f"""
        import os, time, torch
        from metaug_features.decode_pool import Decoding, decode_batches
        def hang(i):
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            time.sleep(10_000)
        list(decode_batches(hang, [[0]], Decoding(workers=1, time_limit=None)))
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not (pid_file.is_file() and pid_file.read_text()):
        assert time.monotonic() < deadline, "the worker never started"
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(worker):
        assert time.monotonic() < deadline, f"decoding worker {worker} outlived its killed parent"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's reaping is left


# ---------------------------------------------------------------------- through extraction
@pytest.fixture
def folder(cifar_images, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(cifar_images / "test" / "ship", root / "ship")  # 20 real JPEGs
    shutil.copy(root / "ship" / "0000.jpg", root / "ship" / "0007-hangs.jpg")
    return root


def _patch_decoder(monkeypatch, behaviour):
    """Make files named *-hangs.jpg misbehave in the decoder (forked workers inherit this)."""
    real = Preprocessor.load_image

    def load_image(self, src):
        if str(src).endswith("-hangs.jpg"):
            behaviour()
        return real(self, src)

    monkeypatch.setattr(Preprocessor, "load_image", load_image)


def _unreadable():
    raise ImageDecodeError("not a readable image", "test stand-in")


@pytest.mark.timeout(120)
def test_extraction_skips_a_hanging_file_and_the_other_rows_are_bit_identical(model_dir, folder, tmp_path,
                                                                               monkeypatch, hardening_record):
    _patch_decoder(monkeypatch, _unreadable)
    reference = extract_features(model_dir, [folder], tmp_path / "ref", workers=2, batch_size=8, progress=False)
    _patch_decoder(monkeypatch, lambda: ctypes.PyDLL(None).sleep(10_000))
    t0 = time.monotonic()
    s = extract_features(model_dir, [folder], tmp_path / "out", workers=2, batch_size=8, progress=False,
                         decode_time_limit=1.0)
    assert time.monotonic() - t0 < 60
    assert s.skipped == [("ship/0007-hangs.jpg", "decode time limit exceeded (1 s)")]
    assert reference.skipped == [("ship/0007-hangs.jpg", "not a readable image (test stand-in)")]
    got, want = read_feature_set(s.output), read_feature_set(reference.output)
    assert got.paths == want.paths and len(got.paths) == 20
    np.testing.assert_array_equal(got.features, want.features)  # same batches, same numbers
    hardening_record.add("decoders made to hang (Python or C) or crash, each cut off and skipped")


@pytest.mark.timeout(120)
def test_a_real_decode_past_a_tiny_limit_is_skipped(model_dir, tmp_path, hardening_record):
    """No stand-in: a 6000x6000 JPEG really takes PIL about half a second; with a limit of
    0.05 s its worker is killed mid-decode and the small image beside it still decodes."""
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (6000, 6000, 3), dtype=np.uint8)).save(root / "big.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "small.png")
    s = extract_features(model_dir, [root], tmp_path / "out", workers=1, progress=False, decode_time_limit=0.05)
    assert s.skipped == [("big.jpg", "decode time limit exceeded (0.05 s)")]
    assert s.num_rows == 1
    hardening_record.add("decoders made to hang (Python or C) or crash, each cut off and skipped")


@pytest.mark.timeout(120)
def test_cli_reports_a_crashing_decoder_and_checks_the_limit(model_dir, folder, tmp_path, hardening_record):
    # The CLI runs in a fresh interpreter, so the misbehaving file must crash the real decoder:
    # a sitecustomize on PYTHONPATH patches it there.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""
        import os, signal
        from metaug_features.preprocess import Preprocessor
        real = Preprocessor.load_image
        def load_image(self, src):
            if str(src).endswith("-hangs.jpg"):
                os.kill(os.getpid(), signal.SIGSEGV)
            return real(self, src)
        Preprocessor.load_image = load_image
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "metaug_cli.extract", "--model", str(model_dir), "-o", str(out), "--workers", "2",
         "--device", "cpu", "--decode-time-limit", "5", str(folder)],
        capture_output=True, text=True, timeout=110, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped ship/0007-hangs.jpg: decoder crashed (SIGSEGV)" in proc.stderr
    assert (out / "skipped.csv").read_text().splitlines()[1] == "ship/0007-hangs.jpg,decoder crashed (SIGSEGV)"
    hardening_record.add("decoders made to hang (Python or C) or crash, each cut off and skipped")

    bad = run_cli("--model", model_dir, "-o", tmp_path / "o2", "--decode-time-limit", "-1", folder)
    assert bad.returncode == 2 and "--decode-time-limit must be > 0" in bad.stderr
    assert not (tmp_path / "o2").exists()
