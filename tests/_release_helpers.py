"""Helpers shared by the release-record tests (tests/release/)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path


def paper_probe_report(path: Path, layer: str, top1: float, provenance: dict, **params) -> Path:
    """Write a ``metaug-eval paper-probe`` report as the CLI writes it (the fields the campaign
    tooling reads), with the paper's budget unless ``params`` override it; returns ``path``."""
    from metaug_features.evaluation.paper_probe import PaperProbeConfig

    p = dict(json.loads(json.dumps(asdict(PaperProbeConfig()))), layer=layer, seeds=[0], average_last=5, seconds=2280.0,
             num_train=50000, num_test=10000)
    p.update(params)
    path.write_text(json.dumps({"format": "metaug-eval-report", "version": 2,
                                "inputs": {"model": {"config": {"provenance": provenance}}},
                                "evaluations": [{"name": "paper_probe", "protocol": "paper linear probe ...", "params": p,
                                                 "metrics": {"top1_mean": top1, "top1_seed0": top1}}]}))
    return path
