"""Plots: the pair similarities behind the Figure-2 histogram against naive loops, and PNG
files that are real images."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from metaug_features import EvaluationInputError
from metaug_features.evaluation import (
    pair_similarities,
    plot_embedding,
    plot_similarity_histogram,
)
from metaug_features.evaluation.plots import umap_available


def _cos(u, v):
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def test_paired_mode_matches_naive_loop():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 5)).astype(np.float32)
    b = (a + 0.3 * rng.normal(size=a.shape)).astype(np.float32)
    pos, neg = pair_similarities(a, b, max_pairs=10_000)
    np.testing.assert_allclose(pos, [_cos(a[i], b[i]) for i in range(7)], rtol=1e-5)
    expected = sorted(_cos(a[i], b[j]) for i in range(7) for j in range(7) if i != j)
    np.testing.assert_allclose(sorted(neg), expected, rtol=1e-5, atol=1e-6)


def test_class_mode_matches_naive_loop():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 4)).astype(np.float32)
    y = ["a", "b", "c"] * 3
    pos, neg = pair_similarities(x, labels=y, max_pairs=10_000)
    same = sorted(_cos(x[i], x[j]) for i, j in itertools.combinations(range(9), 2) if y[i] == y[j])
    diff = sorted(_cos(x[i], x[j]) for i, j in itertools.combinations(range(9), 2) if y[i] != y[j])
    np.testing.assert_allclose(sorted(pos), same, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sorted(neg), diff, rtol=1e-5, atol=1e-6)


def test_sampled_pairs_never_mix_positives_into_negatives():
    # One-hot rows: a row and its twin have cosine 1, any two different rows 0. With sampling
    # (60 * 59 pairs > max_pairs) every sampled negative must still be a different image.
    a = np.eye(60, dtype=np.float32)
    pos, neg = pair_similarities(a, a.copy(), max_pairs=500, seed=3)
    assert pos.size == 60 and np.allclose(pos, 1.0)
    assert neg.size == 500 and np.allclose(neg, 0.0)
    pos, neg = pair_similarities(a, labels=np.arange(60) % 2, max_pairs=500, seed=3)
    assert pos.size + neg.size == 500 and np.allclose(np.concatenate([pos, neg]), 0.0)


def test_histogram_png_and_overlap(tmp_path):
    rng = np.random.default_rng(0)
    pos, neg = rng.uniform(0.8, 1.0, 300), rng.uniform(0.0, 0.3, 3000)
    info = plot_similarity_histogram(pos, neg, tmp_path / "h.png", bins=50)
    with Image.open(tmp_path / "h.png") as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100
    assert info["overlap"] == 0.0  # disjoint ranges
    assert info["mean_positive"] == pytest.approx(pos.mean())
    same = plot_similarity_histogram(pos, pos, tmp_path / "s.png", bins=50)
    assert same["overlap"] == pytest.approx(1.0)
    with pytest.raises(EvaluationInputError, match="both positive and negative"):
        plot_similarity_histogram(pos, np.array([]), tmp_path / "x.png")


def test_embedding_scatter_png(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 5
    x = np.concatenate([c + rng.normal(size=(40, 16)) for c in centres]).astype(np.float32)
    y = np.repeat(["cat", "dog", "ship"], 40)
    info = plot_embedding(x, y, tmp_path / "sub" / "emb.png", method="tsne", max_points=90, seed=0)
    assert info["method"] == "tsne" and info["num_points"] == 90 and info["num_classes"] == 3
    with Image.open(tmp_path / "sub" / "emb.png") as im:
        assert im.format == "PNG"
        colours = {c for _, c in im.convert("RGB").getcolors(1 << 20)}
    assert len(colours) > 3  # three label colours drawn, not an empty canvas
    with pytest.raises(EvaluationInputError, match="labels for"):
        plot_embedding(x, y[:-1], tmp_path / "e.png")


@pytest.mark.skipif(umap_available(), reason="umap-learn is installed here")
def test_umap_without_package_is_a_clear_error(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(EvaluationInputError, match="umap-learn"):
        plot_embedding(x, [0, 1] * 10, tmp_path / "e.png", method="umap")
