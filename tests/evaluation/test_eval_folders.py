"""metaug_features.evaluation.folders: what metaug-eval runs, callable from Python. Feature folders
in, one report out: the same numbers as the evaluators called on the arrays, the inputs
described, the files written listed in order; the settings dataclasses as the defaults."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from PIL import Image

import metaug_features
from metaug_features.errors import EvaluationInputError
from metaug_features.evaluation import (
    ClusterConfig,
    KNNConfig,
    PlotConfig,
    ProbeConfig,
    cluster_evaluate,
    evaluate_folder,
    evaluate_split_pair,
    fast_linear_probe,
    knn_evaluate,
    paper_probe_folders,
)
from metaug_features.evaluation import folders as folders_module
from metaug_features.evaluation import paper_probe as paper_probe_module
from metaug_features.feature_files import (
    FeatureSet,
    features_path,
    sha256_file,
    write_feature_set,
)


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    """train (240 rows, so that k = 200 fits) and test (60 rows) feature folders of 3 classes
    whose means differ, and a test folder of other files (a wrong second view)."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("folders")
    for split, n in (("train", 240), ("test", 60)):
        labels = [c for c in "abc" for _ in range(n // 3)]
        x = rng.normal(size=(n, 8)).astype(np.float32) + np.repeat(np.eye(3, 8, dtype=np.float32) * 3, n // 3, 0)
        write_feature_set(root / split, FeatureSet(x, [f"{c}/{i}.jpg" for i, c in enumerate(labels)], labels))
    fs = metaug_features.feature_files.read_feature_set(root / "test")
    write_feature_set(root / "other", FeatureSet(fs.features, [f"z{p}" for p in fs.paths], fs.labels))
    return root


def _arrays(folder):
    fs = metaug_features.feature_files.read_feature_set(folder)
    return fs.features, fs.labels


def test_split_pair_matches_the_evaluators_and_lists_what_it_wrote(feats, tmp_path):
    lines = []
    res = evaluate_split_pair(feats / "train", feats / "test", knn=KNNConfig(), probe=ProbeConfig(cs=(0.1,)),
                              cluster=ClusterConfig(restarts=1), plots=PlotConfig(max_points=60),
                              plot_dir=tmp_path / "p", report_path=tmp_path / "r.json", log=lines.append)
    assert [e["name"] for e in res.report["evaluations"]] == ["knn", "fast_probe", "kmeans", "plots"]
    assert lines == ["knn ...", "probe ...", "cluster ...", "plots ..."]
    assert res.written == [tmp_path / "p" / "embedding.png", tmp_path / "p" / "similarity_hist.png",
                           tmp_path / "r.json"]
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(res.report))
    xtr, ytr = _arrays(feats / "train")
    xte, yte = _arrays(feats / "test")
    knn, probe, kmeans, _ = res.report["evaluations"]
    lib = knn_evaluate(xtr, ytr, xte, yte)  # the library's own defaults: the same as KNNConfig()
    assert knn["metrics"] == {f"k{k}_{m}": v for k, a in lib.accuracy.items() for m, v in a.items()}
    assert set(lib.accuracy) == {200, 20}
    assert probe["metrics"]["top1"] == fast_linear_probe(xtr, ytr, xte, yte, cs=(0.1,)).accuracy["top1"]
    assert kmeans["metrics"] == pytest.approx(cluster_evaluate(xte, yte, restarts=1).metrics)
    assert set(res.report["inputs"]) == {"train", "test"}
    assert res.report["inputs"]["test"]["features_sha256"] == sha256_file(features_path(feats / "test"))


def test_one_step_says_nothing_and_writes_nothing_unasked(feats):
    lines = []
    res = evaluate_split_pair(feats / "train", feats / "test", knn=KNNConfig(ks=(5,)), log=lines.append)
    assert lines == [] and res.written == []
    assert [e["name"] for e in res.report["evaluations"]] == ["knn"]


@pytest.mark.parametrize("threads,expected", [(None, "absent"), (2, 2)])
def test_threads_none_keeps_each_steps_default(feats, monkeypatch, threads, expected):
    seen = {}
    for name in ("knn_evaluate", "fast_linear_probe", "cluster_evaluate"):
        real = getattr(folders_module, name)
        monkeypatch.setattr(folders_module, name,
                            lambda *a, _n=name, _r=real, **k: seen.__setitem__(_n, k.get("threads", "absent")) or _r(*a, **k))
    evaluate_split_pair(feats / "train", feats / "test", knn=KNNConfig(ks=(5,)), probe=ProbeConfig(cs=(0.1,)),
                        cluster=ClusterConfig(restarts=1), threads=threads)
    assert seen == dict.fromkeys(("knn_evaluate", "fast_linear_probe", "cluster_evaluate"), expected)


def test_the_functions_defaults_are_the_settings_dataclasses():
    """Each default is written once, in the dataclass; the evaluators read it from there."""
    sig = {f.__name__: inspect.signature(f).parameters for f in (knn_evaluate, fast_linear_probe, cluster_evaluate)}
    assert sig["knn_evaluate"]["ks"].default == KNNConfig().ks == (200, 20)
    assert sig["knn_evaluate"]["temperature"].default == KNNConfig().temperature == 0.07
    for field in ("cs", "val_fraction", "selection_max_train", "max_iter", "tol", "seed"):
        assert sig["fast_linear_probe"][field].default == getattr(ProbeConfig(), field), field
    for field in ("n_clusters", "restarts", "seed", "niter", "normalize"):
        assert sig["cluster_evaluate"][field].default == getattr(ClusterConfig(), field), field


def test_folder_cluster_and_plots(feats, tmp_path):
    res = evaluate_folder(feats / "test", cluster=ClusterConfig(restarts=1), plots=PlotConfig(max_points=0),
                          plot_dir=tmp_path / "p", second_view=feats / "test")
    assert [e["name"] for e in res.report["evaluations"]] == ["kmeans", "plots"]
    plots = res.report["evaluations"][1]
    assert "instance pairs" in plots["protocol"] and plots["params"]["embedding"]["num_points"] == 60  # 0 = all
    assert set(res.report["inputs"]) == {"features"} and len(res.written) == 2


@pytest.mark.parametrize("call,match", [
    (lambda f: evaluate_folder(f / "test", plots=PlotConfig()), "pass plot_dir"),
    (lambda f: evaluate_split_pair(f / "train", f / "test", plots=PlotConfig()), "pass plot_dir"),
    (lambda f: evaluate_folder(f / "test", plots=PlotConfig(), plot_dir=f / "x", second_view=f / "other"),
     "same images in the same order"),
    (lambda f: evaluate_split_pair(f / "missing", f / "test", knn=KNNConfig()), "no such feature folder"),
])
def test_bad_input_names_the_fix(feats, call, match):
    with pytest.raises(metaug_features.errors.MetAugError, match=match):
        call(feats)


# ---------------------------------------------------------------------- the paper probe on image folders
def _image_folders(root):
    for split in ("train", "test"):
        for c, colour in (("cat", 0), ("dog", 255)):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (colour, i, 0)).save(root / split / c / f"{i}.png")
    (root / "empty").mkdir()
    return root


def test_paper_probe_folders_lists_the_images_and_restores_threads(tmp_path, monkeypatch):
    root = _image_folders(tmp_path)
    got = {}

    class FakeEncoder:
        config = type("C", (), {"to_dict": lambda self: {"architecture": "fake"}})()

    def fake_probe(enc, tr, ytr, te, yte, layer, config, progress):
        got.update(train=(tr, ytr), threads=torch.get_num_threads(), layer=layer, config=config)
        return paper_probe_module.PaperProbeResult(per_seed={0: 50.0}, mean=50.0, ci95=None, history={0: []},
                                                   params={}, protocol="p")

    monkeypatch.setattr(metaug_features, "load_encoder", lambda ref, device: FakeEncoder())
    monkeypatch.setattr(paper_probe_module, "paper_linear_probe", fake_probe)
    before = torch.get_num_threads()
    threads = 1 if before != 1 else 2
    res = paper_probe_folders("m", root / "train", root / "test", threads=threads, layer="fc",
                              report_path=tmp_path / "pp.json")
    assert got["threads"] == threads and torch.get_num_threads() == before
    assert got["config"] == paper_probe_module.PaperProbeConfig() and got["layer"] == "fc"
    paths, labels = got["train"]
    assert labels == ["cat", "cat", "dog", "dog"] and str(paths[0]).replace("\\", "/").endswith("train/cat/0.png")
    assert res.report["inputs"]["train"]["num_rows"] == 4 and res.written == [tmp_path / "pp.json"]
    with pytest.raises(EvaluationInputError, match="no image files found"):
        paper_probe_folders("m", root / "empty", root / "test")
