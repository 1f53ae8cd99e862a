"""k-means clustering of frozen features and its agreement with the labels.

- k-means: ``faiss.Kmeans`` (Lloyd iterations from centroids sampled among the points) run once per seed;
  the run with the lowest objective (sum of squared distances to the centroids) wins.
  Features are L2-normalised first by default, so squared distance = 2 - 2 cos (the geometry
  the k-NN evaluation uses).
- Metrics, all in percent (0-100, like every accuracy this package reports):
  ``nmi_percent``  100 x I(Y; K) / ((H(Y) + H(K)) / 2)   (sklearn, ``average_method="arithmetic"``)
  ``ari_percent``  100 x adjusted Rand index (Hubert & Arabie 1985), sklearn (can be negative)
  ``accuracy``     100 x max over one-to-one maps m of mean(m(k_i) == y_i): the Hungarian
                   assignment on the contingency table (scipy ``linear_sum_assignment``,
                   maximising matches).

Unit rule (the whole package): every evaluation number is in percent. Accuracies keep their
names (``top1``, ``accuracy``, ...); NMI and ARI, conventionally fractions in [0, 1], carry the
unit in their key (``nmi_percent``, ``ari_percent``). A record with a bare ``nmi`` / ``ari`` key
comes from before this rule (evaluation reports of version 1, ``python -m metaug_release evaluate``
records up to v0.2.0) and holds a fraction: :func:`clustering_in_percent` reads both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import EvaluationInputError
from .checks import check_features, check_labels, l2_normalize
from .knn import faiss_threads

__all__ = [
    "PROTOCOL",
    "ClusterConfig",
    "ClusteringResult",
    "cluster_evaluate",
    "cluster_metrics",
    "clustering_in_percent",
    "hungarian_accuracy",
    "kmeans",
]

PROTOCOL = ("k-means (faiss, best objective over seeded restarts) vs labels: NMI, ARI, Hungarian-matched accuracy, "
            "all in percent")


@dataclass(frozen=True)
class ClusterConfig:
    """k-means settings: the one place their defaults are written (:func:`kmeans`,
    :func:`cluster_evaluate` and ``metaug-eval cluster`` / ``all`` read them from here).

    n_clusters: k (None = the number of classes in the labels).
    restarts: seeded runs; the lowest objective wins.
    niter: Lloyd iterations per run.
    seed: seed of the first run (run r uses seed + r).
    normalize: L2-normalise the features first (the k-NN geometry).
    """

    n_clusters: int | None = None
    restarts: int = 5
    niter: int = 50
    seed: int = 0
    normalize: bool = True


def _as_ids(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary labels to ids 0..C-1 (sorted)."""
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def contingency(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """int64 [C_true, C_pred] counts of (true class, cluster) pairs."""
    t, p = _as_ids(y_true), _as_ids(y_pred)
    table = np.zeros((t.max() + 1, p.max() + 1), dtype=np.int64)
    np.add.at(table, (t, p), 1)
    return table


def hungarian_accuracy(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> float:
    """Clustering accuracy (%) after the best one-to-one matching of clusters to classes.

    Clusters left without a class (more clusters than classes) count as wrong.
    """
    from scipy.optimize import linear_sum_assignment

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise EvaluationInputError(f"label arrays must be 1-D, non-empty and equally long: {y_true.shape} vs {y_pred.shape}")
    table = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(100.0 * table[rows, cols].sum() / y_true.size)


def cluster_metrics(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray) -> dict[str, float]:
    """NMI, ARI and Hungarian accuracy of a clustering ``y_pred`` against labels ``y_true``, in
    percent: ``{"nmi_percent", "ari_percent", "accuracy"}`` (see the module docstring)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return {
        "nmi_percent": 100.0 * float(normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic")),
        "ari_percent": 100.0 * float(adjusted_rand_score(y_true, y_pred)),
        "accuracy": hungarian_accuracy(y_true, y_pred),
    }


def clustering_in_percent(metrics: dict) -> dict[str, float]:
    """``{"nmi_percent", "ari_percent", "accuracy"}`` of a clustering record of any age: a record
    written under the unit rule (keys ``nmi_percent`` / ``ari_percent``) is returned as is, an
    older one (bare ``nmi`` / ``ari``, fractions in [0, 1]) is scaled by 100. ``accuracy`` was
    always in percent."""
    out = {}
    for name in ("nmi", "ari"):
        if f"{name}_percent" in metrics:
            out[f"{name}_percent"] = float(metrics[f"{name}_percent"])
        elif name in metrics:
            out[f"{name}_percent"] = 100.0 * float(metrics[name])
    if "accuracy" in metrics:
        out["accuracy"] = float(metrics["accuracy"])
    return out


def kmeans(
    features: np.ndarray,
    n_clusters: int,
    restarts: int = ClusterConfig.restarts,
    seed: int = ClusterConfig.seed,
    niter: int = ClusterConfig.niter,
    normalize: bool = ClusterConfig.normalize,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """faiss k-means with ``restarts`` seeded runs (seeds seed, seed+1, ...), best objective kept.

    Args:
        features: [N, D]; checked for NaN / inf.
        n_clusters: K, 2 <= K <= N.
        restarts: independent runs; the one with the lowest final objective wins.
        seed: first seed.
        niter: Lloyd iterations per run.
        normalize: L2-normalise rows first (default).
        threads: faiss threads (None = faiss's default).

    Returns:
        assignments int64 [N], centroids float32 [K, D], final objective of every run.
    """
    import faiss

    x = check_features(features, "features")
    if normalize:
        x = l2_normalize(x)
    n, d = x.shape
    if not 2 <= n_clusters <= n:
        raise EvaluationInputError(f"n_clusters={n_clusters} must be between 2 and the number of rows ({n})")
    if restarts < 1 or niter < 1:
        raise EvaluationInputError(f"restarts and niter must be >= 1, got {restarts} and {niter}")
    with faiss_threads(threads):
        centroids, objectives = _best_of_restarts(x, n_clusters, restarts, seed, niter)
        index = faiss.IndexFlatL2(d)
        index.add(centroids)
        _, assign = index.search(x, 1)
    return assign[:, 0].astype(np.int64), centroids, objectives


def _best_of_restarts(x: np.ndarray, n_clusters: int, restarts: int, seed: int, niter: int
                      ) -> tuple[np.ndarray, list[float]]:
    """Centroids [K, D] of the restart with the lowest final objective, and every objective."""
    import faiss

    n, d = x.shape
    best = None
    objectives = []
    for r in range(restarts):
        # max_points_per_centroid: faiss would otherwise subsample to 256 points per centroid;
        # use every point so the objective is the objective on the data.
        km = faiss.Kmeans(d, n_clusters, niter=niter, seed=seed + r, verbose=False,
                          max_points_per_centroid=max(256, (n + n_clusters - 1) // n_clusters))
        km.train(x)
        obj = float(km.obj[-1])
        objectives.append(obj)
        if best is None or obj < best[0]:
            best = (obj, km.centroids.copy())
    return best[1], objectives


@dataclass
class ClusteringResult:
    """Outcome of :func:`cluster_evaluate`: metrics (``nmi_percent``, ``ari_percent``,
    ``accuracy``, all in %), cluster ids, the objective of each restart, parameters."""

    metrics: dict[str, float]
    assignments: np.ndarray
    objectives: list[float]
    params: dict
    classes: list = field(default_factory=list)
    protocol: str = PROTOCOL


def cluster_evaluate(
    features: np.ndarray,
    labels: Sequence | np.ndarray,
    n_clusters: int | None = ClusterConfig.n_clusters,
    restarts: int = ClusterConfig.restarts,
    seed: int = ClusterConfig.seed,
    niter: int = ClusterConfig.niter,
    normalize: bool = ClusterConfig.normalize,
    threads: int | None = None,
) -> ClusteringResult:
    """k-means on ``features`` (K = number of label classes unless given) scored against ``labels``."""
    x = check_features(features, "features")
    y = check_labels(labels, x.shape[0], "labels")
    classes = np.unique(y)
    if classes.size < 2:
        raise EvaluationInputError(f"labels: only one class ({classes[0]!r}); clustering metrics need at least two")
    k = int(n_clusters) if n_clusters is not None else int(classes.size)
    assign, _, objectives = kmeans(x, k, restarts=restarts, seed=seed, niter=niter, normalize=normalize,
                                   threads=threads)
    metrics = cluster_metrics(y, assign)
    params = {"n_clusters": k, "restarts": int(restarts), "seed": int(seed), "niter": int(niter), "normalize": bool(normalize),
                  "num_rows": int(x.shape[0]), "dim": int(x.shape[1]), "num_classes": int(classes.size),
                  "best_objective": float(min(objectives))}
    return ClusteringResult(metrics=metrics, assignments=assign, objectives=objectives, params=params,
                            classes=[c.item() for c in classes])
