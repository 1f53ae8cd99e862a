"""Evaluate one encoder on CIFAR-10: weighted k-NN, the fast linear probe and k-means on the
``conv`` and ``fc`` features of the 10,000 test images (train split = k-NN memory / probe data),
into one ``metaug-eval`` report (``metaug_features.evaluation.report``; one entry per layer and
evaluator, each with ``"layer"``).

This is the evaluation behind the release cards and ``benchmarks/RESULTS.md``
(``python -m metaug_release evaluate``). It runs the library's own pieces end to end, in one process, so
that the numbers of a trained model, its CMC baseline and the random-init floor come from
exactly the same code:

1. Decode each split once with the encoder's own eval preprocessing (``Preprocessor.load_batch``,
   the path ``metaug-extract`` uses).
2. One forward pass per batch gives both layers: ``fc`` is computed and ``conv`` (conv5
   flattened, the input of fc6) is captured on the way by forward pre-hooks. The first batch is
   checked bit-exactly against ``encoder(x, "conv")``.
3. The features are written as metaug-extract feature folders (``write_feature_set``), so
   ``metaug-eval`` can re-run any number from them.
4. ``knn_evaluate`` (``KNNConfig``: k = 200 and 20, T = 0.07), ``fast_linear_probe`` (defaults: C chosen on a
   10% held-out part of train) and ``cluster_evaluate`` (k-means on the test split, 5 seeded
   restarts), each turned into a report entry by ``report_entry``. Reports of version 1 (the
   records written before the percent rule, e.g. ``benchmarks/campaign/leg*.json``) hold k-means
   NMI and ARI as fractions under ``nmi`` / ``ari``.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metaug_features.errors import MetAugError
from metaug_features.file_list import collect_files

LAYERS = ("conv", "fc")
#: Images per forward pass of every release-tool extraction (``evaluate`` and ``reproduce``; their
#: ``--batch-size`` defaults come from here). It changes speed and memory only, never a feature.
BATCH_SIZE = 256


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate and how (the options of ``python -m metaug_release evaluate``).

    model: a folder, alias or Hub id; or random_init: the width of an untrained ``alexnet32``
    (views l, ab, ori; torch seed ``seed``). data: a folder with ``train/<class>/*.jpg`` and
    ``test/<class>/*.jpg``. output: where the feature folders go."""

    data: Path
    output: Path
    model: str | None = None
    random_init: float | None = None
    seed: int = 0
    layers: tuple[str, ...] = LAYERS
    per_class_train: int | None = None
    per_class_test: int | None = None
    threads: int = 1
    batch_size: int = BATCH_SIZE
    probe: bool = True
    cluster: bool = True
    reuse: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        if (self.model is None) == (self.random_init is None):
            raise MetAugError("give exactly one of --model and --random-init")
        if not self.layers:
            raise MetAugError("give at least one layer")
        if self.random_init is not None and not self.random_init > 0:
            raise MetAugError(f"--random-init needs a positive width, got {self.random_init}")


def list_split(root: Path, split: str, per_class: int | None = None) -> tuple[list[Path], list[str], list[str]]:
    """The image files of ``root/split`` as the library lists them (sorted relative paths, image
    extensions only, label = parent folder), their relative paths and labels; files directly in
    ``root/split`` (no class folder) are left out. The first ``per_class`` files of every class
    when given."""
    entries = [e for e in collect_files([root / split]).entries if e.skip_reason is None and e.label]
    if per_class is not None:
        seen: dict[str, int] = {}
        kept = []
        for e in entries:
            seen[e.label] = seen.get(e.label, 0) + 1
            if seen[e.label] <= per_class:
                kept.append(e)
        entries = kept
    if not entries:
        raise MetAugError(f"no image files under {root / split}/<class>/")
    return [Path(e.path) for e in entries], [e.rel for e in entries], [e.label for e in entries]


@torch.inference_mode()
def extract_layers(enc: Any, files: list[Path], layers: tuple[str, ...], batch_size: int = BATCH_SIZE,
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


def _timed(run: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    result = run()
    return result, round(time.perf_counter() - t0, 1)


def evaluate_layer(tr: Any, te: Any, layer: str, probe: bool = True, cluster: bool = True) -> list[dict[str, Any]]:
    """Report entries (k-NN, fast probe, k-means) of one layer's train/test FeatureSets; each
    entry's params carry ``wall_seconds``, the time that evaluator took."""
    from metaug_features.evaluation import (
        cluster_evaluate,
        fast_linear_probe,
        knn_evaluate,
        report_entry,
    )
    from metaug_features.evaluation.knn import KNNConfig

    runs: list[Callable[[], Any]] = [
        lambda: knn_evaluate(tr.features, tr.labels, te.features, te.labels, ks=KNNConfig.ks,
                             temperature=KNNConfig.temperature)]
    if probe:
        runs.append(lambda: fast_linear_probe(tr.features, tr.labels, te.features, te.labels))
    if cluster:
        runs.append(lambda: cluster_evaluate(te.features, te.labels, restarts=5, seed=0))
    entries = []
    for run in runs:
        result, seconds = _timed(run)
        entry = report_entry(result, layer=layer)
        entry["params"]["wall_seconds"] = seconds
        entries.append(entry)
    return entries


def load_model(settings: EvalSettings) -> tuple[Any, dict[str, Any]]:
    """The encoder to evaluate and the description of it that goes to ``inputs["model"]``."""
    from metaug_features import EncoderConfig, build_encoder, load_encoder
    from metaug_features.feature_files import sha256_file

    if settings.random_init is not None:
        torch.manual_seed(settings.seed)
        cfg = EncoderConfig(architecture="alexnet32", width=settings.random_init, views=("l", "ab", "ori"))
        return build_encoder(cfg).eval(), {"architecture": "alexnet32", "width": settings.random_init,
                                           "views": ["l", "ab", "ori"],
                                           "init": f"random, torch.manual_seed({settings.seed})"}
    enc = load_encoder(settings.model, device="cpu").eval()
    desc: dict[str, Any] = {"ref": str(settings.model), "architecture": enc.config.architecture,
                            "width": enc.config.width, "views": list(enc.config.views),
                            "provenance": dict(enc.config.provenance or {})}
    weights = Path(settings.model) / "model.safetensors"
    if weights.is_file():
        desc["weights_sha256"] = sha256_file(weights)
    return enc, desc


def evaluate_encoder(settings: EvalSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Extract, evaluate and return the report (module docstring); ``log`` gets progress lines."""
    from metaug_features.evaluation import build_report, input_info
    from metaug_features.feature_files import (
        FeatureSet,
        read_feature_set,
        write_feature_set,
    )

    torch.set_num_threads(settings.threads)
    enc, desc = load_model(settings)
    label = desc.get("ref") or (f"alexnet32 width {settings.random_init} l,ab,ori random init seed {settings.seed}")
    data: dict[str, Any] = {"path": str(settings.data), "torch_threads": torch.get_num_threads(),
                            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
                            "extract": {}}
    sets: dict[str, tuple[Path, FeatureSet]] = {}
    for split, limit in (("train", settings.per_class_train), ("test", settings.per_class_test)):
        folders = {layer: settings.output / f"{split}_{layer}" for layer in settings.layers}
        if settings.reuse and all((f / "extract.json").is_file() for f in folders.values()):
            for layer, f in folders.items():
                sets[f"{layer}/{split}"] = (f, read_feature_set(f))
            continue
        files, rel, labels = list_split(settings.data, split, limit)
        feats, secs = _timed(lambda files=files: extract_layers(enc, files, settings.layers, settings.batch_size,
                                                                settings.quiet))
        data["extract"][split] = {"images": len(files), "seconds": secs, "img_per_s": round(len(files) / max(secs, 0.1), 1)}
        for layer in settings.layers:
            fs = FeatureSet(feats[layer], rel, labels, meta={"model": label, "layer": layer})
            write_feature_set(folders[layer], fs)
            sets[f"{layer}/{split}"] = (folders[layer], fs)
        log(f"[evaluate] extracted {split}: {len(files)} images in {secs:.0f} s")
    entries = []
    for layer in settings.layers:
        (_, tr), (_, te) = sets[f"{layer}/train"], sets[f"{layer}/test"]
        layer_entries = evaluate_layer(tr, te, layer, probe=settings.probe, cluster=settings.cluster)
        log(f"[evaluate] {layer}: " + "; ".join(f"{e['name']} {e['metrics']}" for e in layer_entries))
        entries += layer_entries
    inputs: dict[str, Any] = {"model": desc, "data": data}
    inputs.update({key: input_info(fs.features, path=folder, meta=fs.meta) for key, (folder, fs) in sets.items()})
    return build_report(entries, inputs)


def run_evaluation(settings: EvalSettings, report: Path | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """``python -m metaug_release evaluate``: :func:`evaluate_encoder`, the report written atomically to
    ``report`` when given; returns the report."""
    from metaug_features.evaluation import write_report

    doc = evaluate_encoder(settings, log)
    if report is not None:
        write_report(report, doc)
    return doc
