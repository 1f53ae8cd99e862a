"""Evaluation reports: one JSON document per run, and a readable table for the terminal.

Report layout (``format: "metaug-eval-report", version 2``)::

    {
      "format": "metaug-eval-report", "version": 2,
      "created_utc": "2026-11-23T18:00:00Z",
      "software": {"metaug_features": "0.1.0", "numpy": ..., "faiss": ..., "sklearn": ...},
      "inputs": {"train": {"path", "features_file", "features_sha256", "num_rows", "dim", "model", "layer"},
                 "test": {...}},
      "evaluations": [
        {"name": "knn", "protocol": "...", "params": {...}, "metrics": {"k200_top1": 41.3, ...}},
        ...
      ]
    }

A report of several feature layers of one model (``python -m metaug_release evaluate``: ``conv`` and ``fc``)
adds ``"layer"`` to each evaluation and keys its inputs ``"<layer>/train"``, ``"<layer>/test"``;
``inputs["model"]`` then describes the network, as in a ``paper-probe`` report. Read entries back
with :func:`find_evaluation`, reports with :func:`read_report`.

Every metric sits next to the protocol that produced it, so a number copied out of a report
still says whether it is a fast probe or the paper's protocol.

Units: every metric is in percent (0-100) except ``chosen_c`` and the plots' mean similarities.
Accuracies keep their plain names (``k200_top1``, ``top1``, ``accuracy``); the k-means NMI and ARI
carry the unit in the key (``nmi_percent``, ``ari_percent``). Version 1 reports stored those two
as fractions under ``nmi`` / ``ari``; version 2 is the first with the percent keys
(:func:`~metaug_features.evaluation.clustering.clustering_in_percent` reads both).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text

__all__ = [
    "array_sha256",
    "build_report",
    "find_evaluation",
    "format_table",
    "input_info",
    "read_report",
    "report_entry",
    "write_report",
]

REPORT_FORMAT = "metaug-eval-report"
#: 2: k-means NMI / ARI in percent as ``nmi_percent`` / ``ari_percent`` (1: fractions as ``nmi`` / ``ari``).
REPORT_VERSION = 2


def array_sha256(x: np.ndarray) -> str:
    """SHA-256 of an array's shape, dtype and C-order bytes (identifies arrays that were never a file)."""
    x = np.ascontiguousarray(x)
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(x.tobytes())
    return h.hexdigest()


def input_info(
    features: np.ndarray, path: str | os.PathLike | None = None, meta: dict | None = None
) -> dict[str, Any]:
    """Describe one input: for a feature folder, its path and the SHA-256 of its features file
    (recomputed from the bytes on disk, not copied from extract.json); for bare arrays, the
    array's hash."""
    info: dict[str, Any] = {"num_rows": int(features.shape[0]), "dim": int(features.shape[1])}
    if path is not None:
        from ..feature_files import features_path, sha256_file

        fp = features_path(path)
        info.update(path=str(path), features_file=fp.name, features_sha256=sha256_file(fp))
    else:
        info["array_sha256"] = array_sha256(np.asarray(features, dtype=np.float32))
    for key in ("model", "layer", "model_sha256", "config_sha256"):
        if meta and key in meta:
            info[key] = meta[key]
    return info


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    return v


def report_entry(result: Any, name: str | None = None, layer: str | None = None) -> dict[str, Any]:
    """Turn an evaluator's result (k-NN, fast probe, clustering, paper probe, or a plot summary
    dict) into a report entry ``{name, protocol, params, metrics}`` (with ``layer``: also
    ``"layer"``, for a report that covers several feature layers)."""
    entry = _entry(result, name)
    if layer is not None:
        entry = {"name": entry["name"], "layer": layer, **{k: v for k, v in entry.items() if k != "name"}}
    return entry


def _entry(result: Any, name: str | None) -> dict[str, Any]:
    from .clustering import ClusteringResult
    from .knn import KNNResult
    from .linear_probe import ProbeResult

    if isinstance(result, KNNResult):
        metrics = {f"k{k}_{m}": v for k, acc in result.accuracy.items() for m, v in acc.items()}
        return {"name": name or "knn", "protocol": result.protocol, "params": _jsonable(result.params), "metrics": metrics}
    if isinstance(result, ProbeResult):
        metrics = dict(result.accuracy)
        metrics["chosen_c"] = result.selection.best_c
        params = dict(result.params)
        params["val_accuracy_per_c"] = {str(c): a for c, a in result.selection.val_accuracy.items()}
        params["converged_per_c"] = {str(c): a for c, a in result.selection.converged.items()}
        params["final_converged"] = result.final_converged
        params["seconds"] = result.seconds
        return {"name": name or "fast_probe", "protocol": result.protocol, "params": _jsonable(params), "metrics": metrics}
    if isinstance(result, ClusteringResult):
        params = dict(result.params)
        params["objectives"] = result.objectives
        return {"name": name or "kmeans", "protocol": result.protocol, "params": _jsonable(params),
                    "metrics": dict(result.metrics)}
    if hasattr(result, "report_entry"):
        entry = result.report_entry()
        if name:
            entry["name"] = name
        return _jsonable(entry)
    if isinstance(result, dict) and {"protocol", "metrics"} <= result.keys():
        return _jsonable(dict(name=name or result.get("name", "other"), **{k: v for k, v in result.items() if k != "name"}))
    raise TypeError(f"cannot turn {type(result).__name__} into a report entry")


def build_report(entries: Iterable[dict[str, Any]], inputs: dict[str, dict] | None = None) -> dict[str, Any]:
    """Assemble the report document from entries (see :func:`report_entry`) and input descriptions."""
    from importlib.metadata import PackageNotFoundError, version

    import faiss
    import sklearn

    try:
        pkg_version = version("metaug-features")
    except PackageNotFoundError:  # running from a source tree that was never installed
        pkg_version = "unknown"

    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "software": {
            "metaug_features": pkg_version,
            "numpy": np.__version__,
            "faiss": getattr(faiss, "__version__", "unknown"),
            "scikit-learn": sklearn.__version__,
        },
        "inputs": _jsonable(inputs or {}),
        "evaluations": [_jsonable(e) for e in entries],
    }


def write_report(path: str | os.PathLike, report: dict[str, Any]) -> Path:
    """Write the report as indented JSON, atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path


def read_report(path: str | os.PathLike) -> dict[str, Any]:
    """A report written by :func:`write_report`; a file that is not one is a
    :class:`~metaug_features.errors.MetAugError` naming the file."""
    from ..errors import MetAugError

    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetAugError(f"cannot read evaluation report {path}: {e}") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT or not isinstance(
            report.get("evaluations"), list):
        raise MetAugError(f"{path}: not a {REPORT_FORMAT} file (no 'format': {REPORT_FORMAT!r} with 'evaluations')")
    if not isinstance(report.get("version"), int) or report["version"] > REPORT_VERSION:
        raise MetAugError(f"{path}: report version {report.get('version')!r} is not one this library reads "
                          f"(1..{REPORT_VERSION})")
    return report


def find_evaluation(report: dict[str, Any], name: str, layer: str | None = None) -> dict[str, Any] | None:
    """The entry called ``name`` (of ``layer``, in a report of several layers), or None."""
    for e in report["evaluations"]:
        if e.get("name") == name and (layer is None or e.get("layer") == layer):
            return e
    return None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1 and v != 0 else f"{v:.2f}"
    return str(v)


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table: one line per metric, with the evaluation's name, then each protocol
    spelt out once below the table."""
    rows = [("evaluation", "metric", "value")]
    protocols: list[tuple[str, str]] = []
    for e in report["evaluations"]:
        label = f"{e['layer']}/{e['name']}" if "layer" in e else e["name"]
        for m, v in e["metrics"].items():
            rows.append((label, m, _fmt(v)))
        protocols.append((label, e["protocol"]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    for name, proto in protocols:
        lines.append(f"{name}: {proto}")
    for split, info in report.get("inputs", {}).items():
        if "dim" not in info:
            continue
        h = info.get("features_sha256") or info.get("array_sha256", "")
        lines.append(f"{split}: {info['num_rows']} x {info['dim']} features, sha256 {h[:16]}")
    return "\n".join(lines)
