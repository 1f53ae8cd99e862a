"""File listing, chunking/sharding arithmetic, resume chunk files and the streamed feature
writer (no model needed)."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metaug_features.errors import MetAugError
from metaug_features.extract_state import (
    ChunkResult,
    PartialStore,
    check_output_writable,
    key_sha256,
)
from metaug_features.feature_files import (
    FeatureSet,
    read_feature_set,
    sha256_file,
    write_feature_set,
)
from metaug_features.feature_stream import iter_feature_rows, write_feature_folder
from metaug_features.file_list import (
    REASON_NOT_IMAGE_EXT,
    REASON_NOT_REGULAR,
    chunk_bounds,
    chunk_parts,
    collect_files,
    parse_shard,
    shard_bounds,
)


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------- file list
def test_walk_sorts_by_bytes_labels_parent_and_lists_non_images(tmp_path):
    root = tmp_path / "data"
    for rel in ["b/2.jpg", "b/10.JPG", "a/x.png", "top.jpeg", "a/deep/er/z.webp", "a/notes.txt",
                ".hidden/skip.jpg", "a/.DS_Store", "B/up.jpg"]:
        _touch(root / rel)
    fl = collect_files([root])
    assert fl.root == str(root)
    rels = [e.rel for e in fl.entries]
    # Byte order: upper case before lower case, "10" before "2"; hidden names are not listed.
    assert rels == ["B/up.jpg", "a/deep/er/z.webp", "a/notes.txt", "a/x.png", "b/10.JPG", "b/2.jpg", "top.jpeg"]
    labels = {e.rel: e.label for e in fl.entries}
    assert labels["a/deep/er/z.webp"] == "er" and labels["b/2.jpg"] == "b" and labels["top.jpeg"] == ""
    reasons = {e.rel: e.skip_reason for e in fl.entries}
    assert reasons["a/notes.txt"] == REASON_NOT_IMAGE_EXT
    assert all(r is None for k, r in reasons.items() if k != "a/notes.txt")
    assert all(os.path.isabs(e.path) and os.path.isfile(e.path) for e in fl.entries)


def test_non_utf8_names_sort_by_bytes_and_round_trip(tmp_path):
    root = tmp_path / "data"
    names = [b"caf\xe9.jpg", b"cafe.jpg", b"caf\xc3\xa9.jpg"]  # latin-1 byte, ascii, utf-8
    for n in names:
        _touch(root / os.fsdecode(n))
    fl = collect_files([root])
    assert [os.fsencode(e.rel) for e in fl.entries] == sorted(names)
    assert all(os.path.isfile(e.path) for e in fl.entries)


def test_multiple_arguments_common_root_dedup_and_explicit_files(tmp_path):
    root = tmp_path / "data"
    _touch(root / "cat" / "1.jpg")
    _touch(root / "dog" / "2.jpg")
    explicit = _touch(root / "dog" / "readme.txt")
    fl = collect_files([root / "cat", root / "dog", root / "cat" / "1.jpg", explicit])
    assert fl.root == str(root)
    assert [(e.rel, e.label, e.skip_reason) for e in fl.entries] == [
        ("cat/1.jpg", "cat", None),
        ("dog/2.jpg", "dog", None),
        ("dog/readme.txt", "dog", REASON_NOT_IMAGE_EXT),  # found by the walk first
    ]
    # A file named on its own is always decoded, whatever its extension.
    single = collect_files([explicit])
    assert [(e.rel, e.label, e.skip_reason) for e in single.entries] == [("readme.txt", "", None)]


def test_output_folder_inside_input_is_not_listed(tmp_path):
    root = tmp_path / "data"
    _touch(root / "a" / "1.jpg")
    _touch(root / "feats" / "features.npy")
    _touch(root / "feats" / "sub" / "x.jpg")
    fl = collect_files([root], exclude=root / "feats")
    assert [e.rel for e in fl.entries] == ["a/1.jpg"]


def test_fifo_is_listed_not_opened(tmp_path):
    root = tmp_path / "data"
    _touch(root / "a.jpg")
    os.mkfifo(root / "pipe.jpg")  # opening this for reading would block forever
    fl = collect_files([root])
    assert {e.rel: e.skip_reason for e in fl.entries} == {"a.jpg": None, "pipe.jpg": REASON_NOT_REGULAR}


def test_missing_paths_are_named(tmp_path):
    _touch(tmp_path / "ok.jpg")
    with pytest.raises(MetAugError, match=r"not found: 'nope1', 'nope2'"):
        collect_files([tmp_path / "ok.jpg", "nope1", "nope2"])


def test_empty_folder_lists_nothing(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert len(collect_files([tmp_path / "empty"])) == 0


def test_file_list_hash_changes_with_names_not_with_location(tmp_path):
    for base in ("x", "y"):
        _touch(tmp_path / base / "c" / "1.jpg")
    a, b = collect_files([tmp_path / "x"]), collect_files([tmp_path / "y"])
    assert a.sha256() == b.sha256()
    _touch(tmp_path / "y" / "c" / "2.jpg")
    assert collect_files([tmp_path / "y"]).sha256() != a.sha256()


# ---------------------------------------------------------------------- chunks and shards
@given(st.integers(0, 5000), st.integers(1, 300), st.integers(1, 40))
def test_shards_partition_files_in_order_and_parts_tile_each_shard(num_files, chunk_size, n):
    bounds = chunk_bounds(num_files, chunk_size)
    # Chunks tile [0, num_files) with fixed size (only the last may be shorter).
    assert [i for s, e in bounds for i in range(s, e)] == list(range(num_files))
    assert all(e - s == chunk_size for s, e in bounds[:-1])
    shards = [shard_bounds(num_files, i, n) for i in range(n)]
    # The unit is the file: shards tile the list in order, sizes differ by at most one, and a
    # shard is empty only when there are more shards than files.
    assert [i for a, b in shards for i in range(a, b)] == list(range(num_files))
    sizes = [b - a for a, b in shards]
    assert max(sizes) - min(sizes) <= 1
    assert (min(sizes) == 0) == (n > num_files)
    for a, b in shards:
        parts = chunk_parts(bounds, a, b)
        # Each part lies inside its chunk, and the parts tile the shard.
        assert all(bounds[k][0] <= s < e <= bounds[k][1] for k, s, e in parts)
        assert [i for _, s, e in parts for i in range(s, e)] == list(range(a, b))
    assert chunk_parts(bounds, 0, num_files) == [(k, s, e) for k, (s, e) in enumerate(bounds)]


@pytest.mark.parametrize("text", ["1", "a/b", "3/3", "-1/2", "0/0", "1/2/3"])
def test_parse_shard_rejects(text):
    with pytest.raises(MetAugError, match="--shard"):
        parse_shard(text)


def test_parse_shard_accepts():
    assert parse_shard("0/1") == (0, 1) and parse_shard("7/8") == (7, 8) and parse_shard(None) is None


# ---------------------------------------------------------------------- chunk files
def test_chunk_round_trip_and_refusals(tmp_path):
    store = PartialStore(tmp_path)
    key = {"a": 1}
    h = store.write_state(key)
    assert h == key_sha256(key) and store.read_key_sha() == h
    feats = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    res = ChunkResult(index=2, start=8, stop=12, features=feats, rows=[8, 10, 11],
                      skipped=[(9, "empty file " + os.fsdecode(b"\xff"))])
    store.write_chunk(res, h)
    back = store.load_chunk(2, 8, 12, h)
    assert back.features.tobytes() == feats.tobytes()
    assert back.rows == res.rows and back.skipped == res.skipped
    head = store.load_chunk(2, 8, 12, h, features=False)  # lists and the features' header only
    assert head.rows == res.rows and head.skipped == res.skipped and head.features.shape == (0, 5)
    assert store.load_chunk(2, 8, 12, "other") is None  # another run's chunk
    assert store.load_chunk(2, 8, 13, h) is None  # another chunking
    assert store.load_chunk(3, 12, 16, h) is None  # absent
    store.chunk_path(2).write_bytes(store.chunk_path(2).read_bytes()[:50])  # damaged
    assert store.load_chunk(2, 8, 12, h) is None
    store.remove()
    assert not store.dir.exists()


def test_check_output_writable(tmp_path):
    check_output_writable(tmp_path / "new" / "deeper")
    assert (tmp_path / "new" / "deeper").is_dir() and not any((tmp_path / "new" / "deeper").iterdir())
    _touch(tmp_path / "afile")
    with pytest.raises(MetAugError, match="not a folder"):
        check_output_writable(tmp_path / "afile")
    with pytest.raises(MetAugError, match="not writable"):
        check_output_writable(tmp_path / "afile" / "sub")


# ---------------------------------------------------------------------- streamed writer
@pytest.mark.parametrize("fmt", ["npy", "safetensors", "parquet"])
@pytest.mark.parametrize("n", [0, 1, 37])
def test_streamed_folder_is_byte_identical_to_write_feature_set(tmp_path, fmt, n):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    rng = np.random.default_rng(n)
    feats = rng.standard_normal((n, 7)).astype(np.float32)
    paths = [f"c{i % 3}/{i}.jpg" for i in range(n)]
    if n:
        paths[0] = os.fsdecode(b"odd\xff,name\".jpg")  # non-UTF-8, comma and quote
    labels = [p.split("/")[0] if "/" in p else "" for p in paths]
    skipped = [("bad.jpg", "empty file"), ("x, y.jpg", "not a readable image")]
    meta = {"layer": "conv", "model": None}
    write_feature_set(tmp_path / "ref", FeatureSet(feats, list(paths), labels, list(skipped), dict(meta)), fmt=fmt)
    blocks = lambda: (feats[i:i + 10] for i in range(0, max(n, 1), 10))  # noqa: E731
    write_feature_folder(tmp_path / "new", blocks, n, 7, paths, labels, skipped, meta, fmt=fmt)
    ref_files = sorted(os.listdir(tmp_path / "ref"))
    assert sorted(os.listdir(tmp_path / "new")) == ref_files
    for name in ref_files:
        assert (tmp_path / "new" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    # The streamed bytes are those of the libraries' own whole-array writers, and the sha256 in
    # extract.json (hashed while writing) is that of the file.
    meta = json.loads((tmp_path / "new" / "extract.json").read_text())
    feat_file = tmp_path / "new" / meta["features_file"]
    assert meta["features_sha256"] == sha256_file(feat_file)
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, feats)
        assert feat_file.read_bytes() == buf.getvalue()
    elif fmt == "safetensors":
        from safetensors.numpy import save

        assert feat_file.read_bytes() == save({"features": feats})
    back = read_feature_set(tmp_path / "new")
    assert back.paths == paths and back.features.tobytes() == feats.tobytes() and back.features.shape == (n, 7)
    streamed = list(iter_feature_rows(tmp_path / "new", rows_per_block=4))
    assert all(b.shape[0] <= 4 for b in streamed)
    assert (np.concatenate(streamed) if streamed else np.empty((0, 7), np.float32)).tobytes() == feats.tobytes()


def test_streamed_writer_refuses_wrong_row_count(tmp_path):
    feats = np.zeros((3, 2), np.float32)
    with pytest.raises(Exception, match="expected 4 feature rows"):
        write_feature_folder(tmp_path, lambda: [feats], 4, 2, ["a"] * 4, [""] * 4, [], {})
    assert not (tmp_path / "features.npy").exists() and not (tmp_path / "extract.json").exists()
