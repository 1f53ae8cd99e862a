"""Linear probes: the fast probe's model selection never sees the test split, its numbers match
a direct computation, and the paper-protocol probe keeps the encoder frozen, follows its lr
schedule and learns."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from metaug_features import EncoderConfig, EvaluationInputError, build_encoder
from metaug_features.evaluation import fast_linear_probe, select_regularization
from metaug_features.evaluation.paper_probe import (
    PaperProbeConfig,
    augment_batch,
    paper_linear_probe,
    sample_crop_box,
)


def _split_files(root: Path, split: str):
    files = sorted((root / split).glob("*/*.jpg"))
    return files, [f.parent.name for f in files]


@pytest.fixture(scope="module")
def tiny_encoder():
    torch.manual_seed(0)
    return build_encoder(EncoderConfig(architecture="alexnet32", width=0.25, views=("l", "ab")))


@pytest.fixture(scope="module")
def cifar_pixels(cifar_images, tiny_encoder):
    """uint8 images [N, 3, 32, 32] and labels of the train and test slices."""
    out = {}
    for split in ("train", "test"):
        files, y = _split_files(cifar_images, split)
        out[split] = (tiny_encoder.preprocess.load_batch(files), y)
    return out


@pytest.fixture(scope="module")
def real_features(cifar_pixels, tiny_encoder):
    feats = {}
    for split, (imgs, y) in cifar_pixels.items():
        feats[split] = (tiny_encoder.extract(list(imgs), layer="conv").numpy(), y)
    return feats


class _Recorder:
    """Wraps a class's ``fit`` to record every X it is fitted on."""

    def __init__(self, monkeypatch, cls):
        self.calls: list[np.ndarray] = []
        original = cls.fit
        recorder = self

        def fit(self_, X, *a, **kw):
            recorder.calls.append(np.array(X, copy=True))
            return original(self_, X, *a, **kw)

        monkeypatch.setattr(cls, "fit", fit)


def _row_set(x: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in np.ascontiguousarray(x, dtype=np.float32)}


def test_model_selection_never_sees_the_test_split(monkeypatch, real_features):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    (xtr, ytr), (xte, yte) = real_features["train"], real_features["test"]
    scaler_fits = _Recorder(monkeypatch, StandardScaler)
    model_fits = _Recorder(monkeypatch, LogisticRegression)
    cs = (0.01, 0.1, 1.0)
    res = fast_linear_probe(xtr, ytr, xte, yte, cs=cs, val_fraction=0.2, seed=3)
    # len(cs) selection fits + the final refit, nothing else.
    assert len(model_fits.calls) == len(cs) + 1
    test_rows = _row_set(xte)
    train_rows = _row_set(xtr)
    # No scaler and no model was ever fitted on a test row (raw rows for scalers; the models see
    # standardised rows, so compare their row count and that selection fits exclude held-out rows).
    for x in scaler_fits.calls:
        assert not (_row_set(x) & test_rows)
        assert _row_set(x) <= train_rows
    sel_sizes = {len(x) for x in model_fits.calls[:-1]}
    assert sel_sizes == {len(xtr) - math.ceil(0.2 * len(xtr))}
    assert len(model_fits.calls[-1]) == len(xtr)  # refit on the whole train split
    # Scalers of the selection were fitted on the fit part only (held-out rows excluded).
    for x in scaler_fits.calls[:-1]:
        assert len(x) == len(xtr) - math.ceil(0.2 * len(xtr))
    # The choice depends on train only: replacing the test split changes neither C nor the
    # held-out accuracies.
    rng = np.random.default_rng(0)
    other = fast_linear_probe(xtr, ytr, rng.normal(size=xte.shape).astype(np.float32),
                              list(rng.permutation(yte)), cs=cs, val_fraction=0.2, seed=3)
    assert other.selection == res.selection
    direct = select_regularization(xtr, np.unique(ytr, return_inverse=True)[1], cs=cs, val_fraction=0.2, seed=3)
    assert direct == res.selection


def test_probe_numbers_match_a_direct_fit(real_features):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    (xtr, ytr), (xte, yte) = real_features["train"], real_features["test"]
    res = fast_linear_probe(xtr, ytr, xte, yte, cs=(0.01, 0.1), seed=0)
    classes = sorted(set(ytr))
    y_tr = np.array([classes.index(c) for c in ytr])
    y_te = np.array([classes.index(c) for c in yte])
    from threadpoolctl import threadpool_limits

    sc = StandardScaler().fit(xtr)
    with threadpool_limits(1):
        m = LogisticRegression(C=res.selection.best_c, max_iter=300, random_state=0).fit(sc.transform(xtr), y_tr)
    proba = m.predict_proba(sc.transform(xte))
    assert res.accuracy["top1"] == pytest.approx(100 * np.mean(proba.argmax(1) == y_te), abs=1.0)
    top5 = np.argsort(-proba, 1)[:, :5]
    assert res.accuracy["top5"] == pytest.approx(100 * np.mean((top5 == y_te[:, None]).any(1)), abs=1.0)
    # Random-init conv features of 200 train images still carry class information.
    assert res.accuracy["top1"] > 15.0
    assert res.params["chosen_c"] == res.selection.best_c
    assert "not the paper" in res.protocol


def test_selection_is_seeded_and_stratified(real_features):
    (xtr, ytr) = real_features["train"]
    y = np.unique(ytr, return_inverse=True)[1]
    a = select_regularization(xtr, y, cs=(0.01, 1.0), val_fraction=0.1, seed=5)
    b = select_regularization(xtr, y, cs=(0.01, 1.0), val_fraction=0.1, seed=5)
    assert a == b
    assert a.num_val == 20 and a.num_fit == 180
    assert a.best_c == min(c for c, v in a.val_accuracy.items() if v == max(a.val_accuracy.values()))


def test_selection_subsample_caps_fit_rows(real_features):
    (xtr, ytr) = real_features["train"]
    y = np.unique(ytr, return_inverse=True)[1]
    s = select_regularization(xtr, y, cs=(0.01, 1.0), val_fraction=0.1, selection_max_train=50, seed=0)
    assert s.num_fit == 50  # 180 fit rows, 18 per class -> 5 per class


def test_probe_bad_inputs(real_features):
    (xtr, ytr), (xte, yte) = real_features["train"], real_features["test"]
    with pytest.raises(EvaluationInputError, match="too small"):
        fast_linear_probe(xtr[::10], ytr[::10], xte, yte, cs=(0.1, 1.0))  # 2 rows per class
    with pytest.raises(EvaluationInputError, match="only one class"):
        fast_linear_probe(xtr, ["a"] * len(xtr), xte, ["a"] * len(xte))
    with pytest.raises(EvaluationInputError, match="NaN or inf"):
        bad = xte.copy()
        bad[4, 2] = np.nan
        fast_linear_probe(xtr, ytr, bad, yte)
    with pytest.raises(EvaluationInputError, match="C grid"):
        fast_linear_probe(xtr, ytr, xte, yte, cs=(0.1, -1.0))
    with pytest.raises(EvaluationInputError, match="val_fraction"):
        fast_linear_probe(xtr, ytr, xte, yte, val_fraction=1.5)


# ---------------------------------------------------------------- paper protocol (docs/METHODS.md section 7)


def test_crop_boxes_respect_scale_and_ratio():
    gen = torch.Generator().manual_seed(0)
    for _ in range(500):
        top, left, h, w = sample_crop_box(32, 32, (0.2, 1.0), (3 / 4, 4 / 3), gen)
        assert 0 <= top and top + h <= 32 and 0 <= left and left + w <= 32
        # Rounding to whole pixels moves area and ratio a little off the sampled values.
        assert 0.2 * 1024 * 0.85 <= h * w <= 1024
        assert 3 / 4 * 0.85 <= w / h <= 4 / 3 / 0.85


def test_flip_only_augmentation_returns_image_or_mirror(cifar_pixels):
    imgs = cifar_pixels["train"][0][:16]
    out = augment_batch(imgs, 32, (1.0, 1.0), (1.0, 1.0), True, torch.Generator().manual_seed(1))
    flipped = 0
    for a, b in zip(out, imgs):
        if torch.equal(a, b):
            continue
        assert torch.equal(a, b.flip(-1))
        flipped += 1
    assert 0 < flipped < 16


def test_paper_probe_keeps_encoder_frozen_follows_schedule_and_learns(cifar_pixels, tiny_encoder):
    (tr, ytr), (te, yte) = cifar_pixels["train"], cifar_pixels["test"]
    tiny_encoder.train()
    before = {k: v.clone() for k, v in tiny_encoder.state_dict().items()}
    cfg = PaperProbeConfig(epochs=4, batch_size=50, milestones=(2, 3), gamma=0.2, average_last=2, seeds=(0,))
    res = paper_linear_probe(tiny_encoder, tr, ytr, te, yte, layer="conv", config=cfg)
    # Frozen: weights and BN running statistics untouched, previous (train) mode restored.
    after = tiny_encoder.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert tiny_encoder.training
    hist = res.history[0]
    assert [h["lr"] for h in hist] == pytest.approx([0.1, 0.1, 0.02, 0.004])
    assert [("test_top1" in h) for h in hist] == [False, False, True, True]
    assert res.per_seed[0] == pytest.approx(np.mean([hist[2]["test_top1"], hist[3]["test_top1"]]))
    assert res.mean == res.per_seed[0] and res.ci95 is None
    # The linear layer learns on real images: the training loss falls below its start.
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert "REDUCED budget" in res.protocol
    entry = res.report_entry()
    assert entry["metrics"]["top1_mean"] == res.mean
    assert entry["history"] == {"0": hist}   # the report keeps the learning curve (JSON keys are strings)


def test_paper_probe_seeds_interval_and_determinism(cifar_pixels, tiny_encoder):
    (tr, ytr), (te, yte) = cifar_pixels["train"], cifar_pixels["test"]
    tr, ytr = tr[::2], ytr[::2]
    cfg = PaperProbeConfig(epochs=1, batch_size=64, seeds=(0, 1, 2))
    a = paper_linear_probe(tiny_encoder, tr, ytr, te, yte, config=cfg)
    b = paper_linear_probe(tiny_encoder, tr, ytr, te, yte, config=cfg)
    assert a.per_seed == b.per_seed and a.history == b.history
    vals = np.array(list(a.per_seed.values()))
    from scipy.stats import t

    assert a.ci95 == pytest.approx(t.ppf(0.975, 2) * vals.std(ddof=1) / np.sqrt(3))
    assert a.mean == pytest.approx(vals.mean())


def test_paper_probe_defaults_are_the_paper_protocol():
    cfg = PaperProbeConfig()
    assert (cfg.epochs, cfg.lr, cfg.momentum, cfg.batch_size, cfg.milestones, cfg.gamma, cfg.crop_scale) == (
        60, 0.1, 0.9, 256, (30, 40, 50), 0.2, (0.2, 1.0))
    assert cfg.is_paper_budget and not PaperProbeConfig(epochs=5).is_paper_budget


def test_paper_probe_bad_inputs(cifar_pixels, tiny_encoder):
    (tr, ytr), (te, yte) = cifar_pixels["train"], cifar_pixels["test"]
    with pytest.raises(EvaluationInputError, match="labels for"):
        paper_linear_probe(tiny_encoder, tr, ytr[:-1], te, yte, config=PaperProbeConfig(epochs=1))
    with pytest.raises(EvaluationInputError, match="uint8"):
        paper_linear_probe(tiny_encoder, tr.float(), ytr, te, yte, config=PaperProbeConfig(epochs=1))
    with pytest.raises(EvaluationInputError, match="average_last"):
        paper_linear_probe(tiny_encoder, tr, ytr, te, yte, config=PaperProbeConfig(epochs=1, average_last=2))


def test_single_c_skips_selection(real_features):
    (xtr, ytr), (xte, yte) = real_features["train"], real_features["test"]
    res = fast_linear_probe(xtr[::10], ytr[::10], xte, yte, cs=(0.1,))  # 2 rows per class: no split needed
    assert res.selection.best_c == 0.1 and res.selection.val_accuracy == {} and res.selection.num_val == 0


def test_paper_probe_decodes_files_in_the_decode_pool_and_names_bad_ones(cifar_images, tiny_encoder, tmp_path):
    """Files go through the library's decode pool (pixels equal to the in-process decoder's);
    a file that does not decode is an error naming it, not a silently shifted label list."""
    files = sorted((cifar_images / "test" / "cat").glob("*.jpg"))[:6]
    from metaug_features.evaluation.paper_probe import _as_uint8_images

    pooled = _as_uint8_images([str(f) for f in files], tiny_encoder, "train images")
    assert torch.equal(pooled, tiny_encoder.preprocess.load_batch([str(f) for f in files]))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a JPEG")
    with pytest.raises(EvaluationInputError, match=r"train images: 1 of 7 .*broken\.jpg: not a readable image"):
        paper_linear_probe(tiny_encoder, [str(f) for f in files] + [str(broken)], [0] * 7, files, [0] * 6,
                           config=PaperProbeConfig(epochs=1))
