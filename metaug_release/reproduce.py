"""Re-measure the k-NN accuracy a released model folder's card claims, and compare
(``python -m metaug_release reproduce FOLDER... --data CIFAR``).

For each folder: read the card's model-index (``huggingface_hub.ModelCard``), take every
weighted k-NN metric (its ``args`` give layer, k and T; defaults k=200, T=0.07, the model's
default layer), extract features of the train split (the k-NN memory) and the test split with
``metaug_features.extract_features``, run ``metaug_features.evaluation.knn_evaluate`` and
compare with the card's value. ``--data`` is a folder holding train/ and test/
(``<split>/<class>/<file>.jpg``) or a .tar.gz of such a folder (extracted into the work folder)."""

from __future__ import annotations

import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from metaug_features.atomic import atomic_write_text
from metaug_features.errors import MetAugError
from metaug_features.evaluation.knn import KNNConfig

from .encoder_eval import BATCH_SIZE

#: A card metric without ``args`` means the k-NN protocol's headline k and its T (one source: KNNConfig).
DEFAULT_K = KNNConfig.ks[0]
DEFAULT_T = KNNConfig.temperature
#: The most a re-measured k-NN number may differ from the card's, in points (``--tolerance``).
TOLERANCE = 0.3


def card_knn_claims(folder: str | Path) -> list[dict[str, Any]]:
    """The weighted k-NN metrics of ``folder``'s card: [{name, value, layer, k, temperature, split}]."""
    from huggingface_hub import ModelCard

    from metaug_features.model_io import read_config

    card = ModelCard.load(Path(folder) / "README.md")
    default_layer = read_config(folder).default_layer
    claims = []
    for r in card.data.eval_results or []:
        args = dict(r.metric_args or {})
        name = r.metric_name or r.metric_type
        if args.get("protocol", "knn" if "k-nn" in name.lower() else None) != "knn":
            continue
        claims.append({"name": name, "value": float(r.metric_value), "layer": args.get("layer", default_layer),
                       "k": int(args.get("k", DEFAULT_K)), "temperature": float(args.get("temperature", DEFAULT_T)),
                       "split": r.dataset_split or "test"})
    return claims


def resolve_data(data: str | Path, work_dir: Path) -> Path:
    """A folder with train/ and test/: ``data`` itself, or found inside the extracted archive."""
    data = Path(data)
    if data.is_file():
        dest = work_dir / "data"
        if not dest.exists():
            try:
                with tarfile.open(data) as tar:
                    tar.extractall(dest, filter="data")
            except (tarfile.TarError, OSError) as e:
                raise MetAugError(f"cannot extract {data}: {e}") from None
        data = dest
    for cand in [data, *sorted(p for p in data.rglob("*") if p.is_dir())]:
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return cand
    raise MetAugError(f"no folder with train/ and test/ under {data}")


def layer_features(folder: str | Path, data_root: Path, work_dir: Path, layer: str, batch_size: int = BATCH_SIZE,
                   workers: int | None = None, device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """{"train": FeatureSet, "test": FeatureSet} of ``folder``'s ``layer``, through
    ``extract_features`` (the metaug-extract path) into ``work_dir``."""
    from metaug_features.extract import extract_features
    from metaug_features.feature_files import read_feature_set

    feats = {}
    for split in ("train", "test"):
        out = work_dir / f"{Path(folder).name}-{layer}-{split}"
        extract_features(str(folder), [data_root / split], out, layer=layer, batch_size=batch_size,
                         workers=workers, device=device, strict=True, overwrite=True, progress=progress)
        feats[split] = read_feature_set(out)
    return feats


def measure_knn(feats: dict[str, Any], k: int, temperature: float) -> float:
    """Top-1 weighted k-NN accuracy (%) of extracted features: memory = train split, queries =
    test split (InstDisc protocol, as in ``metaug_features.evaluation.knn``)."""
    from metaug_features.evaluation import knn_evaluate

    tr, te = feats["train"], feats["test"]
    return knn_evaluate(tr.features, tr.labels, te.features, te.labels, ks=(k,), temperature=temperature).accuracy[k]["top1"]


def reproduce(folder: str | Path, data_root: Path, work_dir: Path, tolerance: float = TOLERANCE,
              **extract_kw: Any) -> list[dict[str, Any]]:
    """Every k-NN claim of ``folder``'s card with the re-measured value and whether it is within
    ``tolerance`` points. A card without a k-NN metric is an error."""
    claims = card_knn_claims(folder)
    if not claims:
        raise MetAugError(f"{folder}: the card's model-index has no weighted k-NN metric")
    rows = []
    extracted: dict[str, dict[str, Any]] = {}  # one extraction per layer, however many claims use it
    for c in claims:
        if c["layer"] not in extracted:
            extracted[c["layer"]] = layer_features(folder, data_root, work_dir, c["layer"], **extract_kw)
        measured = measure_knn(extracted[c["layer"]], c["k"], c["temperature"])
        diff = measured - c["value"]
        rows.append({**c, "folder": str(folder), "measured": measured, "diff": diff, "ok": abs(diff) <= tolerance})
    return rows


def reproduce_folders(folders: list[Path], data: Path, work_dir: Path | None = None, tolerance: float = TOLERANCE,
                      report: Path | None = None, **extract_kw: Any) -> list[dict[str, Any]]:
    """``python -m metaug_release reproduce``: :func:`reproduce` of every folder (``data``: folder or
    archive), in ``work_dir`` (default: a temporary folder, removed after). ``report``: also write
    the rows as JSON there (atomically, before any verdict). Use :func:`failures` for the verdict."""
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="metaug-repro-") as tmp:
            return reproduce_folders(folders, data, Path(tmp), tolerance, report, **extract_kw)
    work_dir.mkdir(parents=True, exist_ok=True)
    root = resolve_data(data, work_dir)
    rows: list[dict[str, Any]] = []
    for folder in folders:
        rows += reproduce(folder, root, work_dir, tolerance, **extract_kw)
    if report is not None:
        atomic_write_text(report, json.dumps(rows, indent=2) + "\n")
    return rows


def failures(rows: list[dict[str, Any]], tolerance: float) -> str | None:
    """The failed check in words (how many card numbers are off), or None when every one is within."""
    failed = [r for r in rows if not r["ok"]]
    return f"{len(failed)} of {len(rows)} card numbers differ by more than {tolerance} points" if failed else None


def format_rows(rows: list[dict[str, Any]], tolerance: float) -> list[str]:
    """One ``OK``/``FAIL`` line per claim."""
    return [f"{'OK  ' if r['ok'] else 'FAIL'} {r['folder']}: {r['name']}: card {r['value']:.2f}, measured "
            f"{r['measured']:.2f} (diff {r['diff']:+.2f}, tolerance {tolerance})" for r in rows]
