"""``metaug-extract --format parquet``: one table features.parquet (path, label, feature) on
real images, equal to the npy run; resume, merge, non-UTF-8 names, metaug-eval, and the
error when pyarrow is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _extract_helpers import output_files, run_cli
from click.testing import CliRunner

from metaug_cli.extract import main
from metaug_features.errors import MetAugError
from metaug_features.extract import extract_features
from metaug_features.merge import merge_shards
from metaug_features.extract_state import PartialStore
from metaug_features.feature_files import read_feature_set

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cifar10-sample"
KW = dict(chunk_size=16, batch_size=8, workers=0, device="cpu", progress=False)


@pytest.fixture(scope="module")
def runs(model_dir, tmp_path_factory):
    """The 200 sample JPEGs (10 class folders) through a real `metaug-extract --format parquet`
    process, and the same extraction as npy (in-process; same batch size)."""
    base = tmp_path_factory.mktemp("parquet")
    proc = run_cli("--model", model_dir, "--output", base / "parquet", "--format", "parquet", "--batch-size", "48",
                   "--workers", "2", "--device", "cpu", SAMPLE)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 200 x" in proc.stdout
    extract_features(model_dir, [SAMPLE], base / "npy", batch_size=48, workers=0, device="cpu", progress=False)
    return base / "parquet", base / "npy"


def _manifest(folder: Path) -> list[tuple[str, str]]:
    lines = (folder / "manifest.csv").read_bytes().decode("utf-8", "surrogateescape").splitlines()[1:]
    return [tuple(line.split(",")[1:]) for line in lines]


def test_table_schema_rows_paths_and_labels(runs):
    parquet_dir, npy_dir = runs
    assert sorted(os.listdir(parquet_dir)) == ["extract.json", "features.parquet", "manifest.csv", "skipped.csv"]
    table = pq.read_table(parquet_dir / "features.parquet")
    npy = np.load(npy_dir / "features.npy")
    assert table.schema.names == ["path", "label", "feature"]
    assert table.schema.field("path").type == pa.string() and table.schema.field("label").type == pa.string()
    ftype = table.schema.field("feature").type
    assert pa.types.is_fixed_size_list(ftype) and ftype.value_type == pa.float32() and ftype.list_size == npy.shape[1]
    assert table.num_rows == npy.shape[0] == 200
    feats = np.stack(table.column("feature").to_numpy(zero_copy_only=False)).astype(np.float32)
    assert feats.tobytes() == npy.tobytes()  # bit-exact the npy run's rows
    manifest = _manifest(parquet_dir)
    assert table.column("path").to_pylist() == [p for p, _ in manifest]
    assert table.column("label").to_pylist() == [lb for _, lb in manifest]
    assert sorted(set(table.column("label").to_pylist())) == sorted(p.name for p in SAMPLE.iterdir())
    # Everything but the features file is the npy run's, byte for byte (extract.json: its name and hash).
    for name in ("manifest.csv", "skipped.csv"):
        assert (parquet_dir / name).read_bytes() == (npy_dir / name).read_bytes()
    fs = read_feature_set(parquet_dir)
    assert fs.features.tobytes() == npy.tobytes() and fs.meta["features_file"] == "features.parquet"


def test_pandas_reads_the_table(runs):
    pd = pytest.importorskip("pandas")
    parquet_dir, npy_dir = runs
    df = pd.read_parquet(parquet_dir / "features.parquet")
    assert list(df.columns) == ["path", "label", "feature"] and len(df) == 200
    np.testing.assert_array_equal(np.stack(df["feature"].to_numpy()), np.load(npy_dir / "features.npy"))


def test_metaug_eval_reads_a_parquet_folder(runs):
    from metaug_cli.eval import main as eval_main

    parquet_dir, npy_dir = runs
    r_parquet = CliRunner().invoke(eval_main, ["knn", "--train", str(parquet_dir), "--test", str(npy_dir), "--k", "5"])
    r_npy = CliRunner().invoke(eval_main, ["knn", "--train", str(npy_dir), "--test", str(npy_dir), "--k", "5"])
    assert r_parquet.exit_code == 0, r_parquet.output
    table = lambda out: out.split("\n\n")[0]  # noqa: E731 - the metric table, before the protocol lines
    assert table(r_parquet.output) == table(r_npy.output) and "k5_top1" in r_parquet.output


def test_same_command_again_is_complete_and_other_format_is_refused(runs, model_dir, tmp_path):
    parquet_dir, _ = runs
    before = output_files(parquet_dir)
    s = extract_features(model_dir, [SAMPLE], parquet_dir, fmt="parquet", batch_size=48, workers=0, device="cpu",
                         progress=False)
    assert s.already_complete and output_files(parquet_dir) == before
    with pytest.raises(MetAugError, match=r"\(format differ\)"):
        extract_features(model_dir, [SAMPLE], parquet_dir, fmt="npy", batch_size=48, workers=0, device="cpu",
                         progress=False)
    # Replacing one format by another leaves exactly one features file.
    out = tmp_path / "o"
    extract_features(model_dir, [SAMPLE / "cat"], out, fmt="npy", **KW)
    extract_features(model_dir, [SAMPLE / "cat"], out, fmt="parquet", overwrite=True, **KW)
    assert (out / "features.parquet").is_file() and not (out / "features.npy").exists()


def test_resume_after_interrupt_is_bit_identical(model_dir, tmp_path, monkeypatch):
    data = [SAMPLE / "dog", SAMPLE / "frog"]
    extract_features(model_dir, data, tmp_path / "ref", fmt="parquet", **KW)
    out = tmp_path / "feats"
    original = PartialStore.write_chunk

    def stop_after_two(self, result, key_hash):
        original(self, result, key_hash)
        if len(list((out / ".partial").glob("chunk-*.npz"))) >= 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(PartialStore, "write_chunk", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        extract_features(model_dir, data, out, fmt="parquet", **KW)
    monkeypatch.setattr(PartialStore, "write_chunk", original)
    assert not (out / "features.parquet").exists()
    s = extract_features(model_dir, data, out, fmt="parquet", **KW)
    assert (s.chunks_resumed, s.chunks_computed) == (2, 1)
    assert output_files(out) == output_files(tmp_path / "ref")


def test_merge_of_parquet_shards_equals_single_run(model_dir, tmp_path, monkeypatch):
    """Byte-identical, also when row groups (made small here) straddle chunk and shard
    boundaries: row groups are cut by row count, not by how the rows arrive."""
    import metaug_features.parquet_features as pf

    monkeypatch.setattr(pf, "ROW_GROUP_BYTES", 4 * 7 * 1000)  # rows_per_group = 7000 // D: a few rows
    data = [SAMPLE / "ship", SAMPLE / "truck", SAMPLE / "horse"]  # 60 files, 4 chunks of 16
    extract_features(model_dir, data, tmp_path / "single", fmt="parquet", **KW)
    meta = pq.ParquetFile(tmp_path / "single" / "features.parquet").metadata
    assert meta.num_row_groups > 1 and meta.row_group(0).num_rows % 16 != 0
    shards = []
    for i in (1, 0):
        extract_features(model_dir, data, tmp_path / f"s{i}", fmt="parquet", shard=(i, 2), **KW)
        shards.append(tmp_path / f"s{i}")
    r = CliRunner().invoke(main, ["--merge", "--format", "parquet", "-o", str(tmp_path / "merged"), *map(str, shards)])
    assert r.exit_code == 0, r.output
    assert output_files(tmp_path / "merged") == output_files(tmp_path / "single")
    # Shards of another format merge into parquet too (the features are the same rows).
    npy_shards = []
    for i in (0, 1):
        extract_features(model_dir, data, tmp_path / f"n{i}", shard=(i, 2), **KW)
        npy_shards.append(tmp_path / f"n{i}")
    merge_shards(npy_shards, tmp_path / "merged2", fmt="parquet")
    assert output_files(tmp_path / "merged2") == output_files(tmp_path / "single")


def test_non_utf8_names_are_backslash_escaped_in_the_table(model_dir, tmp_path):
    root = tmp_path / "data"
    src = sorted((SAMPLE / "cat").glob("*.jpg"))[:2]
    (root / "cat").mkdir(parents=True)
    shutil.copy(src[0], root / "cat" / os.fsdecode(b"caf\xe9.jpg"))  # Latin-1 byte, not UTF-8
    shutil.copy(src[1], root / "cat" / "café.jpg")                   # valid UTF-8
    extract_features(model_dir, [root], tmp_path / "pq", fmt="parquet", **KW)
    extract_features(model_dir, [root], tmp_path / "npy", **KW)
    table = pq.read_table(tmp_path / "pq" / "features.parquet")
    # Rows sort by the names' bytes: UTF-8 "\xc3\xa9" before Latin-1 "\xe9".
    assert table.column("path").to_pylist() == ["cat/café.jpg", "cat/caf\\xe9.jpg"]
    # manifest.csv keeps the exact bytes, and read_feature_set takes paths from there.
    assert (tmp_path / "pq" / "manifest.csv").read_bytes() == (tmp_path / "npy" / "manifest.csv").read_bytes()
    assert b"caf\xe9.jpg" in (tmp_path / "pq" / "manifest.csv").read_bytes()
    assert read_feature_set(tmp_path / "pq").paths == read_feature_set(tmp_path / "npy").paths


# ---------------------------------------------------------------------- without pyarrow
@pytest.fixture
def no_pyarrow(monkeypatch):
    """Make ``import pyarrow`` fail as it does where it is not installed."""
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)


def test_missing_pyarrow_is_a_clear_error_before_any_work(no_pyarrow, model_dir, tmp_path, monkeypatch):
    import metaug_features.extract as ex

    monkeypatch.setattr(ex, "_compute_chunks", lambda *a, **k: pytest.fail("decoded images without pyarrow"))
    with pytest.raises(MetAugError, match=r"needs pyarrow.*pip install 'metaug-features\[parquet\]'"):
        extract_features(model_dir, [SAMPLE / "cat"], tmp_path / "o", fmt="parquet", **KW)
    assert not (tmp_path / "o").exists()
    r = CliRunner().invoke(main, ["--model", str(model_dir), "-o", str(tmp_path / "o"), "--format", "parquet",
                                  "--workers", "0", str(SAMPLE / "cat")])
    assert r.exit_code == 2 and "pip install 'metaug-features[parquet]'" in r.output and "Traceback" not in r.output
    with pytest.raises(MetAugError, match=r"pip install 'metaug-features\[parquet\]'"):
        merge_shards([tmp_path / "s0"], tmp_path / "m", fmt="parquet")


def test_missing_pyarrow_when_reading_a_parquet_folder(runs, no_pyarrow):
    parquet_dir, _ = runs
    with pytest.raises(MetAugError, match=r"pip install 'metaug-features\[parquet\]'"):
        read_feature_set(parquet_dir)


def test_import_needs_no_pyarrow():
    code = (
        "import sys; sys.modules['pyarrow'] = None\n"
        "import metaug_features, metaug_features.extract, metaug_features.feature_files, metaug_cli.extract\n"
        "assert 'pyarrow.parquet' not in sys.modules\n"
        "print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_damaged_parquet_file_is_a_clear_error(runs, tmp_path):
    from metaug_features.feature_stream import iter_feature_rows

    parquet_dir, _ = runs
    broken = tmp_path / "broken"
    shutil.copytree(parquet_dir, broken)
    data = (broken / "features.parquet").read_bytes()
    (broken / "features.parquet").write_bytes(data[: len(data) // 2])  # footer gone
    with pytest.raises(MetAugError, match="not a readable parquet features file"):
        read_feature_set(broken)
    with pytest.raises(MetAugError, match="not a readable parquet features file"):
        list(iter_feature_rows(broken))
