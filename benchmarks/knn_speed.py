"""k-NN speed: faiss (the evaluator) against scikit-learn brute force, in the same run.

Both sides do the whole weighted k-NN evaluation of 10,000 test against 50,000 train features:
L2 normalisation, the top-200 cosine neighbours, the exp(sim / T) votes for k = 200 and k = 20.
Only the neighbour search differs:

- faiss: ``metaug_features.evaluation.knn_evaluate`` (exact ``IndexFlatIP``, chunked queries);
- sklearn: ``NearestNeighbors(algorithm="brute", metric="cosine").kneighbors`` (chunked
  pairwise distances + partial sort), then the same vote function.

The two must predict the same labels (mismatches are counted and printed). Features: the
random-init floor's conv features (``python -m metaug_release evaluate --random-init 1.0 -o /tmp/metaug-floor`` writes them to
/tmp/metaug-floor; real CIFAR-10 features, dimension 3,456), or ``--synthetic`` Gaussian features
of the same shape when those folders are absent.

Usage::

    python benchmarks/knn_speed.py --train /tmp/metaug-floor/train_conv --test /tmp/metaug-floor/test_conv \
        --json benchmarks/knn_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def sklearn_knn(train, train_y, test, test_y, ks, temperature, num_classes, n_jobs=None):
    """The evaluator's protocol with sklearn's brute-force search in place of faiss."""
    from sklearn.neighbors import NearestNeighbors

    from metaug_features.evaluation.checks import l2_normalize
    from metaug_features.evaluation.knn import knn_vote

    ztr, zte = l2_normalize(train), l2_normalize(test)
    nn = NearestNeighbors(n_neighbors=max(ks), algorithm="brute", metric="cosine", n_jobs=n_jobs).fit(ztr)
    dist, idx = nn.kneighbors(zte)
    sims = 1.0 - dist
    preds, acc = {}, {}
    for k in ks:
        s = knn_vote(sims[:, :k], train_y[idx[:, :k]], num_classes, temperature)
        preds[k] = s.argmax(1)
        acc[k] = float(100.0 * np.mean(preds[k] == test_y))
    return preds, acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, default=Path("/tmp/metaug-floor/train_conv"))
    ap.add_argument("--test", type=Path, default=Path("/tmp/metaug-floor/test_conv"))
    ap.add_argument("--synthetic", action="store_true", help="Gaussian features 50,000 / 10,000 x 3,456 instead")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from metaug_features.evaluation import knn_evaluate
    from metaug_features.evaluation.checks import encode_splits
    from metaug_features.feature_files import read_feature_set

    if args.synthetic or not (args.train / "extract.json").is_file():
        rng = np.random.default_rng(0)
        train = rng.normal(size=(50_000, 3456)).astype(np.float32)
        test = rng.normal(size=(10_000, 3456)).astype(np.float32)
        train_y, test_y = rng.integers(0, 10, 50_000), rng.integers(0, 10, 10_000)
        source = "synthetic Gaussian"
    else:
        tr, te = read_feature_set(args.train), read_feature_set(args.test)
        train, test, train_y, test_y = tr.features, te.features, tr.labels, te.labels
        source = f"{args.train} / {args.test}"
    ks, temperature = (200, 20), 0.07
    data = encode_splits(train, train_y, test, test_y)
    out = {"features": source, "train": list(train.shape), "test": list(test.shape), "ks": list(ks),
           "temperature": temperature, "cpu_count": os.cpu_count(), "load_avg_before": os.getloadavg()}

    t0 = time.perf_counter()
    res = knn_evaluate(train, train_y, test, test_y, ks=ks, temperature=temperature)
    out["faiss_seconds"] = round(time.perf_counter() - t0, 2)
    out["faiss_accuracy"] = {k: v["top1"] for k, v in res.accuracy.items()}
    print(f"faiss:   {out['faiss_seconds']:.1f} s  {out['faiss_accuracy']}", flush=True)

    t0 = time.perf_counter()
    preds, acc = sklearn_knn(data.train, data.train_y, data.test, data.test_y, ks, temperature, data.num_classes)
    out["sklearn_seconds"] = round(time.perf_counter() - t0, 2)
    out["sklearn_accuracy"] = acc
    print(f"sklearn: {out['sklearn_seconds']:.1f} s  {acc}", flush=True)

    out["speedup_faiss_over_sklearn"] = round(out["sklearn_seconds"] / out["faiss_seconds"], 2)
    out["prediction_mismatches"] = {k: int(np.sum(preds[k] != res.predictions[k])) for k in ks}
    out["load_avg_after"] = os.getloadavg()
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
