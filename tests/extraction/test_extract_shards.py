"""--shard I/N splits the sorted *files* (not the resume chunks) into N contiguous slices whose
--merge is byte-identical to a single run, for any file count."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _extract_helpers import output_files
from click.testing import CliRunner
from conftest import extract_cifar_slice

from metaug_cli.extract import main
from metaug_features.errors import MetAugError
from metaug_features.extract import extract_features
from metaug_features.feature_files import read_feature_set
from metaug_features.merge import merge_shards

KW = {"chunk_size": 16, "batch_size": 8, "workers": 0, "device": "cpu", "progress": False}


def _cli(*args: object) -> None:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output


def _shard_sizes(dirs) -> list[int]:
    metas = [json.loads((d / "extract.json").read_text())["shard"] for d in dirs]
    return [m["files"][1] - m["files"][0] for m in sorted(metas, key=lambda m: m["index"])]


# ---------------------------------------------------------------------- 500 images, CLI defaults
@pytest.fixture(scope="module")
def images500(cifar_archive, tmp_path_factory):
    """500 real CIFAR-10 test JPEGs (50 per class): fewer than one default chunk (1,024 files),
    the case where sharding by chunk left every shard but the last empty."""
    return extract_cifar_slice(cifar_archive, tmp_path_factory.mktemp("five_hundred"), {"test": 50}) / "test"


def test_500_files_in_3_shards_merge_to_the_single_run(images500, model_dir, tmp_path):
    """Default chunk (1,024) and batch (64): the shard ends (166, 333) fall inside batches."""
    _cli("--model", model_dir, "--workers", 0, "-q", "-o", tmp_path / "single", images500)
    dirs = [tmp_path / f"s{i}" for i in range(3)]
    for i in (1, 2, 0):  # order of completion does not matter
        _cli("--model", model_dir, "--workers", 0, "-q", "--shard", f"{i}/3", "-o", dirs[i], images500)
    rows = [read_feature_set(d).features.shape[0] for d in dirs]
    assert rows == [166, 167, 167] and _shard_sizes(dirs) == rows  # all non-empty, sizes within 1
    _cli("--merge", "-q", "-o", tmp_path / "merged", *dirs)
    assert output_files(tmp_path / "merged") == output_files(tmp_path / "single")


def test_more_shards_than_files_gives_valid_empty_shards(images500, model_dir, tmp_path):
    """5 files in 8 shards: shards 0, 2 and 5 own no file. Each is still written, as a valid
    folder of 0 rows (a fixed Slurm array need not know the file count), and merges."""
    files = sorted(images500.glob("cat/*.jpg"))[:5]
    kw = {**KW, "chunk_size": 1024, "batch_size": 64}
    single = extract_features(model_dir, files, tmp_path / "single", **kw)
    dirs = [tmp_path / f"s{i}" for i in range(8)]
    summaries = [extract_features(model_dir, files, d, shard=(i, 8), **kw) for i, d in enumerate(dirs)]
    assert [s.num_rows for s in summaries] == [0, 1, 0, 1, 1, 0, 1, 1]
    empty = read_feature_set(dirs[0])
    assert empty.features.shape == (0, single.dim) and empty.paths == [] and empty.meta["shard"]["files"] == [0, 0]
    merge_shards(dirs, tmp_path / "merged")
    assert output_files(tmp_path / "merged") == output_files(tmp_path / "single")


# ---------------------------------------------------------------------- 202 files, small chunks
@pytest.fixture(scope="module")
def data(cifar_images, tmp_path_factory):
    """The 200 CIFAR test images plus two bad files, so skipped lists are merged too."""
    root = tmp_path_factory.mktemp("shard_data") / "data"
    shutil.copytree(cifar_images / "test", root)
    (root / "cat" / "0005b.jpg").write_bytes(b"")
    (root / "truck" / "zz.txt").write_text("x")
    return root


@pytest.fixture(scope="module")
def single(data, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "feats"
    extract_features(model_dir, [data], out, **KW)
    return out


@pytest.fixture(scope="module")
def shards3(data, model_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("shards3")
    dirs = []
    for i in (2, 0, 1):
        s = extract_features(model_dir, [data], base / f"s{i}", shard=(i, 3), **KW)
        assert s.num_files in (67, 68)
        dirs.append(base / f"s{i}")
    return dirs


def test_merged_shards_equal_single_run(single, shards3, tmp_path):
    _cli("--merge", "-o", tmp_path / "merged", *shards3)
    assert output_files(tmp_path / "merged") == output_files(single)
    fs = read_feature_set(single)
    assert fs.features.shape[0] == 200 and fs.skipped == [("cat/0005b.jpg", "empty file"), ("truck/zz.txt", "not an image file extension")]


def test_shards_split_the_files_contiguously(shards3, single):
    fs = read_feature_set(single)
    parts = [read_feature_set(d) for d in sorted(shards3)]
    assert [p.meta["shard"]["index"] for p in parts] == [0, 1, 2]
    assert [path for p in parts for path in p.paths] == fs.paths
    np.testing.assert_array_equal(np.concatenate([p.features for p in parts]), fs.features)
    assert [p.meta["shard"]["files"] for p in parts] == [[0, 67], [67, 134], [134, 202]]


def test_more_shards_than_chunks_and_safetensors(data, model_dir, tmp_path):
    # 202 files / chunk 64 = 4 chunks over 6 shards; batches of 6 do not divide the chunk, so
    # the batch grid restarts at each chunk and shard ends fall inside batches.
    kw = {**KW, "chunk_size": 64, "batch_size": 6}
    ref = tmp_path / "ref"
    extract_features(model_dir, [data], ref, fmt="safetensors", **kw)
    dirs = []
    for i in range(6):
        extract_features(model_dir, [data], tmp_path / f"s{i}", shard=f"{i}/6", **kw)
        dirs.append(tmp_path / f"s{i}")
    assert _shard_sizes(dirs) == [33, 34, 34, 33, 34, 34]
    assert all(read_feature_set(d).features.shape[0] > 0 for d in dirs)
    merge_shards(dirs, tmp_path / "merged", fmt="safetensors")
    assert output_files(tmp_path / "merged") == output_files(ref)


def test_interrupted_shard_resumes_to_the_same_folder(data, model_dir, shards3, tmp_path, monkeypatch):
    """A shard killed after its first (partial) chunk resumes from .partial and ends identical."""
    from _extract_helpers import interrupt_after_one_chunk

    out = tmp_path / "s1"
    interrupt_after_one_chunk(monkeypatch, model_dir, [data], out, shard=(1, 3), **KW)
    assert (out / ".partial").is_dir() and not (out / "extract.json").exists()
    s = extract_features(model_dir, [data], out, shard=(1, 3), **KW)
    assert s.chunks_resumed == 1 and s.chunks_computed == s.chunks_total - 1
    assert output_files(out) == output_files(next(d for d in shards3 if d.name == "s1"))


def test_merge_refuses_incomplete_or_mixed_shards(shards3, data, model_dir, tmp_path):
    with pytest.raises(MetAugError, match=r"missing: 1/3"):
        merge_shards([d for d in shards3 if d.name != "s1"], tmp_path / "m")
    with pytest.raises(MetAugError, match=r"given twice: 0/3"):
        merge_shards(shards3 + [shards3[1]], tmp_path / "m")
    other = tmp_path / "other1"
    extract_features(model_dir, [data], other, shard=(1, 3), **{**KW, "batch_size": 4})
    with pytest.raises(MetAugError, match="different extractions"):
        merge_shards([d for d in shards3 if d.name != "s1"] + [other], tmp_path / "m")
    with pytest.raises(MetAugError, match="not a finished shard output"):
        merge_shards([tmp_path / "nothing"], tmp_path / "m")
    assert not (tmp_path / "m" / "extract.json").exists()


def test_shard_cli_errors(data, model_dir, tmp_path):
    r = CliRunner().invoke(main, ["--model", str(model_dir), "-o", str(tmp_path / "o"), "--shard", "3/3", str(data)])
    assert r.exit_code == 2 and "I counts from 0" in r.output
    r = CliRunner().invoke(main, ["--merge", "--model", str(model_dir), "-o", str(tmp_path / "o"), str(data)])
    assert r.exit_code == 2 and "do not pass --model" in r.output


def test_shard_metadata(shards3):
    meta = json.loads((sorted(shards3)[1] / "extract.json").read_text())
    assert meta["shard"] == {"index": 1, "count": 3, "files": [67, 134]} and meta["num_files"] == 202
