"""Read an encoder evaluation back: the per-layer numbers of a ``metaug-eval`` report that
covers several feature layers (written by :mod:`.encoder_eval`; see
:mod:`metaug_features.evaluation.report` for the layout).

The tables, cards and rows of the release records take every number from here, so they read
one schema: weighted k-NN top-1 per k, the fast probe's top-1 and chosen C, and the k-means
metrics (NMI in percent whatever the report's version)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaug_features.errors import MetAugError
from metaug_features.evaluation.clustering import clustering_in_percent
from metaug_features.evaluation.report import find_evaluation, read_report


@dataclass(frozen=True)
class LayerResult:
    """The numbers of one feature layer (accuracies in %).

    knn: k -> weighted k-NN top-1; probe: fast linear probe top-1 (None when not run);
    kmeans: the k-means metrics as recorded (None when not run)."""

    layer: str
    dim: int
    knn: dict[int, float]
    probe: float | None = None
    chosen_c: float | None = None
    kmeans: dict[str, float] | None = None

    @property
    def nmi_percent(self) -> float:
        """k-means NMI in percent (reports of version 1 hold a fraction under ``nmi``)."""
        if self.kmeans is None:
            raise MetAugError(f"layer {self.layer!r} has no k-means evaluation")
        return clustering_in_percent(self.kmeans)["nmi_percent"]

    @property
    def kmeans_accuracy(self) -> float:
        """k-means Hungarian accuracy in percent."""
        if self.kmeans is None:
            raise MetAugError(f"layer {self.layer!r} has no k-means evaluation")
        return self.kmeans["accuracy"]


@dataclass(frozen=True)
class EncoderEvaluation:
    """One encoder's evaluation report, read for the records.

    model: ``inputs["model"]`` of the report (architecture, width, views, provenance,
    weights_sha256, or ``init`` for a random-init encoder); date_utc: when it was measured."""

    report: dict[str, Any]
    layers: dict[str, LayerResult]
    source: str = "<report>"

    @property
    def model(self) -> dict[str, Any]:
        return self.report["inputs"].get("model", {})

    @property
    def date_utc(self) -> str | None:
        return self.report.get("created_utc")

    @property
    def provenance(self) -> dict[str, Any]:
        prov = self.model.get("provenance")
        if not prov:
            raise MetAugError(f"{self.source}: the evaluated model has no training provenance")
        return prov

    @property
    def weights_sha256(self) -> str | None:
        return self.model.get("weights_sha256")

    def __getitem__(self, layer: str) -> LayerResult:
        try:
            return self.layers[layer]
        except KeyError:
            raise MetAugError(f"{self.source}: no evaluation of layer {layer!r} "
                              f"(it has {sorted(self.layers) or 'none'})") from None

    def __contains__(self, layer: object) -> bool:
        return layer in self.layers


def _layer(report: dict[str, Any], layer: str, source: str) -> LayerResult:
    knn = find_evaluation(report, "knn", layer)
    if knn is None:
        raise MetAugError(f"{source}: layer {layer!r} has no k-NN evaluation")
    ks = sorted({int(m.split("_")[0][1:]) for m in knn["metrics"] if m.endswith("_top1")}, reverse=True)
    probe = find_evaluation(report, "fast_probe", layer)
    kmeans = find_evaluation(report, "kmeans", layer)
    dim = report["inputs"].get(f"{layer}/test", {}).get("dim", knn["params"].get("dim"))
    return LayerResult(layer=layer, dim=int(dim), knn={k: knn["metrics"][f"k{k}_top1"] for k in ks},
                       probe=probe["metrics"]["top1"] if probe else None,
                       chosen_c=probe["metrics"].get("chosen_c") if probe else None,
                       kmeans=dict(kmeans["metrics"]) if kmeans else None)


def evaluation_from_report(report: dict[str, Any], source: str = "<report>") -> EncoderEvaluation:
    """An :class:`EncoderEvaluation` of a report dict (every layer that has a k-NN entry)."""
    names = [e["layer"] for e in report["evaluations"] if "layer" in e and e.get("name") == "knn"]
    if not names:
        raise MetAugError(f"{source}: not an encoder evaluation (no per-layer k-NN entry; "
                          f"written by `python -m metaug_release evaluate`?)")
    return EncoderEvaluation(report, {n: _layer(report, n, source) for n in names}, source)


def load_evaluation(path: Path) -> EncoderEvaluation:
    """Read the encoder evaluation report ``path`` (clear errors for anything else)."""
    return evaluation_from_report(read_report(path), str(path))
