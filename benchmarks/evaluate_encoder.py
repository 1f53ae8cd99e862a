"""Evaluate one encoder on CIFAR-10: weighted k-NN, the fast linear probe and k-means, on the
``conv`` and ``fc`` features of the 10,000 test images (train split = k-NN memory / probe data).

This is the evaluation behind the release cards and ``benchmarks/RESULTS.md``. It runs the
library's own pieces end to end, in one process, so that the numbers of a trained model, its
CMC baseline and the random-init floor come from exactly the same code:

1. Decode each split once with the encoder's own eval preprocessing (``Preprocessor.load_batch``,
   the path ``metaug-extract`` uses).
2. One forward pass per batch gives both layers: ``fc`` is computed and ``conv`` (conv5
   flattened, the input of fc6) is captured on the way by forward pre-hooks. The first batch is
   checked bit-exactly against ``encoder(x, "conv")``.
3. The features are written as metaug-extract feature folders (``write_feature_set``), so
   ``metaug-eval`` can re-run any number from them.
4. ``knn_evaluate`` (k = 200 and 20, T = 0.07), ``fast_linear_probe`` (defaults: C chosen on a
   10% held-out part of train) and ``cluster_evaluate`` (k-means on the test split, 5 seeded
   restarts; NMI, ARI, Hungarian accuracy, all in percent: keys ``nmi_percent``,
   ``ari_percent``, ``accuracy``; records written before that unit rule, e.g.
   ``benchmarks/campaign/leg*.json``, hold NMI and ARI as fractions under ``nmi`` / ``ari``).

Usage::

    python benchmarks/evaluate_encoder.py --model runs/cifar10-release-metaug/full/export \\
        --data /tmp/cifar/cifar10 --out /tmp/eval-metaug --json benchmarks/release/metaug.json
    python benchmarks/evaluate_encoder.py --random-init 0.5 ...    # the random-init floor

``--data`` is a folder with ``train/<class>/*.jpg`` and ``test/<class>/*.jpg`` (the extracted
``../shared/data/cifar10-jpeg.tar.gz``). ``--per-class-train N --per-class-test M`` keeps the
first files of every class for a quick, documented subset run.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAYERS = ("conv", "fc")


def list_split(root: Path, split: str, per_class: int | None = None) -> tuple[list[Path], list[str], list[str]]:
    """Sorted ``root/split/<class>/*.jpg`` files, their relative paths and class labels; the
    first ``per_class`` files of every class when given."""
    files = sorted((root / split).glob("*/*.jpg"))
    if per_class is not None:
        seen: dict[str, int] = {}
        kept = []
        for f in files:
            seen[f.parent.name] = seen.get(f.parent.name, 0) + 1
            if seen[f.parent.name] <= per_class:
                kept.append(f)
        files = kept
    if not files:
        raise SystemExit(f"no JPEG files under {root / split}/<class>/")
    rel = [f.relative_to(root / split).as_posix() for f in files]
    return files, rel, [f.parent.name for f in files]


@torch.inference_mode()
def extract_layers(enc, files: list[Path], layers: tuple[str, ...], batch_size: int = 256,
                   quiet: bool = False) -> dict[str, np.ndarray]:
    """{layer: float32 [N, feature_dim(layer)]} for ``files``, one encoder pass per batch.

    For ("conv", "fc") on an AlexNet the conv features are captured by pre-hooks on every half's
    fc6 while ``fc`` is computed; any other request runs ``enc(x, layer)`` per layer."""
    from tqdm.auto import tqdm

    enc.eval()
    hooked = set(layers) == {"conv", "fc"} and all(hasattr(h, "fc6") for h in enc.halves.values())
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        half.fc6.register_forward_pre_hook(lambda mod, args, v=v: captured.__setitem__(v, args[0].clone()))
        for v, half in enc.halves.items()
    ] if hooked else []
    out = {layer: np.empty((len(files), enc.feature_dim(layer)), dtype=np.float32) for layer in layers}
    try:
        for start in tqdm(range(0, len(files), batch_size), disable=quiet, desc="extract", unit="batch"):
            pixels = enc.preprocess.load_batch(files[start : start + batch_size])
            x = enc.preprocess.to_input(pixels)
            if hooked:
                feats = {"fc": enc(x, "fc")}
                feats["conv"] = torch.cat([captured[v] for v in enc.config.views], dim=1)
                if start == 0:  # the hook captures exactly the documented conv feature
                    torch.testing.assert_close(feats["conv"], enc(x, "conv"), rtol=0, atol=0)
            else:
                feats = {layer: enc(x, layer) for layer in layers}
            for layer in layers:
                out[layer][start : start + len(pixels)] = feats[layer].numpy()
    finally:
        for h in hooks:
            h.remove()
    return out


def evaluate_layer(tr, te, probe: bool = True, cluster: bool = True) -> dict[str, Any]:
    """k-NN, fast probe and k-means of one layer's train/test FeatureSets (percentages)."""
    from metaug_features.evaluation import cluster_evaluate, fast_linear_probe, knn_evaluate

    entry: dict[str, Any] = {"dim": int(tr.features.shape[1]), "num_train": len(tr.labels), "num_test": len(te.labels)}
    t0 = time.perf_counter()
    knn = knn_evaluate(tr.features, tr.labels, te.features, te.labels, ks=(200, 20), temperature=0.07)
    entry["knn"] = {f"k{k}": v for k, v in knn.accuracy.items()}
    entry["knn_params"] = knn.params
    entry["knn_seconds"] = round(time.perf_counter() - t0, 1)
    if probe:
        t0 = time.perf_counter()
        p = fast_linear_probe(tr.features, tr.labels, te.features, te.labels)
        entry["probe"] = dict(p.accuracy, chosen_c=p.selection.best_c,
                              val_accuracy_per_c={str(c): a for c, a in p.selection.val_accuracy.items()},
                              converged=p.final_converged, params=p.params)
        entry["probe_seconds"] = round(time.perf_counter() - t0, 1)
    if cluster:
        t0 = time.perf_counter()
        c = cluster_evaluate(te.features, te.labels, restarts=5, seed=0)
        entry["kmeans"] = dict(c.metrics, params=c.params)
        entry["kmeans_seconds"] = round(time.perf_counter() - t0, 1)
    return entry


def load_model(args) -> tuple[Any, dict[str, Any]]:
    """The encoder to evaluate and a description of it for the JSON."""
    from metaug_features import EncoderConfig, build_encoder, load_encoder
    from metaug_features.feature_files import sha256_file

    if args.random_init is not None:
        torch.manual_seed(args.seed)
        cfg = EncoderConfig(architecture="alexnet32", width=args.random_init, views=("l", "ab", "ori"))
        return build_encoder(cfg).eval(), {"architecture": "alexnet32", "width": args.random_init,
                                           "views": ["l", "ab", "ori"], "init": f"random, torch.manual_seed({args.seed})"}
    enc = load_encoder(args.model, device="cpu").eval()
    desc: dict[str, Any] = {"model": str(args.model), "architecture": enc.config.architecture,
                            "width": enc.config.width, "views": list(enc.config.views),
                            "provenance": dict(enc.config.provenance or {})}
    weights = Path(args.model) / "model.safetensors"
    if weights.is_file():
        desc["weights_sha256"] = sha256_file(weights)
    return enc, desc


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model folder, alias or Hub id")
    src.add_argument("--random-init", type=float, metavar="WIDTH", help="an untrained alexnet32 (l, ab, ori) of this width")
    ap.add_argument("--seed", type=int, default=0, help="torch seed of --random-init")
    ap.add_argument("--data", type=Path, default=Path("/tmp/cifar/cifar10"), help="cifar10 folder with train/ and test/")
    ap.add_argument("--out", type=Path, required=True, help="feature folders go here")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--layers", default="conv,fc", help="comma-separated feature layers")
    ap.add_argument("--per-class-train", type=int, default=None, help="subset: first N train images per class")
    ap.add_argument("--per-class-test", type=int, default=None, help="subset: first M test images per class")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is best when other jobs share the two cores)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--no-probe", action="store_true", help="skip the linear probe")
    ap.add_argument("--no-cluster", action="store_true", help="skip k-means")
    ap.add_argument("--reuse", action="store_true", help="skip extraction when the feature folders exist")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    from metaug_features.feature_files import FeatureSet, read_feature_set, write_feature_set

    torch.set_num_threads(args.threads)
    layers = tuple(x for x in args.layers.split(",") if x)
    enc, desc = load_model(args)
    result: dict[str, Any] = {"encoder": desc, "data": str(args.data), "torch_threads": torch.get_num_threads(),
                              "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
                              "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    label = desc.get("model") or f"alexnet32 width {args.random_init} l,ab,ori random init seed {args.seed}"
    sets: dict[str, FeatureSet] = {}
    for split, limit in (("train", args.per_class_train), ("test", args.per_class_test)):
        folders = {layer: args.out / f"{split}_{layer}" for layer in layers}
        if args.reuse and all((f / "extract.json").is_file() for f in folders.values()):
            for layer, f in folders.items():
                sets[f"{split}_{layer}"] = read_feature_set(f)
            continue
        files, rel, labels = list_split(args.data, split, limit)
        t0 = time.perf_counter()
        feats = extract_layers(enc, files, layers, args.batch_size, args.quiet)
        secs = time.perf_counter() - t0
        result[f"extract_{split}"] = {"images": len(files), "seconds": round(secs, 1), "img_per_s": round(len(files) / secs, 1)}
        for layer in layers:
            fs = FeatureSet(feats[layer], rel, labels, meta={"model": label, "layer": layer})
            write_feature_set(folders[layer], fs)
            sets[f"{split}_{layer}"] = fs
        print(f"[eval] extracted {split}: {len(files)} images in {secs:.0f} s", flush=True)

    for layer in layers:
        entry = evaluate_layer(sets[f"train_{layer}"], sets[f"test_{layer}"], probe=not args.no_probe,
                               cluster=not args.no_cluster)
        print(f"[eval] {layer}: k-NN {entry['knn']}; probe {entry.get('probe', {}).get('top1')}; "
              f"k-means {entry.get('kmeans', {})}", flush=True)
        result[layer] = entry
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    if not args.quiet:
        print(text)
    return result


if __name__ == "__main__":
    main()
