"""Two extractions into the same output folder: the second is refused by a lock, with no
corruption of the first one's files, and a killed extraction leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from _extract_helpers import run_cli

from metaug_features.extract import extract_features
from metaug_features.extract_state import OutputLockedError, output_lock
from metaug_features.feature_files import read_feature_set

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the output lock is POSIX flock")

HOLD_LOCK = """
import sys, time
from metaug_features.extract_state import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def images(cifar_images):
    return cifar_images / "test" / "cat"  # 20 real JPEGs


def test_a_held_lock_refuses_a_second_extraction_and_nothing_is_written(model_dir, images, tmp_path):
    out = tmp_path / "feats"
    out.mkdir()
    with output_lock(out):
        with pytest.raises(OutputLockedError, match="being written by another extraction"):
            extract_features(model_dir, [images], out, workers=0, progress=False)
        assert list(out.iterdir()) == []
    summary = extract_features(model_dir, [images], out, workers=0, progress=False)
    assert summary.num_rows == 20


def test_lock_is_held_across_processes_and_released_when_the_holder_is_killed(model_dir, images, tmp_path):
    out = tmp_path / "feats"
    first = extract_features(model_dir, [images], out, workers=0, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = run_cli("--model", model_dir, "--output", out, "--workers", "0", "--device", "cpu", images)
        assert proc.returncode != 0
        assert "being written by another extraction" in proc.stderr
        assert "Traceback" not in proc.stderr
        # the first extraction's files are untouched
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    # SIGKILL released the lock: the same command now finds the finished extraction
    proc = run_cli("--model", model_dir, "--output", out, "--workers", "0", "--device", "cpu", images)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(read_feature_set(out).features, read_feature_set(first.output).features)
