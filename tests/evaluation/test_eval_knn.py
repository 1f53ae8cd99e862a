"""Weighted k-NN: faiss search + vote against a brute-force numpy transcription of the formula,
on real features of real CIFAR-10 images, and the documented errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaug_features import EncoderConfig, EvaluationInputError, build_encoder
from metaug_features.evaluation import knn_evaluate


def _split_files(root: Path, split: str) -> tuple[list[Path], list[str]]:
    files = sorted((root / split).glob("*/*.jpg"))
    return files, [f.parent.name for f in files]


@pytest.fixture(scope="module")
def real_features(cifar_images):
    """{kind: (train, train_labels, test, test_labels)} for two kinds of real features:
    'encoder' = conv features of a random-init tiny alexnet32, 'pixels' = 8x8 downsampled RGB."""
    tr_files, tr_y = _split_files(cifar_images, "train")
    te_files, te_y = _split_files(cifar_images, "test")
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(architecture="alexnet32", width=0.25, views=("l", "ab")))
    out = {
        "encoder": (enc.extract(tr_files, layer="conv").numpy(), tr_y, enc.extract(te_files, layer="conv").numpy(), te_y)
    }

    def pix(files):
        return np.stack([np.asarray(Image.open(f).convert("RGB").resize((8, 8), Image.BILINEAR), dtype=np.float32).ravel() / 255.0
                         for f in files])

    out["pixels"] = (pix(tr_files), tr_y, pix(te_files), te_y)
    return out


def reference_knn(train, train_y, test, k, temperature, classes):
    """Brute force, transcribed from the protocol: cosine similarity in float64, the k largest,
    score(c) = sum over those neighbours of class c of exp(sim / T), prediction = argmax."""
    tr = train.astype(np.float64)
    te = test.astype(np.float64)
    tr /= np.linalg.norm(tr, axis=1, keepdims=True)
    te /= np.linalg.norm(te, axis=1, keepdims=True)
    scores = np.zeros((te.shape[0], len(classes)))
    for q in range(te.shape[0]):
        sims = [float(np.dot(te[q], tr[i])) for i in range(tr.shape[0])]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        for i in order:
            scores[q, classes.index(train_y[i])] += np.exp(sims[i] / temperature)
    return scores


@pytest.mark.parametrize("kind", ["encoder", "pixels"])
@pytest.mark.parametrize("k,temperature", [(1, 0.07), (5, 0.07), (20, 0.07), (200, 0.07), (20, 0.5)])
def test_knn_matches_bruteforce_reference(real_features, kind, k, temperature):
    train, train_y, test, test_y = real_features[kind]
    res = knn_evaluate(train, train_y, test, test_y, ks=[k], temperature=temperature, keep_scores=True)
    classes = sorted(set(train_y))
    ref = reference_knn(train, train_y, test, k, temperature, classes)
    ref_pred = ref.argmax(1)
    # Identical predicted labels (a neighbour swap at the k-th place between float32 faiss and
    # the float64 reference would show up here; it does not happen on these features).
    np.testing.assert_array_equal(res.predictions[k], ref_pred)
    np.testing.assert_allclose(res.scores[k], ref, rtol=2e-4)
    y = np.array([classes.index(c) for c in test_y])
    assert res.accuracy[k]["top1"] == pytest.approx(100.0 * np.mean(ref_pred == y))
    top5 = np.argsort(-ref, axis=1, kind="stable")[:, :5]
    assert res.accuracy[k]["top5"] == pytest.approx(100.0 * np.mean((top5 == y[:, None]).any(1)))
    assert res.classes == classes


def test_encoder_features_are_above_chance(real_features):
    train, train_y, test, test_y = real_features["encoder"]
    res = knn_evaluate(train, train_y, test, test_y, ks=[20])
    assert res.accuracy[20]["top1"] > 15.0  # 10 classes: chance is 10%


def test_one_search_serves_every_k_and_chunking_changes_nothing(real_features):
    train, train_y, test, test_y = real_features["encoder"]
    both = knn_evaluate(train, train_y, test, test_y, ks=[200, 20], chunk_size=7, keep_scores=True)
    for k in (200, 20):
        alone = knn_evaluate(train, train_y, test, test_y, ks=[k], chunk_size=4096, keep_scores=True)
        np.testing.assert_array_equal(both.predictions[k], alone.predictions[k])
        np.testing.assert_allclose(both.scores[k], alone.scores[k], rtol=1e-6)
        assert both.accuracy[k] == alone.accuracy[k]


def test_feature_norms_do_not_matter(real_features):
    """Cosine similarity: rescaling rows by positive factors leaves every prediction unchanged."""
    train, train_y, test, test_y = real_features["pixels"]
    rng = np.random.default_rng(0)
    base = knn_evaluate(train, train_y, test, test_y, ks=[20])
    scaled = knn_evaluate(train * rng.uniform(0.1, 10, (len(train), 1)).astype(np.float32), train_y,
                          test * rng.uniform(0.1, 10, (len(test), 1)).astype(np.float32), test_y, ks=[20])
    np.testing.assert_array_equal(base.predictions[20], scaled.predictions[20])


def test_integer_labels_and_no_top5_below_five_classes():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    res = knn_evaluate(x, [0, 0, 1, 1], np.array([[1, 0.05], [0.02, 1]], np.float32), [0, 1], ks=[1, 3])
    assert res.accuracy[1] == {"top1": 100.0}
    # k=3: votes for the first query: two class-0 neighbours (sims ~1) beat one class-1 neighbour.
    assert res.accuracy[3] == {"top1": 100.0}


def _xy(n=30, d=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), [f"c{i % classes}" for i in range(n)]


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: a.update(train_y=a["train_y"][:-1]), r"labels for \d+ feature rows"),
        (lambda a: a["train"].__setitem__((3, 1), np.nan), "NaN or inf"),
        (lambda a: a["test"].__setitem__((0, 0), np.inf), "NaN or inf"),
        (lambda a: a.update(train_y=["same"] * len(a["train_y"])), "only one class"),
        (lambda a: a.update(ks=[31]), "larger than the train set"),
        (lambda a: a.update(train_y=a["train_y"][:5] + [""] + a["train_y"][6:]), "have no label"),
        (lambda a: a.update(test_y=None), "no labels given"),
        (lambda a: a.update(test=a["test"][:, :3]), "dimension 4 but test features 3"),
        (lambda a: a.update(test_y=["c0"] * 9 + ["zebra"]), "absent from the train set"),
        (lambda a: a.update(temperature=0.0), "temperature"),
        (lambda a: a.update(train=a["train"][0]), "2-D"),
    ],
)
def test_bad_input_gives_clear_error(mutate, match):
    train, train_y = _xy()
    test, test_y = _xy(10, seed=1)
    args = {"train": train, "train_y": train_y, "test": test, "test_y": test_y, "ks": [5], "temperature": 0.07}
    mutate(args)
    with pytest.raises(EvaluationInputError, match=match):
        knn_evaluate(args["train"], args["train_y"], args["test"], args["test_y"], ks=args["ks"],
                     temperature=args["temperature"])
