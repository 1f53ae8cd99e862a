"""Weighted k-nearest-neighbour classification of frozen features (InstDisc / DINO protocol).

Protocol (Wu et al. 2018, "Unsupervised feature learning via non-parametric instance
discrimination", eq. 6 / 7; the same rule DINO's ``eval_knn.py`` uses):

    z = x / ||x||                                 L2-normalised features
    s_i = <z_test, z_train_i>                     cosine similarity
    N_k = the k train rows with the largest s_i
    score(c) = sum_{i in N_k, y_i = c} exp(s_i / T)
    prediction = argmax_c score(c)

Search uses an exact faiss inner-product index (``IndexFlatIP``) over the L2-normalised train
set; queries go in chunks so memory is bounded by ``chunk_size x max(k)`` results, whatever the
test size. One search with the largest k serves every k (the top-k of a top-K list with K >= k
is the top-k).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import EvaluationInputError
from .checks import encode_splits, l2_normalize

__all__ = ["PROTOCOL", "KNNConfig", "KNNResult", "knn_evaluate", "knn_search", "knn_vote"]

PROTOCOL = "weighted k-NN (InstDisc/DINO): L2-normalised features, cosine similarity, votes exp(sim/T)"


@dataclass(frozen=True)
class KNNConfig:
    """The k-NN protocol's settings: the one place their defaults are written.

    :func:`knn_evaluate`, ``metaug-eval knn`` / ``all`` and the model cards read them from here.
    ks: neighbour counts reported; the first (200, as InstDisc) is the headline number.
    temperature: T of exp(sim / T) (0.07, InstDisc's).
    chunk_size: test rows per faiss search (bounds memory, not the result).
    """

    ks: tuple[int, ...] = (200, 20)
    temperature: float = 0.07
    chunk_size: int = 4096


def knn_search(
    train: np.ndarray, queries: np.ndarray, k: int, chunk_size: int = 4096, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner-product search.

    Args:
        train: float32 [N, D], already L2-normalised (so inner product = cosine).
        queries: float32 [Q, D], already L2-normalised.
        k: neighbours per query (1 <= k <= N).
        chunk_size: queries per faiss call; peak extra memory ~ chunk_size * k * 12 bytes plus
            faiss's own blocked distance buffer.
        threads: faiss OpenMP threads during the search (None = faiss's default); restored after.

    Returns:
        sims float32 [Q, k] (descending) and indices int64 [Q, k] into ``train``.
    """
    import faiss  # imported here so that importing the package does not pay for faiss

    n, d = train.shape
    if not 1 <= k <= n:
        raise EvaluationInputError(f"k={k} but the train set has {n} rows; choose 1 <= k <= {n}")
    if chunk_size < 1:
        raise EvaluationInputError(f"chunk_size must be >= 1, got {chunk_size}")
    index = faiss.IndexFlatIP(d)
    index.add(np.ascontiguousarray(train, dtype=np.float32))
    q = queries.shape[0]
    sims = np.empty((q, k), dtype=np.float32)
    idx = np.empty((q, k), dtype=np.int64)
    with faiss_threads(threads):
        for start in range(0, q, chunk_size):
            stop = min(start + chunk_size, q)
            s, i = index.search(np.ascontiguousarray(queries[start:stop], dtype=np.float32), k)
            sims[start:stop] = s
            idx[start:stop] = i
    return sims, idx


@contextlib.contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """Run a block with ``threads`` faiss OpenMP threads (None: leave the setting alone)."""
    import faiss

    if threads is None:
        yield
        return
    if threads < 1:
        raise EvaluationInputError(f"threads must be >= 1, got {threads}")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def knn_vote(
    sims: np.ndarray, neighbour_labels: np.ndarray, num_classes: int, temperature: float
) -> np.ndarray:
    """Class scores of the weighted vote.

    Args:
        sims: [Q, k] cosine similarities of each query's k neighbours.
        neighbour_labels: int [Q, k] class id of each neighbour.
        num_classes: C.
        temperature: T > 0.

    Returns:
        float64 [Q, C]: score(c) = sum over neighbours of class c of exp(sim / T).
    """
    q = sims.shape[0]
    # float64: exp(1 / 0.07) ~ 1.6e6, and sums over 200 neighbours must still separate classes.
    weights = np.exp(sims.astype(np.float64) / temperature)
    flat = (np.arange(q, dtype=np.int64)[:, None] * num_classes + neighbour_labels).ravel()
    scores = np.bincount(flat, weights=weights.ravel(), minlength=q * num_classes)
    return scores.reshape(q, num_classes)


def _topk_correct(scores: np.ndarray, y: np.ndarray, top: int) -> np.ndarray:
    """Bool [Q]: the true class is among the ``top`` best-scoring classes. Ties between class
    scores are broken towards the lower class id (stable sort), as argmax does for top-1."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    return (order == y[:, None]).any(axis=1)


@dataclass
class KNNResult:
    """Outcome of :func:`knn_evaluate`.

    Attributes:
        accuracy: {k: {"top1": %, "top5": % (only when >= 5 classes)}}.
        predictions: {k: int64 [N_test] predicted class ids}.
        scores: {k: float64 [N_test, C] vote scores} (kept only with ``keep_scores=True``).
        classes: class names, index = class id.
        params: the protocol's settings (ks, temperature, chunk size, counts, dimension).
    """

    accuracy: dict[int, dict[str, float]]
    predictions: dict[int, np.ndarray]
    classes: list
    params: dict
    scores: dict[int, np.ndarray] = field(default_factory=dict)
    protocol: str = PROTOCOL

    def metrics(self) -> dict[str, float]:
        """Flat metric names for reports, e.g. ``{"knn_k200_top1": 41.2, ...}``."""
        out = {}
        for k, acc in self.accuracy.items():
            for name, v in acc.items():
                out[f"knn_k{k}_{name}"] = v
        return out


def knn_evaluate(
    train: np.ndarray,
    train_labels: Sequence | np.ndarray,
    test: np.ndarray,
    test_labels: Sequence | np.ndarray,
    ks: Sequence[int] = KNNConfig.ks,
    temperature: float = KNNConfig.temperature,
    chunk_size: int = KNNConfig.chunk_size,
    keep_scores: bool = False,
    threads: int | None = None,
) -> KNNResult:
    """Weighted k-NN accuracy of ``test`` against ``train`` (module docstring for the formula).

    Args:
        train: [N_train, D] features (any float dtype; normalised here).
        train_labels: N_train labels (strings or ints).
        test: [N_test, D] features.
        test_labels: N_test labels; every class must occur in the train set.
        ks: neighbour counts to report (default :attr:`KNNConfig.ks`); each must be <= N_train.
        temperature: T of exp(sim / T) (default :attr:`KNNConfig.temperature`).
        chunk_size: test rows per faiss search.
        keep_scores: also return the [N_test, C] vote scores per k.
        threads: faiss threads (None = faiss's default).

    Raises:
        EvaluationInputError: inconsistent inputs (see ``checks.encode_splits``), k out of range,
            T <= 0.
    """
    ks = [int(k) for k in ks]
    if not ks:
        raise EvaluationInputError("no k given; pass at least one neighbour count")
    if not (temperature > 0 and np.isfinite(temperature)):
        raise EvaluationInputError(f"temperature must be a positive number, got {temperature}")
    data = encode_splits(train, train_labels, test, test_labels)
    n_train = data.train.shape[0]
    bad = [k for k in ks if not 1 <= k <= n_train]
    if bad:
        raise EvaluationInputError(
            f"k={bad[0]} is larger than the train set ({n_train} rows) or below 1; choose k <= {n_train}"
        )
    ztr = l2_normalize(data.train)
    zte = l2_normalize(data.test)
    sims, idx = knn_search(ztr, zte, max(ks), chunk_size=chunk_size, threads=threads)
    nlab = data.train_y[idx]
    c = data.num_classes
    accuracy, predictions, scores = {}, {}, {}
    for k in ks:
        s = knn_vote(sims[:, :k], nlab[:, :k], c, temperature)
        pred = np.argmax(s, axis=1)
        acc = {"top1": float(100.0 * np.mean(pred == data.test_y))}
        if c >= 5:
            acc["top5"] = float(100.0 * np.mean(_topk_correct(s, data.test_y, 5)))
        accuracy[k] = acc
        predictions[k] = pred.astype(np.int64)
        if keep_scores:
            scores[k] = s
    params = {
        "ks": ks,
        "temperature": float(temperature),
        "chunk_size": int(chunk_size),
        "num_train": int(n_train),
        "num_test": int(data.test.shape[0]),
        "dim": int(data.train.shape[1]),
        "num_classes": int(c),
        "index": "faiss.IndexFlatIP (exact) on L2-normalised float32",
    }
    return KNNResult(accuracy=accuracy, predictions=predictions, classes=data.classes, params=params, scores=scores)
