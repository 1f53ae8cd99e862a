"""A write error in the middle of an extraction (a full disk, simulated) stops it with a clear
message, keeps the chunks finished before it, and the same command then completes with the
result of an uninterrupted run."""

from __future__ import annotations

import errno

import numpy as np
import pytest
from click.testing import CliRunner

from metaug_cli.extract import main
from metaug_features.errors import MetAugError
from metaug_features.extract import extract_features
from metaug_features.extract_state import PartialStore
from metaug_features.feature_files import read_feature_set


def _full_disk_after(monkeypatch, n_ok: int) -> list[int]:
    """Let ``n_ok`` chunk writes succeed, then fail every one with ENOSPC."""
    real = PartialStore.write_chunk
    calls: list[int] = []

    def write_chunk(self, result, key_hash):
        calls.append(1)
        if len(calls) > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.dir))
        return real(self, result, key_hash)

    monkeypatch.setattr(PartialStore, "write_chunk", write_chunk)
    return calls


def test_full_disk_stops_cleanly_and_the_same_command_completes(model_dir, cifar_images, tmp_path, monkeypatch):
    images = cifar_images / "test" / "dog"  # 20 real JPEGs, 5 chunks of 4
    want = extract_features(model_dir, [images], tmp_path / "straight", workers=0, chunk_size=4, progress=False)
    out = tmp_path / "feats"
    _full_disk_after(monkeypatch, 2)
    with pytest.raises(MetAugError, match="No space left on device.*run the same command again"):
        extract_features(model_dir, [images], out, workers=0, chunk_size=4, progress=False)
    assert not (out / "manifest.csv").exists()  # no final output was claimed
    monkeypatch.undo()
    done = extract_features(model_dir, [images], out, workers=0, chunk_size=4, progress=False)
    assert done.chunks_resumed == 2 and done.chunks_computed == 3
    np.testing.assert_array_equal(read_feature_set(out).features, read_feature_set(want.output).features)


def test_cli_reports_a_full_disk_without_a_traceback(model_dir, cifar_images, tmp_path, monkeypatch):
    images = cifar_images / "test" / "dog"
    _full_disk_after(monkeypatch, 1)
    res = CliRunner().invoke(main, ["--model", str(model_dir), "--output", str(tmp_path / "feats"), "--workers", "0",
                                    "--chunk-size", "4", str(images)])
    assert res.exit_code != 0
    assert "No space left on device" in res.output and "run the same command again" in res.output
    assert res.exc_info is None or res.exc_info[0] is SystemExit
