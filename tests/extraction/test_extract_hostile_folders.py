"""Hostile image folders: symbolic-link loops, file names with newlines, and files that vanish
or change between the listing and the decoding. Extraction never crashes or hangs, and every
file that gives no row is in skipped.csv with its reason."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import metaug_features.extract as extract_module
from metaug_features.extract import extract_features
from metaug_features.feature_files import read_feature_set


@pytest.fixture
def root(cifar_images, tmp_path):
    r = tmp_path / "data"
    shutil.copytree(cifar_images / "test" / "bird", r / "bird")  # 20 real JPEGs
    return r


@pytest.mark.timeout(120)
def test_symlink_loops_neither_hang_nor_crash(model_dir, root, tmp_path):
    os.symlink(root, root / "bird" / "loop-to-root")  # a folder link back up: not descended
    os.symlink(root / "bird" / "self", root / "bird" / "self")  # a link to itself
    os.symlink(root / "b.jpg", root / "a.jpg")  # a.jpg -> b.jpg -> a.jpg
    os.symlink(root / "a.jpg", root / "b.jpg")
    s = extract_features(model_dir, [root], tmp_path / "out", workers=0, progress=False)
    assert s.num_rows == 20
    reasons = dict(s.skipped)
    assert set(reasons) >= {"a.jpg", "b.jpg"}
    assert all(reasons[name] for name in ("a.jpg", "b.jpg"))
    assert not any(p.startswith("bird/loop-to-root/") for p in read_feature_set(tmp_path / "out").paths)


def test_file_names_with_newlines_and_commas_round_trip(model_dir, root, tmp_path):
    odd = "two\nlines, \"quoted\".jpg"
    shutil.copy(root / "bird" / "0000.jpg", root / "bird" / odd)
    s = extract_features(model_dir, [root], tmp_path / "out", workers=0, progress=False)
    fs = read_feature_set(tmp_path / "out")
    assert s.num_rows == 21 and f"bird/{odd}" in fs.paths
    i, j = fs.paths.index(f"bird/{odd}"), fs.paths.index("bird/0000.jpg")
    np.testing.assert_array_equal(fs.features[i], fs.features[j])


def test_files_that_vanish_or_change_after_the_listing_are_skipped_with_a_reason(model_dir, root, tmp_path,
                                                                                    monkeypatch):
    real_collect = extract_module.collect_files

    def collect_then_tamper(paths, exclude=None):
        listing = real_collect(paths, exclude=exclude)
        os.unlink(root / "bird" / "0001.jpg")  # vanishes
        (root / "bird" / "0002.jpg").write_bytes(b"this is not a JPEG any more")  # changes
        shutil.copy(root / "bird" / "0004.jpg", root / "bird" / "0003.jpg")  # changes, still an image
        (root / "bird" / "new.jpg").write_bytes((root / "bird" / "0005.jpg").read_bytes())  # appears: not listed
        return listing

    monkeypatch.setattr(extract_module, "collect_files", collect_then_tamper)
    s = extract_features(model_dir, [root], tmp_path / "out", workers=1, progress=False)
    reasons = dict(s.skipped)
    assert set(reasons) == {"bird/0001.jpg", "bird/0002.jpg"}, reasons
    assert all(reasons.values())
    fs = read_feature_set(tmp_path / "out")
    assert s.num_rows == 18 and "bird/new.jpg" not in fs.paths
    np.testing.assert_array_equal(fs.features[fs.paths.index("bird/0003.jpg")], fs.features[fs.paths.index("bird/0004.jpg")])
