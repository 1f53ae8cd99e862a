"""The IDAA / A2 comparison in benchmarks/RESULTS.md is exactly what its committed records
(benchmarks/view_generators/<tag>/: evaluation JSONs, training logs, VAE config) give: no
number in the table was typed in by hand, and the rows share one budget and seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaug_release import view_generators
from metaug_release.sections import read_section

REPO_ROOT = Path(__file__).resolve().parents[2]
RECORDS = REPO_ROOT / "benchmarks" / "view_generators"
TAGS = sorted(p.name for p in RECORDS.iterdir() if (p / "summary.json").is_file()) if RECORDS.is_dir() else []


def test_the_comparison_has_been_recorded():
    assert "cpu" in TAGS, "benchmarks/view_generators/cpu/summary.json is missing"


@pytest.mark.parametrize("tag", TAGS)
def test_results_section_is_rendered_from_the_records(tag):
    summary = view_generators.build(tag)
    assert summary == json.loads((RECORDS / tag / "summary.json").read_text())
    text = view_generators.markdown(summary)
    assert read_section(REPO_ROOT / "benchmarks" / "RESULTS.md", view_generators.section_name(tag)) == text


@pytest.mark.parametrize("tag", TAGS)
def test_rows_share_one_budget_and_seed(tag):
    rows = json.loads((RECORDS / tag / "summary.json").read_text())["rows"]
    assert set(rows) >= {"oucl", "idaa", "a2-perturb"}
    assert len({r["epochs_reached"] for r in rows.values()}) == 1
    assert all(r["status"] == "finished" for r in rows.values())
    configs = [r["config"] for r in rows.values()]
    for key in ("method", "seed", "epochs", "batch_size", "schedule"):
        assert len({c[key] for c in configs}) == 1, key
    assert rows["idaa"]["config"]["idaa"] is not None and rows["oucl"]["config"]["idaa"] is None
    assert rows["a2-perturb"]["config"]["a2"]["mode"] == "perturb"
    for row in rows:
        log = [json.loads(line) for line in (RECORDS / tag / f"{row}.log.jsonl").read_text().splitlines()]
        assert log[-1]["event"] == "stop" and log[-1]["status"] == "finished"
