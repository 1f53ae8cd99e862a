"""Re-measure the k-NN accuracy a released model folder's card claims, and compare.

For each FOLDER: read the card's model-index (``huggingface_hub.ModelCard``), take every
weighted k-NN metric (its ``args`` give layer, k and T; defaults k=200, T=0.07, the model's
default layer), extract features of the train split (the k-NN memory) and the test split with
``metaug_features.extract_features``, run ``metaug_features.evaluation.knn_evaluate`` and
compare with the card's value. Exit status 1 if any differs by more than --tolerance points.

    python benchmarks/reproduce_release.py hub/metaug-alexnet32-cifar10-conv \
        --data ../shared/data/cifar10-jpeg.tar.gz

--data is a folder holding train/ and test/ (``<split>/<class>/<file>.jpg``) or a .tar.gz of
such a folder (extracted into --work-dir).
"""

from __future__ import annotations

import json
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import click

from metaug_features.evaluation import knn_evaluate
from metaug_features.extract import extract_features
from metaug_features.feature_files import read_feature_set
from metaug_features.model_io import read_config

DEFAULT_K = 200
DEFAULT_T = 0.07


def card_knn_claims(folder: str | Path) -> list[dict[str, Any]]:
    """The weighted k-NN metrics of ``folder``'s card: [{name, value, layer, k, temperature}]."""
    from huggingface_hub import ModelCard

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
            with tarfile.open(data) as tar:
                tar.extractall(dest, filter="data")
        data = dest
    for cand in [data, *sorted(p for p in data.rglob("*") if p.is_dir())]:
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return cand
    raise click.ClickException(f"no folder with train/ and test/ under {data}")


def layer_features(folder: str | Path, data_root: Path, work_dir: Path, layer: str, batch_size: int = 256,
                   workers: int | None = None, device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """{"train": FeatureSet, "test": FeatureSet} of ``folder``'s ``layer``, through
    ``extract_features`` (the metaug-extract path) into ``work_dir``."""
    feats = {}
    for split in ("train", "test"):
        out = work_dir / f"{Path(folder).name}-{layer}-{split}"
        extract_features(str(folder), [data_root / split], out, layer=layer, batch_size=batch_size,
                         workers=workers, device=device, strict=True, overwrite=True, progress=progress)
        feats[split] = read_feature_set(out)
    return feats


def measure_knn(folder: str | Path, data_root: Path, work_dir: Path, layer: str, k: int, temperature: float,
                feats: dict[str, Any] | None = None, **extract_kw: Any) -> float:
    """Top-1 weighted k-NN accuracy (%) of ``folder``'s ``layer`` features: memory = train split,
    queries = test split (InstDisc protocol, as in ``metaug_features.evaluation.knn``).
    ``feats``: that layer's features if already extracted."""
    feats = feats or layer_features(folder, data_root, work_dir, layer, **extract_kw)
    tr, te = feats["train"], feats["test"]
    result = knn_evaluate(tr.features, tr.labels, te.features, te.labels, ks=(k,), temperature=temperature)
    return result.accuracy[k]["top1"]


def reproduce(folder: str | Path, data_root: Path, work_dir: Path, tolerance: float = 0.3,
              **extract_kw: Any) -> list[dict[str, Any]]:
    """Every k-NN claim of ``folder``'s card with the re-measured value and whether it is within
    ``tolerance`` points. Raises ``click.ClickException`` when the card has no k-NN metric."""
    claims = card_knn_claims(folder)
    if not claims:
        raise click.ClickException(f"{folder}: the card's model-index has no weighted k-NN metric")
    rows = []
    extracted: dict[str, dict[str, Any]] = {}  # one extraction per layer, however many claims use it
    for c in claims:
        if c["layer"] not in extracted:
            extracted[c["layer"]] = layer_features(folder, data_root, work_dir, c["layer"], **extract_kw)
        measured = measure_knn(folder, data_root, work_dir, c["layer"], c["k"], c["temperature"],
                               feats=extracted[c["layer"]])
        diff = measured - c["value"]
        rows.append({**c, "folder": str(folder), "measured": measured, "diff": diff, "ok": abs(diff) <= tolerance})
    return rows


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("folders", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data", required=True, type=click.Path(exists=True), help="CIFAR-10 folder (train/, test/) or .tar.gz.")
@click.option("--tolerance", default=0.3, show_default=True, help="Allowed |measured - card| in points.")
@click.option("--work-dir", default=None, type=click.Path(file_okay=False), help="Where features (and the extracted archive) go; default a temp folder.")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--workers", default=None, type=int)
@click.option("--device", default="auto", show_default=True)
@click.option("--json-out", default=None, type=click.Path(dir_okay=False), help="Also write the rows as JSON.")
def main(folders, data, tolerance, work_dir, batch_size, workers, device, json_out) -> None:
    with tempfile.TemporaryDirectory(prefix="metaug-repro-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        root = resolve_data(data, work)
        rows = []
        for folder in folders:
            rows += reproduce(folder, root, work, tolerance, batch_size=batch_size, workers=workers,
                              device=device, progress=sys.stderr.isatty())
    for r in rows:
        flag = "OK  " if r["ok"] else "FAIL"
        click.echo(f"{flag} {r['folder']}: {r['name']}: card {r['value']:.2f}, measured {r['measured']:.2f} "
                   f"(diff {r['diff']:+.2f}, tolerance {tolerance})")
    if json_out:
        Path(json_out).write_text(json.dumps(rows, indent=2))
    if not all(r["ok"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
