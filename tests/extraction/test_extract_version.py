"""The extraction version (``metaug_features.extract.EXTRACTION_VERSION``) is part of the
result key: unfinished chunks of another version are recomputed, never mixed into this
version's output; a finished folder of another version is not taken as this run's result; and
shards of two versions do not merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _extract_helpers import interrupt_after_one_chunk, output_files

import metaug_features.extract as ex
from metaug_features.errors import MetAugError
from metaug_features.extract import EXTRACTION_VERSION, extract_features
from metaug_features.merge import merge_shards
from metaug_features.extract_state import PartialStore, key_sha256

KW = dict(chunk_size=8, batch_size=4, workers=0, device="cpu", progress=False)


@pytest.fixture(scope="module")
def images(cifar_images) -> list[Path]:
    return [cifar_images / "test" / "cat"]  # 20 files, 3 chunks of 8


@pytest.fixture(scope="module")
def reference(images, model_dir, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "feats"
    extract_features(model_dir, images, out, **KW)
    return output_files(out)


def test_current_version_is_recorded(reference):
    meta = json.loads(reference["extract.json"])
    assert EXTRACTION_VERSION == 2 and meta["extraction_version"] == EXTRACTION_VERSION


def _as_written_by_0_1_0(out: Path) -> None:
    """Rewrite .partial as metaug-features 0.1.0 left it: a key without extraction_version
    (chunk files carry that key's hash)."""
    state = json.loads((out / ".partial" / "state.json").read_text())
    old_sha = state["key_sha256"]
    del state["key"]["extraction_version"]
    state["key_sha256"] = key_sha256(state["key"])
    (out / ".partial" / "state.json").write_text(json.dumps(state))
    store = PartialStore(out)
    for chunk in (out / ".partial").glob("chunk-*.npz"):
        k = int(chunk.stem.split("-")[1])
        c = store.load_chunk(k, 8 * k, min(8 * k + 8, 20), old_sha)
        assert c is not None
        store.write_chunk(c, state["key_sha256"])


@pytest.mark.parametrize("older", ["0.1.0 (no key)", "version 1"])
def test_unfinished_chunks_of_an_older_version_are_recomputed(images, model_dir, reference, tmp_path, monkeypatch, older):
    out = tmp_path / "feats"
    if older == "version 1":
        monkeypatch.setattr(ex, "EXTRACTION_VERSION", 1)
    interrupt_after_one_chunk(monkeypatch, model_dir, images, out, **KW)
    if older == "0.1.0 (no key)":
        _as_written_by_0_1_0(out)
    monkeypatch.setattr(ex, "EXTRACTION_VERSION", EXTRACTION_VERSION)
    assert len(list((out / ".partial").glob("chunk-*.npz"))) == 1
    s = extract_features(model_dir, images, out, **KW)  # the same command, new library: no --overwrite needed
    assert (s.chunks_resumed, s.chunks_computed) == (0, 3)  # the old chunk was not mixed in
    assert output_files(out) == reference


def test_unfinished_run_with_other_arguments_is_still_refused(images, model_dir, tmp_path, monkeypatch):
    """Only a version difference restarts silently; other arguments keep the existing error."""
    out = tmp_path / "feats"
    monkeypatch.setattr(ex, "EXTRACTION_VERSION", 1)
    interrupt_after_one_chunk(monkeypatch, model_dir, images, out, **KW)
    monkeypatch.setattr(ex, "EXTRACTION_VERSION", EXTRACTION_VERSION)
    with pytest.raises(MetAugError, match="unfinished extraction with different arguments"):
        extract_features(model_dir, images, out, **{**KW, "batch_size": 2})
    assert len(list((out / ".partial").glob("chunk-*.npz"))) == 1


def test_finished_folder_of_an_older_version_is_kept_unless_overwrite(images, model_dir, reference, tmp_path, monkeypatch):
    out = tmp_path / "feats"
    monkeypatch.setattr(ex, "EXTRACTION_VERSION", 1)
    extract_features(model_dir, images, out, **KW)
    monkeypatch.setattr(ex, "EXTRACTION_VERSION", EXTRACTION_VERSION)
    before = output_files(out)
    with pytest.raises(MetAugError, match=r"extraction_version differ; it was computed by another version.*--overwrite"):
        extract_features(model_dir, images, out, **KW)
    assert output_files(out) == before
    extract_features(model_dir, images, out, overwrite=True, **KW)
    assert output_files(out) == reference


def test_shards_of_two_versions_do_not_merge(images, model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "EXTRACTION_VERSION", 1)
    extract_features(model_dir, images, tmp_path / "s0", shard=(0, 2), **KW)
    monkeypatch.setattr(ex, "EXTRACTION_VERSION", EXTRACTION_VERSION)
    extract_features(model_dir, images, tmp_path / "s1", shard=(1, 2), **KW)
    with pytest.raises(MetAugError, match="different extractions.*extraction_version"):
        merge_shards([tmp_path / "s0", tmp_path / "s1"], tmp_path / "m")
