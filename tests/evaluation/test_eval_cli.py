"""metaug-eval end to end on feature folders of real CIFAR-10 features (written with
write_feature_set, the format metaug-extract writes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from metaug_cli.eval import main
from metaug_features import EncoderConfig, build_encoder, save_pretrained
from metaug_features.evaluation import cluster_evaluate, fast_linear_probe, knn_evaluate
from metaug_features.feature_files import (
    FeatureSet,
    features_path,
    sha256_file,
    write_feature_set,
)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder(EncoderConfig(architecture="alexnet32", width=0.25, views=("l", "ab")))


@pytest.fixture(scope="module")
def folders(cifar_images, encoder, tmp_path_factory):
    """Feature folders {name: Path}: train/test conv features, test fc features (other
    dimension), and a train folder whose labels are missing."""
    out = tmp_path_factory.mktemp("feats")
    made = {}
    for split in ("train", "test"):
        files = sorted((cifar_images / split).glob("*/*.jpg"))
        rel = [f.relative_to(cifar_images / split).as_posix() for f in files]
        labels = [f.parent.name for f in files]
        for layer in ("conv", "fc"):
            feats = encoder.extract(files, layer=layer).numpy()
            name = f"{split}_{layer}"
            write_feature_set(out / name, FeatureSet(feats, rel, labels, meta={"layer": layer, "model": "tiny-random"}),
                              fmt="npy" if split == "train" else "safetensors")
            made[name] = out / name
    fs = FeatureSet(np.load(made["train_conv"] / "features.npy"), [f"x{i}.jpg" for i in range(200)], [""] * 200)
    write_feature_set(out / "unlabelled", fs)
    made["unlabelled"] = out / "unlabelled"
    return made


def _invoke(args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res


def _arrays(folder):
    from metaug_features.feature_files import read_feature_set

    fs = read_feature_set(folder)
    return fs.features, fs.labels


def test_knn_cli_matches_library_and_writes_report(folders, tmp_path):
    report = tmp_path / "r" / "knn.json"
    res = _invoke(["knn", "--train", folders["train_conv"], "--test", folders["test_conv"], "--k", "200,20",
                   "--temperature", "0.1", "--report", report, "--quiet"])
    assert res.exit_code == 0, res.output
    doc = json.loads(report.read_text())
    (entry,) = doc["evaluations"]
    xtr, ytr = _arrays(folders["train_conv"])
    xte, yte = _arrays(folders["test_conv"])
    lib = knn_evaluate(xtr, ytr, xte, yte, ks=[200, 20], temperature=0.1)
    assert entry["metrics"] == {f"k{k}_{m}": v for k, a in lib.accuracy.items() for m, v in a.items()}
    assert entry["params"]["temperature"] == 0.1 and entry["params"]["ks"] == [200, 20]
    assert "InstDisc" in entry["protocol"]
    assert doc["inputs"]["train"]["features_sha256"] == sha256_file(features_path(folders["train_conv"]))
    assert doc["inputs"]["test"]["features_file"] == "features.safetensors"
    # The table on stdout carries the same numbers.
    assert f"{lib.accuracy[20]['top1']:.2f}" in res.stdout and "k20_top1" in res.stdout


def test_probe_and_cluster_cli(folders, tmp_path):
    res = _invoke(["probe", "--train", folders["train_conv"], "--test", folders["test_conv"], "--c-grid", "0.01,0.1",
                   "--report", tmp_path / "p.json"])
    assert res.exit_code == 0, res.output
    entry = json.loads((tmp_path / "p.json").read_text())["evaluations"][0]
    xtr, ytr = _arrays(folders["train_conv"])
    xte, yte = _arrays(folders["test_conv"])
    lib = fast_linear_probe(xtr, ytr, xte, yte, cs=(0.01, 0.1))
    assert entry["metrics"]["top1"] == lib.accuracy["top1"] and entry["metrics"]["chosen_c"] == lib.selection.best_c
    assert "fast linear probe" in entry["protocol"] and "fast linear probe" in res.stdout

    res = _invoke(["cluster", "--features", folders["test_conv"], "--restarts", "2", "--report", tmp_path / "c.json"])
    assert res.exit_code == 0, res.output
    entry = json.loads((tmp_path / "c.json").read_text())["evaluations"][0]
    lib = cluster_evaluate(xte, yte, restarts=2)
    assert entry["metrics"] == pytest.approx(lib.metrics)
    assert entry["params"]["n_clusters"] == 10
    # one unit: NMI, ARI and accuracy all in percent, the unit in NMI's and ARI's names (report v2)
    assert json.loads((tmp_path / "c.json").read_text())["version"] == 2
    assert set(entry["metrics"]) == {"nmi_percent", "ari_percent", "accuracy"}
    nmi = entry["metrics"]["nmi_percent"]
    assert 1.0 < nmi <= 100.0  # a fraction would be <= 1 (a random encoder's 10-class NMI is a few %)
    row = next(line for line in res.stdout.splitlines() if "nmi_percent" in line)
    assert row.split()[-1] == f"{nmi:.2f}"


def test_plot_and_all_cli(folders, tmp_path):
    res = _invoke(["plot", "--features", folders["test_conv"], "-o", tmp_path / "plots", "--max-points", "150",
                   "--second-view", folders["test_conv"]])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "plots" / "embedding.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "similarity_hist.png").stat().st_size > 1000
    res = _invoke(["all", "--train", folders["train_conv"], "--test", folders["test_conv"], "--c-grid", "0.1",
                   "--restarts", "1", "--report", tmp_path / "all.json", "--output", tmp_path / "p2", "--max-points", "100"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "all.json").read_text())
    assert [e["name"] for e in doc["evaluations"]] == ["knn", "fast_probe", "kmeans", "plots"]
    assert all(e["protocol"] for e in doc["evaluations"])
    assert (tmp_path / "p2" / "embedding.png").is_file()


@pytest.mark.parametrize(
    "args,match",
    [
        (["knn", "--train", "{train_conv}", "--test", "{test_fc}"], "dimension"),
        (["knn", "--train", "{train_conv}", "--test", "{test_conv}", "--k", "500"], "larger than the train set"),
        (["knn", "--train", "{unlabelled}", "--test", "{test_conv}"], "no label"),
        (["knn", "--train", "{missing}", "--test", "{test_conv}"], "no such feature folder"),
        (["cluster", "--features", "{test_conv}", "--n-clusters", "1000"], "between 2 and"),
        (["probe", "--train", "{train_conv}", "--test", "{test_fc}"], "dimension"),
    ],
)
def test_cli_errors_are_one_line_exit_2(folders, tmp_path, args, match):
    names = dict(folders, missing=tmp_path / "nope")
    res = _invoke([a.format(**{k: str(v) for k, v in names.items()}) for a in args])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and match in lines[0], res.output


def test_cli_errors_from_a_real_process(folders, tmp_path):
    """The installed console script: exit status 2, one line on stderr, no traceback; a feature
    file with NaN is refused."""
    bad = tmp_path / "bad"
    shutil.copytree(folders["train_conv"], bad)
    x = np.load(bad / "features.npy")
    x[3, 7] = np.nan
    np.save(bad / "features.npy", x)
    proc = subprocess.run([sys.executable, "-m", "metaug_cli.eval", "knn", "--train", str(bad), "--test",
                           str(folders["test_conv"])], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "NaN or inf" in proc.stderr


def test_paper_probe_cli_tiny_budget(cifar_images, encoder, tmp_path):
    save_pretrained(encoder, tmp_path / "model")
    res = _invoke(["paper-probe", "--model", tmp_path / "model", "--train-images", cifar_images / "train",
                   "--test-images", cifar_images / "test", "--epochs", "1", "--batch-size", "100",
                   "--report", tmp_path / "pp.json", "--quiet"])
    assert res.exit_code == 0, res.output
    (entry,) = json.loads((tmp_path / "pp.json").read_text())["evaluations"]
    assert entry["name"] == "paper_probe" and "REDUCED budget" in entry["protocol"]
    assert entry["params"]["num_train"] == 200 and entry["params"]["epochs"] == 1
    assert 0.0 <= entry["metrics"]["top1_mean"] <= 100.0
    (epoch,) = entry["history"]["0"]
    assert epoch["epoch"] == 1 and epoch["test_top1"] == entry["metrics"]["top1_mean"]
