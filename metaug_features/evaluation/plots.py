"""Pictures of frozen features (matplotlib, PNG, no pyplot global state).

- :func:`plot_embedding`: 2-D t-SNE (or UMAP when ``umap-learn`` is installed and asked for)
  scatter of the features, one colour per label.
- :func:`pair_similarities` + :func:`plot_similarity_histogram`: the distribution of cosine
  similarities of positive pairs against negative pairs, the kind of picture the MetAug paper
  shows in its Figure 2. Two ways to say what a positive pair is:
  * paired arrays ``a``, ``b`` (row i of both = the same image, e.g. two views or two
    augmentations): positive = (a_i, b_i), negative = (a_i, b_j), j != i — instance level,
    what a contrastive loss sees;
  * one array with labels: positive = two different rows with the same label, negative = two
    rows with different labels — class level.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import EvaluationInputError
from .checks import check_features, check_labels, l2_normalize

__all__ = [
    "PlotConfig",
    "embedding_2d",
    "pair_similarities",
    "plot_embedding",
    "plot_similarity_histogram",
    "umap_available",
]


@dataclass(frozen=True)
class PlotConfig:
    """The pictures' settings: the one place their defaults are written (the functions below and
    ``metaug-eval plot`` / ``all`` read them from here).

    method: 2-D embedding, "tsne", "umap" (needs umap-learn) or "auto" (umap when installed).
    max_points: embed at most this many rows (seeded subsample; None = all, the CLI's 0).
    max_pairs: positive and negative pairs drawn for the similarity histogram (each).
    seed: seeds the subsample, the embedding and the pairs.
    """

    method: str = "tsne"
    max_points: int | None = 5000
    max_pairs: int = 200_000
    seed: int = 0


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def _subsample(n: int, max_points: int | None, seed: int) -> np.ndarray:
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def embedding_2d(
    features: np.ndarray, method: str = PlotConfig.method, seed: int = PlotConfig.seed, perplexity: float = 30.0,
    threads: int | None = 1,
) -> tuple[np.ndarray, str]:
    """2-D embedding of L2-normalised ``features`` [N, D] -> ([N, 2], method used).

    ``method``: "tsne" (sklearn, PCA init), "umap" (error if umap-learn is absent), or "auto"
    (UMAP when installed, else t-SNE). t-SNE's perplexity is capped at (N - 1) / 3 so that
    small sets work.

    ``threads`` caps OpenMP / BLAS threads (None = library default). Default 1: on the shared
    2-core machine a 150-point t-SNE took 30 s with the default threads and 0.9 s with one
    (spinning OpenMP workers on oversubscribed cores).
    """
    from threadpoolctl import threadpool_limits

    x = l2_normalize(check_features(features, "features"))
    n = x.shape[0]
    if n < 3:
        raise EvaluationInputError(f"a 2-D embedding needs at least 3 rows, got {n}")
    if method == "auto":
        method = "umap" if umap_available() else "tsne"
    if method == "umap":
        if not umap_available():
            raise EvaluationInputError("method 'umap' needs the umap-learn package; install it or use 'tsne'")
        import umap

        with threadpool_limits(limits=threads):
            return umap.UMAP(n_components=2, random_state=seed).fit_transform(x).astype(np.float32), "umap"
    if method != "tsne":
        raise EvaluationInputError(f"unknown embedding method {method!r}; use tsne, umap or auto")
    from sklearn.manifold import TSNE

    perp = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    with threadpool_limits(limits=threads):
        emb = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed, metric="euclidean").fit_transform(x)
    return emb.astype(np.float32), "tsne"


def _save_figure(fig, out_path: str | os.PathLike) -> Path:
    """Render a matplotlib Figure to PNG bytes and write them atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    return out


def plot_embedding(
    features: np.ndarray,
    labels: Sequence | np.ndarray,
    out_path: str | os.PathLike,
    method: str = PlotConfig.method,
    max_points: int | None = PlotConfig.max_points,
    seed: int = PlotConfig.seed,
    title: str | None = None,
    threads: int | None = 1,
) -> dict:
    """Scatter of a 2-D embedding coloured by label, written to ``out_path`` (PNG).

    At most ``max_points`` rows (seeded uniform subsample) are embedded: t-SNE costs O(N log N)
    per iteration and 5,000 points take well under a minute on 2 cores.

    Returns a dict with the method used, the number of points, and the path.
    """
    from matplotlib.figure import Figure

    x = check_features(features, "features")
    y = check_labels(labels, x.shape[0], "labels")
    keep = _subsample(x.shape[0], max_points, seed)
    emb, used = embedding_2d(x[keep], method=method, seed=seed, threads=threads)
    y = y[keep]
    classes = np.unique(y)
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    cmap = _colormap(len(classes))
    for i, c in enumerate(classes):
        m = y == c
        ax.scatter(emb[m, 0], emb[m, 1], s=4, color=cmap(i), label=str(c), alpha=0.8, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"{ {'tsne': 't-SNE', 'umap': 'UMAP'}[used]} of {len(keep)} feature vectors")
    if len(classes) <= 30:
        ax.legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    out = _save_figure(fig, out_path)
    return {"method": used, "num_points": len(keep), "num_classes": len(classes), "path": str(out)}


def _colormap(n: int):
    from matplotlib import colormaps

    return colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"].resampled(max(n, 1))


def _pair_cos(za: np.ndarray, zb: np.ndarray, i: np.ndarray, j: np.ndarray, block: int = 8192) -> np.ndarray:
    """Cosines <za[i_p], zb[j_p]> of L2-normalised rows, in blocks of pairs so that memory stays
    at block x D floats instead of (number of pairs) x D."""
    out = np.empty(i.size, dtype=np.float64)
    for s in range(0, i.size, block):
        a = za[i[s : s + block]].astype(np.float64)
        b = zb[j[s : s + block]].astype(np.float64)
        out[s : s + block] = np.einsum("nd,nd->n", a, b)
    return out


def pair_similarities(
    a: np.ndarray,
    b: np.ndarray | None = None,
    labels: Sequence | np.ndarray | None = None,
    max_pairs: int = PlotConfig.max_pairs,
    seed: int = PlotConfig.seed,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of positive and of negative pairs (module docstring for the two modes).

    Args:
        a: [N, D] features.
        b: [N, D] features of the same N images under another view, or None.
        labels: N labels (class mode; only when ``b`` is None).
        max_pairs: when the number of candidate pairs exceeds this, a seeded uniform sample of
            this many pairs is used (negatives vastly outnumber positives; in paired mode all N
            positives are always kept).
        seed: seeds the sampling.

    Returns:
        (positives, negatives): float64 1-D arrays of cosine similarities.
    """
    za = l2_normalize(check_features(a, "features"))
    n = za.shape[0]
    rng = np.random.default_rng(seed)
    if b is not None:
        if labels is not None:
            raise EvaluationInputError("give either a second view b (instance pairs) or labels (class pairs), not both")
        zb = l2_normalize(check_features(b, "second-view features"))
        if zb.shape != za.shape:
            raise EvaluationInputError(f"paired views must have the same shape, got {za.shape} and {zb.shape}")
        if n < 2:
            raise EvaluationInputError("paired mode needs at least 2 rows to form negative pairs")
        pos = np.einsum("nd,nd->n", za.astype(np.float64), zb.astype(np.float64))
        total = n * (n - 1)
        if total <= max_pairs:
            i, j = np.nonzero(~np.eye(n, dtype=bool))
        else:
            i = rng.integers(0, n, size=max_pairs)
            j = (i + rng.integers(1, n, size=max_pairs)) % n  # uniform over j != i
        return pos, _pair_cos(za, zb, i, j)
    if labels is None:
        raise EvaluationInputError("give a second view b or labels to define positive pairs")
    y = check_labels(labels, n, "labels")
    if n < 2:
        raise EvaluationInputError("class mode needs at least 2 rows")
    total = n * (n - 1) // 2
    if total <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        i = rng.integers(0, n, size=max_pairs)
        j = (i + rng.integers(1, n, size=max_pairs)) % n
    sims = _pair_cos(za, za, i, j)
    same = y[i] == y[j]
    return sims[same], sims[~same]


def plot_similarity_histogram(
    positives: np.ndarray,
    negatives: np.ndarray,
    out_path: str | os.PathLike,
    bins: int = 100,
    title: str | None = None,
    labels: tuple[str, str] = ("positive pairs", "negative pairs"),
) -> dict:
    """Overlaid density histograms of positive- and negative-pair cosine similarities (PNG).

    Returns summary numbers (means, counts, and the overlap coefficient sum_b min(p_b, q_b) of
    the two normalised histograms: 0 = perfectly separated, 1 = identical).
    """
    from matplotlib.figure import Figure

    pos, neg = np.asarray(positives, dtype=np.float64), np.asarray(negatives, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise EvaluationInputError(
            f"need both positive and negative pairs, got {pos.size} and {neg.size} (all rows in one class?)"
        )
    # Bins over the range the data occupies: random-init or collapsed features put every cosine
    # in a narrow band (e.g. 0.75-1.0), which a fixed [-1, 1] axis would squash into a few bins.
    lo, hi = float(min(pos.min(), neg.min())), float(max(pos.max(), neg.max()))
    if hi - lo < 1e-6:
        lo, hi = lo - 1e-3, hi + 1e-3
    edges = np.linspace(lo, hi, bins + 1)
    hp, _ = np.histogram(pos, bins=edges)
    hn, _ = np.histogram(neg, bins=edges)
    overlap = float(np.minimum(hp / hp.sum(), hn / hn.sum()).sum())
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.hist(pos, bins=edges, density=True, alpha=0.55, color="tab:blue", label=f"{labels[0]} (n={pos.size})")
    ax.hist(neg, bins=edges, density=True, alpha=0.55, color="tab:red", label=f"{labels[1]} (n={neg.size})")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title or "Similarity of positive vs negative pairs")
    ax.legend(frameon=False)
    out = _save_figure(fig, out_path)
    return {
        "path": str(out),
        "num_positive": int(pos.size),
        "num_negative": int(neg.size),
        "mean_positive": float(pos.mean()),
        "mean_negative": float(neg.mean()),
        "overlap": overlap,
    }
