"""The report layout's reading side and its several-layer form (metaug_features.evaluation.report):
entries tagged with a layer, read back by name and layer, files that are not reports refused
with a message naming the file, the table labelled per layer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metaug_features.errors import MetAugError
from metaug_features.evaluation import (
    build_report,
    find_evaluation,
    format_table,
    knn_evaluate,
    read_report,
    report_entry,
    write_report,
)


@pytest.fixture(scope="module")
def knn_result():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = np.repeat(np.array(["a", "b", "c"]), 20)
    return knn_evaluate(x[:45], y[:45], x[45:], y[45:], ks=(5,), temperature=0.1)


def test_layer_tagged_entries_round_trip(knn_result, tmp_path):
    conv, fc = report_entry(knn_result, layer="conv"), report_entry(knn_result, layer="fc")
    assert list(conv)[:2] == ["name", "layer"] and conv["layer"] == "conv"
    assert {k: v for k, v in conv.items() if k != "layer"} == report_entry(knn_result)  # nothing else changes
    doc = build_report([conv, fc], {"conv/test": {"num_rows": 15, "dim": 8}, "model": {"architecture": "x"}})
    path = write_report(tmp_path / "r.json", doc)
    back = read_report(path)
    assert back == json.loads(json.dumps(doc))
    assert find_evaluation(back, "knn", "fc") == back["evaluations"][1]
    assert find_evaluation(back, "knn") == back["evaluations"][0]
    assert find_evaluation(back, "knn", "pool") is None and find_evaluation(back, "fast_probe") is None
    table = format_table(back)
    assert "conv/knn" in table and "fc/knn" in table and f"{knn_result.accuracy[5]['top1']:.2f}" in table


def test_read_report_refuses_other_files(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"conv": {"knn": {}}}))
    with pytest.raises(MetAugError, match=r"a.json: not a metaug-eval-report file"):
        read_report(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("not json")
    with pytest.raises(MetAugError, match=r"cannot read evaluation report .*b.json"):
        read_report(tmp_path / "b.json")
    with pytest.raises(MetAugError, match="cannot read evaluation report"):
        read_report(tmp_path / "missing.json")
    (tmp_path / "c.json").write_text(json.dumps({"format": "metaug-eval-report", "version": "2", "evaluations": []}))
    with pytest.raises(MetAugError, match="report version '2'"):
        read_report(tmp_path / "c.json")
