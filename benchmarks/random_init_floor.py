"""The random-init floor: k-NN and fast linear probe on CIFAR-10 features of an untrained encoder.

Every trained model must beat these numbers (SPEC section 10 reports a random-init k-NN of
~42% for conv features of a narrower L/ab encoder; a trained model below its own floor is
broken or still in the dip of the first epochs).

Steps:
1. Decode the CIFAR-10 JPEGs once (the encoder's own eval preprocessing, ``load_batch``).
2. ``torch.manual_seed(0)``; ``build_encoder(alexnet32, width 1.0, views l, ab, ori)`` in eval mode.
3. One forward per batch to the ``fc`` layer; the ``conv`` features (conv5 flattened, the input
   of fc6) are captured on the way with forward pre-hooks, so the convolutions run once for
   both layers. The first batch is checked against ``encoder(x, "conv")``.
4. Write four feature folders (``write_feature_set``, the metaug-extract format), then run the
   evaluators: weighted k-NN (k=200 and k=20, T=0.07) and the fast linear probe.

Usage (about 15-25 minutes on the shared 2-core machine, most of it the forward pass)::

    python benchmarks/random_init_floor.py --data /tmp/cifar/cifar10 --out /tmp/metaug-floor \
        --json benchmarks/random_init_floor.json

``--per-class-train N --per-class-test M`` keeps the first N / M files (sorted) of every class
(a documented subset, for a quick run); the result JSON records the counts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def list_split(root: Path, split: str, per_class: int | None = None) -> tuple[list[Path], list[str], list[str]]:
    files = sorted((root / split).glob("*/*.jpg"))
    if per_class is not None:
        seen: dict[str, int] = {}
        kept = []
        for f in files:
            seen[f.parent.name] = seen.get(f.parent.name, 0) + 1
            if seen[f.parent.name] <= per_class:
                kept.append(f)
        files = kept
    rel = [f.relative_to(root / split).as_posix() for f in files]
    return files, rel, [f.parent.name for f in files]


@torch.inference_mode()
def extract_conv_and_fc(enc, files: list[Path], batch_size: int = 256, quiet: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """[N, conv_dim] and [N, fc_dim] features of ``files`` in one pass of the encoder."""
    from tqdm.auto import tqdm

    captured: dict[str, torch.Tensor] = {}
    hooks = [
        half.fc6.register_forward_pre_hook(lambda mod, args, v=v: captured.__setitem__(v, args[0].clone()))
        for v, half in enc.halves.items()
    ]
    conv_out = np.empty((len(files), enc.feature_dim("conv")), dtype=np.float32)
    fc_out = np.empty((len(files), enc.feature_dim("fc")), dtype=np.float32)
    try:
        for start in tqdm(range(0, len(files), batch_size), disable=quiet, desc="extract", unit="batch"):
            pixels = enc.preprocess.load_batch(files[start : start + batch_size])
            x = enc.preprocess.to_input(pixels)
            fc = enc(x, "fc")
            conv = torch.cat([captured[v] for v in enc.config.views], dim=1)
            if start == 0:  # the hook captures exactly the documented conv feature
                torch.testing.assert_close(conv, enc(x, "conv"), rtol=0, atol=0)
            conv_out[start : start + len(pixels)] = conv.numpy()
            fc_out[start : start + len(pixels)] = fc.numpy()
    finally:
        for h in hooks:
            h.remove()
    return conv_out, fc_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("/tmp/cifar/cifar10"), help="cifar10 folder with train/ and test/")
    ap.add_argument("--out", type=Path, default=Path("/tmp/metaug-floor"), help="feature folders go here")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--per-class-train", type=int, default=None, help="subset: first N train images per class")
    ap.add_argument("--per-class-test", type=int, default=None, help="subset: first M test images per class")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for the forward pass (1 was faster than 2 on the busy shared machine)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--reuse", action="store_true", help="skip extraction when the feature folders exist")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    from metaug_features import EncoderConfig, build_encoder
    from metaug_features.evaluation import fast_linear_probe, knn_evaluate
    from metaug_features.feature_files import FeatureSet, read_feature_set, write_feature_set

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = EncoderConfig(architecture="alexnet32", width=1.0, views=("l", "ab", "ori"))
    enc = build_encoder(cfg).eval()
    result: dict = {"encoder": {"architecture": "alexnet32", "width": 1.0, "views": ["l", "ab", "ori"],
                                "init": "random, torch.manual_seed(0)", "torch_threads": torch.get_num_threads()}}
    sets: dict[str, FeatureSet] = {}
    for split, limit in (("train", args.per_class_train), ("test", args.per_class_test)):
        folders = {layer: args.out / f"{split}_{layer}" for layer in ("conv", "fc")}
        if args.reuse and all((f / "extract.json").is_file() for f in folders.values()):
            for layer, f in folders.items():
                sets[f"{split}_{layer}"] = read_feature_set(f)
            continue
        files, rel, labels = list_split(args.data, split, limit)
        t0 = time.perf_counter()
        conv, fc = extract_conv_and_fc(enc, files, args.batch_size, args.quiet)
        secs = time.perf_counter() - t0
        result[f"extract_{split}"] = {"images": len(files), "seconds": round(secs, 1), "img_per_s": round(len(files) / secs, 1)}
        for layer, feats in (("conv", conv), ("fc", fc)):
            fs = FeatureSet(feats, rel, labels, meta={"model": "alexnet32 width 1.0 l,ab,ori random init seed 0",
                                                      "layer": layer})
            write_feature_set(folders[layer], fs)
            sets[f"{split}_{layer}"] = fs
        print(f"[floor] extracted {split}: {len(files)} images in {secs:.0f} s", flush=True)

    for layer in ("conv", "fc"):
        tr, te = sets[f"train_{layer}"], sets[f"test_{layer}"]
        entry: dict = {"dim": int(tr.features.shape[1]), "num_train": len(tr.labels), "num_test": len(te.labels)}
        t0 = time.perf_counter()
        knn = knn_evaluate(tr.features, tr.labels, te.features, te.labels, ks=(200, 20), temperature=0.07)
        entry["knn"] = {f"k{k}": v for k, v in knn.accuracy.items()}
        entry["knn_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[floor] {layer} k-NN: {entry['knn']} ({entry['knn_seconds']} s)", flush=True)
        t0 = time.perf_counter()
        probe = fast_linear_probe(tr.features, tr.labels, te.features, te.labels)
        entry["probe"] = dict(probe.accuracy, chosen_c=probe.selection.best_c,
                              val_accuracy_per_c={str(c): a for c, a in probe.selection.val_accuracy.items()},
                              converged=probe.final_converged, selection_converged=
                              {str(c): a for c, a in probe.selection.converged.items()},
                              params=probe.params, seconds={k: round(v, 1) for k, v in probe.seconds.items()})
        entry["probe_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[floor] {layer} fast probe: {probe.accuracy} C={probe.selection.best_c} "
              f"({entry['probe_seconds']} s)", flush=True)
        result[layer] = entry
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
