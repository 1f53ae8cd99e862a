"""--shard I/N runs merged with --merge are byte-identical to a single run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from _extract_helpers import output_files
from click.testing import CliRunner

from metaug_cli.extract import main
from metaug_features.errors import MetAugError
from metaug_features.extract import extract_features
from metaug_features.merge import merge_shards
from metaug_features.feature_files import read_feature_set

KW = dict(chunk_size=16, batch_size=8, workers=0, device="cpu", progress=False)


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
    for i in (2, 0, 1):  # order of completion does not matter
        s = extract_features(model_dir, [data], base / f"s{i}", shard=(i, 3), **KW)
        assert s.num_files < 202
        dirs.append(base / f"s{i}")
    return dirs


def test_merged_shards_equal_single_run(single, shards3, tmp_path):
    r = CliRunner().invoke(main, ["--merge", "-o", str(tmp_path / "merged"), *map(str, shards3)])
    assert r.exit_code == 0, r.output
    assert output_files(tmp_path / "merged") == output_files(single)
    fs = read_feature_set(single)
    assert fs.features.shape[0] == 200 and fs.skipped == [("cat/0005b.jpg", "empty file"), ("truck/zz.txt", "not an image file extension")]


def test_shards_split_the_list_contiguously(shards3, single):
    fs = read_feature_set(single)
    parts = [read_feature_set(d) for d in sorted(shards3)]
    assert [p.meta["shard"]["index"] for p in parts] == [0, 1, 2]
    assert sum((p.paths for p in parts), []) == fs.paths
    np.testing.assert_array_equal(np.concatenate([p.features for p in parts]), fs.features)
    sizes = [p.meta["shard"]["files"][1] - p.meta["shard"]["files"][0] for p in parts]
    assert sum(sizes) == 202 and max(sizes) - min(sizes) <= 16  # one chunk at most


def test_more_shards_than_chunks_and_safetensors(data, model_dir, single, tmp_path):
    # 202 files / chunk 64 = 4 chunks over 6 shards: two shards are empty but valid.
    kw = {**KW, "chunk_size": 64}
    ref = tmp_path / "ref"
    extract_features(model_dir, [data], ref, fmt="safetensors", **kw)
    dirs = []
    for i in range(6):
        extract_features(model_dir, [data], tmp_path / f"s{i}", shard=f"{i}/6", **kw)
        dirs.append(tmp_path / f"s{i}")
    assert sorted(read_feature_set(d).features.shape[0] for d in dirs)[:2] == [0, 0]
    merge_shards(dirs, tmp_path / "merged", fmt="safetensors")
    assert output_files(tmp_path / "merged") == output_files(ref)


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
    assert meta["shard"]["index"] == 1 and meta["shard"]["count"] == 3 and meta["num_files"] == 202
