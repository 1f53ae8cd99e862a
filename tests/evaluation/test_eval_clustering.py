"""Clustering metrics against values computed by hand on small known cases, and k-means
behaviour (recovery of obvious clusters, best-of-restarts, errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metaug_features import EvaluationInputError
from metaug_features.evaluation import (
    cluster_evaluate,
    cluster_metrics,
    hungarian_accuracy,
    kmeans,
)


def test_hungarian_accuracy_hand_computed():
    # Clusters 1 -> class 0 (3 right), 0 -> class 1 (2 right), 2 -> class 2 (3 right): 8 / 9.
    y = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    k = [1, 1, 1, 0, 0, 2, 2, 2, 2]
    assert hungarian_accuracy(y, k) == pytest.approx(100 * 8 / 9)
    # A pure relabelling is perfect, whatever the names.
    assert hungarian_accuracy(["a", "a", "b", "b", "c"], [7, 7, 3, 3, 5]) == 100.0
    # More clusters than classes: only one cluster per class can be matched -> 2 of 4.
    assert hungarian_accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == 50.0
    # Contingency (rows classes, columns clusters) [[3, 2], [2, 0]]: the greedy choice of the
    # largest cell (class 0 <-> cluster 0, 3) leaves 0 for class 1 (total 3); the optimum is
    # class 0 <-> cluster 1 (2) + class 1 <-> cluster 0 (2) = 4 of 7.
    y = [0, 0, 0, 0, 0, 1, 1]
    k = [0, 0, 0, 1, 1, 0, 0]
    assert hungarian_accuracy(y, k) == pytest.approx(100 * 4 / 7)


def test_nmi_ari_hand_computed():
    m = cluster_metrics([0, 0, 1, 1], [5, 5, 9, 9])
    # Every score in percent (the package's unit rule), the unit in NMI's and ARI's keys.
    assert m == {"nmi_percent": pytest.approx(100.0), "ari_percent": pytest.approx(100.0), "accuracy": 100.0}
    # Independent split: I(Y;K) = 0 -> NMI 0. ARI: sum_ij C(n_ij,2) = 0, sum_i C(a_i,2) = 2,
    # sum_j C(b_j,2) = 2, C(4,2) = 6: expected 2*2/6, max (2+2)/2 -> (0 - 2/3) / (2 - 2/3) = -0.5.
    m = cluster_metrics([0, 0, 1, 1], [0, 1, 0, 1])
    assert m["nmi_percent"] == pytest.approx(0.0, abs=1e-10)
    assert m["ari_percent"] == pytest.approx(-50.0)
    assert m["accuracy"] == 50.0
    # Y = (0,0,0,1,1,1), K = (0,0,1,1,2,2): H(Y) = ln 2, H(K) = ln 3,
    # I = 2/6 ln(2/6 / (1/2 * 1/3)) + 2 * 1/6 ln(1/6 / (1/2 * 1/3)) + 2/6 ln(2) = (2/3) ln 2,
    # NMI (arithmetic) = I / ((ln 2 + ln 3) / 2).
    # ARI: sum C(n_ij,2) = 1 + 1 = 2; sum C(a_i,2) = 3 + 3 = 6; sum C(b_j,2) = 3; C(6,2) = 15;
    # expected 6*3/15 = 1.2, max (6+3)/2 = 4.5 -> (2 - 1.2) / (4.5 - 1.2).
    m = cluster_metrics([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2])
    assert m["nmi_percent"] == pytest.approx(100 * (2 / 3) * math.log(2) / ((math.log(2) + math.log(3)) / 2))
    assert m["ari_percent"] == pytest.approx(100 * 0.8 / 3.3)
    assert m["accuracy"] == pytest.approx(100 * 4 / 6)


def test_clustering_in_percent_reads_old_and_new_records():
    """Records written before the unit rule hold NMI / ARI as fractions under ``nmi`` / ``ari``;
    new ones hold percent under ``nmi_percent`` / ``ari_percent``: both read as percent."""
    from metaug_features.evaluation import clustering_in_percent

    old = {"nmi": 0.2424795648912238, "ari": 0.15595540995641918, "accuracy": 33.93, "params": {}}
    assert clustering_in_percent(old) == {"nmi_percent": pytest.approx(24.24795648912238),
                                          "ari_percent": pytest.approx(15.595540995641918), "accuracy": 33.93}
    new = cluster_metrics([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2])
    assert clustering_in_percent(new) == new
    assert clustering_in_percent({"nmi_percent": 24.25, "nmi": 0.9}) == {"nmi_percent": 24.25}  # the explicit key wins


def _blobs(n_per=40, k=4, d=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(d, dtype=np.float32)[:k] * 3 + 1  # distinct directions after normalisation
    x = np.concatenate([c + spread * rng.normal(size=(n_per, d)) for c in centres]).astype(np.float32)
    y = np.repeat([f"class{i}" for i in range(k)], n_per)
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


def test_kmeans_recovers_separated_clusters():
    x, y = _blobs()
    res = cluster_evaluate(x, y, restarts=3, seed=1)
    assert res.metrics["accuracy"] == 100.0
    assert res.metrics["nmi_percent"] == pytest.approx(100.0)
    assert res.metrics["ari_percent"] == pytest.approx(100.0)
    assert res.params["n_clusters"] == 4 and len(res.objectives) == 3
    assert res.params["best_objective"] == min(res.objectives)


def test_kmeans_keeps_the_best_restart():
    x, _ = _blobs(n_per=30, k=6, spread=0.4, seed=2)
    assign, centroids, objectives = kmeans(x, 6, restarts=6, seed=0)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    # Objective of what is returned: each point to its assigned (= nearest) centroid.
    d2 = ((z[:, None, :] - centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(assign, d2.argmin(1))
    returned = d2.min(1).sum()
    # Lloyd's last update can only lower the objective of the last assignment step.
    assert returned <= min(objectives) * (1 + 1e-5)
    single = [kmeans(x, 6, restarts=1, seed=s)[2][0] for s in range(6)]
    assert objectives == pytest.approx(single, rel=1e-6)  # restart r uses seed + r


def test_clustering_bad_inputs():
    x, y = _blobs()
    with pytest.raises(EvaluationInputError, match="between 2 and"):
        cluster_evaluate(x, y, n_clusters=len(x) + 1)
    with pytest.raises(EvaluationInputError, match="only one class"):
        cluster_evaluate(x, ["a"] * len(x))
    bad = x.copy()
    bad[0, 0] = np.inf
    with pytest.raises(EvaluationInputError, match="NaN or inf"):
        cluster_evaluate(bad, y)
    with pytest.raises(EvaluationInputError, match="labels for"):
        cluster_evaluate(x, y[:-1])
    with pytest.raises(EvaluationInputError, match="equally long"):
        hungarian_accuracy([0, 1], [0, 1, 1])
