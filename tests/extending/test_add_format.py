"""docs/EXTENDING.md, "Add a feature output format": the recipe's block, run as written and
added as one row of FEATURE_FORMATS, is a --format that extraction, the CLI, the reader and the
merge all use; its rows are exactly the npy extraction's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _doc_blocks import add_recipe_rows
from _extract_helpers import output_files
from click.testing import CliRunner

from metaug_cli.extract import main
from metaug_features.errors import MetAugError
from metaug_features.extract import extract_features
from metaug_features.feature_files import read_feature_set
from metaug_features.feature_formats import FEATURE_FORMATS, feature_format
from metaug_features.merge import merge_shards

HEADING = "Add a feature output format"
KW = {"batch_size": 8, "chunk_size": 16, "workers": 0, "device": "cpu", "progress": False}


@pytest.fixture
def csv_format(monkeypatch):
    """The block's row added to the table for this test only."""
    return add_recipe_rows(HEADING, FEATURE_FORMATS, monkeypatch, ["csv"])["NEW_ROWS"]["csv"]


@pytest.fixture(scope="module")
def images(cifar_images):
    """21 real CIFAR-10 JPEGs over three classes (more than one chunk of 16, batches of 8)."""
    return sorted(cifar_images.glob("test/[abc]*/*.jpg"))[:21]


@pytest.fixture(scope="module")
def npy_run(images, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("npy") / "feats"
    extract_features(model_dir, images, out, **KW)
    return read_feature_set(out)


def test_cli_extracts_to_the_new_format_exactly(csv_format, images, model_dir, npy_run, tmp_path):
    runner = CliRunner()
    assert "csv: features.csv, one line of D comma-separated decimals per row" in " ".join(
        runner.invoke(main, ["--help"]).output.split())
    r = runner.invoke(main, ["--model", str(model_dir), "--format", "csv", "--workers", "0", "--batch-size", "8",
                             "--chunk-size", "16", "-q", "-o", str(tmp_path / "csv"), *map(str, images)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "csv" / "features.csv").is_file() and not (tmp_path / "csv" / "features.npy").exists()
    lines = (tmp_path / "csv" / "features.csv").read_text().splitlines()
    assert len(lines) == 21 and len(lines[0].split(",")) == npy_run.features.shape[1]
    back = read_feature_set(tmp_path / "csv")
    assert back.features.dtype == np.float32 and back.features.tobytes() == npy_run.features.tobytes()
    assert back.paths == npy_run.paths and back.labels == npy_run.labels
    assert json.loads((tmp_path / "csv" / "extract.json").read_text())["features_file"] == "features.csv"


def test_shards_merge_into_and_out_of_the_new_format(csv_format, images, model_dir, npy_run, tmp_path):
    single = tmp_path / "single"
    extract_features(model_dir, images, single, fmt="csv", **KW)
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, d in enumerate(shards):
        extract_features(model_dir, images, d, fmt="csv" if i else "npy", shard=(i, 2), **KW)
    merge_shards(shards, tmp_path / "as_csv", fmt="csv")  # npy + csv shards -> csv
    assert output_files(tmp_path / "as_csv") == output_files(single)
    merge_shards(shards, tmp_path / "as_npy")  # the csv reader feeds the npy writer
    np.testing.assert_array_equal(read_feature_set(tmp_path / "as_npy").features, npy_run.features)


def test_unknown_format_lists_the_rows(csv_format, images, model_dir, tmp_path):
    with pytest.raises(MetAugError, match=r"unknown --format 'tsv'; use one of npy, safetensors, parquet, csv"):
        feature_format("tsv")
    r = CliRunner().invoke(main, ["--model", str(model_dir), "--format", "tsv", "-o", str(tmp_path / "o"),
                                  *map(str, images)])
    assert r.exit_code == 2 and "'tsv' is not one of 'npy', 'safetensors', 'parquet', 'csv'" in r.output
    assert not (tmp_path / "o").exists()
