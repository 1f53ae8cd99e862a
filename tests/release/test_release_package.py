"""metaug_release: the one section writer, the evaluation-report reader, and the
generated sections of the docs, which must be exactly what the package renders from the
committed records (evaluation reports converted from the old evaluate_encoder layout: the
tables built from them are the committed ones, number for number)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from metaug_features.errors import MetAugError
from metaug_release import campaign, campaign_cards, campaign_final, study, view_generators
from metaug_release import readme as readme_module
from metaug_release.cli import main as release_cli
from metaug_release.paths import BENCHMARKS, README, REPO, RESULTS
from metaug_release.records import evaluation_from_report, load_evaluation
from metaug_release.sections import read_section, replace_section, write_section


# ---------------------------------------------------------------------- the section writer
def test_section_is_replaced_appended_and_idempotent(tmp_path):
    path = tmp_path / "doc.md"
    path.write_text("# T\n\n<!-- a:start -->\nold\n<!-- a:end -->\n\ntail\n")
    for _ in range(2):
        write_section(path, "new\n\n", "a")
        assert path.read_text() == "# T\n\n<!-- a:start -->\nnew\n<!-- a:end -->\n\ntail\n"
    write_section(path, "b body", "b")  # absent: appended after a blank line
    assert path.read_text().endswith("tail\n\n<!-- b:start -->\nb body\n<!-- b:end -->\n")
    assert read_section(path, "b") == "b body" and read_section(path, "c") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.md"]  # atomic: no temporary file left


def test_section_errors_are_clear_and_change_nothing(tmp_path):
    path = tmp_path / "doc.md"
    text = "<!-- a:end -->\n<!-- a:start -->\n"
    path.write_text(text)
    with pytest.raises(MetAugError, match="markers of section 'a' are broken"):
        write_section(path, "x", "a")
    assert path.read_text() == text
    with pytest.raises(MetAugError, match="lacks the markers <!-- r:start -->"):
        replace_section("# README\n", "x", "r", append=False)
    with pytest.raises(MetAugError, match="broken"):
        replace_section("<!-- a:start -->\n<!-- a:end -->\n<!-- a:start -->\n", "x", "a")
    with pytest.raises(ValueError, match="must not contain its markers"):
        replace_section("", "<!-- a:start -->", "a")
    with pytest.raises(ValueError, match="bad section name"):
        replace_section("", "x", "a b")


# ---------------------------------------------------------------------- the report reader
def _report(**entries_by_layer) -> dict:
    evaluations = [{"name": name, "layer": layer, "protocol": "p", "params": {}, "metrics": metrics}
                   for layer, entries in entries_by_layer.items() for name, metrics in entries.items()]
    inputs = {f"{layer}/test": {"num_rows": 10, "dim": 8} for layer in entries_by_layer}
    return {"format": "metaug-eval-report", "version": 1, "created_utc": "2026-01-01T00:00:00Z",
            "inputs": {"model": {"architecture": "alexnet32"}, **inputs}, "evaluations": evaluations}


def test_reader_gives_per_layer_numbers_in_percent():
    ev = evaluation_from_report(_report(conv={"knn": {"k200_top1": 40.0, "k200_top5": 90.0, "k20_top1": 45.0},
                                              "fast_probe": {"top1": 60.0, "chosen_c": 0.01},
                                              "kmeans": {"nmi": 0.25, "ari": 0.1, "accuracy": 30.0}},
                                        fc={"knn": {"k200_top1": 41.0}}))
    assert ev["conv"].knn == {200: 40.0, 20: 45.0} and ev["conv"].dim == 8
    assert (ev["conv"].probe, ev["conv"].chosen_c) == (60.0, 0.01)
    assert ev["conv"].nmi_percent == pytest.approx(25.0) and ev["conv"].kmeans_accuracy == 30.0
    assert ev["fc"].probe is None and "fc" in ev and "pool" not in ev
    with pytest.raises(MetAugError, match="no evaluation of layer 'pool'"):
        ev["pool"]
    with pytest.raises(MetAugError, match="has no k-means evaluation"):
        ev["fc"].nmi_percent
    with pytest.raises(MetAugError, match="no training provenance"):
        ev.provenance


def test_reader_refuses_what_is_not_an_encoder_evaluation(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"encoder": {}, "conv": {"knn": {}}}))  # the retired layout
    with pytest.raises(MetAugError, match="not a metaug-eval-report file"):
        load_evaluation(tmp_path / "old.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(MetAugError, match="cannot read evaluation report"):
        load_evaluation(tmp_path / "bad.json")
    single = _report(conv={"knn": {"k200_top1": 1.0}})
    del single["evaluations"][0]["layer"]
    (tmp_path / "single.json").write_text(json.dumps(single))
    with pytest.raises(MetAugError, match="not an encoder evaluation"):
        load_evaluation(tmp_path / "single.json")
    (tmp_path / "future.json").write_text(json.dumps(dict(_report(conv={"knn": {"k200_top1": 1.0}}), version=99)))
    with pytest.raises(MetAugError, match="version 99"):
        load_evaluation(tmp_path / "future.json")


# ---------------------------------------------------------------------- committed records
def _evaluation_records() -> list[Path]:
    out = []
    for path in sorted(BENCHMARKS.rglob("*.json")):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and (("encoder" in doc and "conv" in doc)
                                      or any("layer" in e for e in doc.get("evaluations", []))):
            out.append(path)
    return out


def test_every_evaluation_record_is_a_report():
    """No committed evaluation keeps the retired evaluate_encoder layout; each reads as a report."""
    records = _evaluation_records()
    assert len(records) >= 25
    for path in records:
        ev = load_evaluation(path)
        assert set(ev.layers) in ({"conv", "fc"}, {"conv"}), path
        for layer in ev.layers.values():
            assert 0 < layer.knn[200] < 100 and layer.dim > 0


@pytest.mark.skipif(not campaign.JSONL.is_file(), reason="no campaign legs recorded yet")
def test_generated_sections_are_what_the_records_give():
    """CAMPAIGN.md's table, RESULTS.md's campaign, final, recipe-study and view-generator
    sections and the README's released-models section, regenerated from the reports, are the
    committed text character for character (the numbers survived the conversion)."""
    rows = campaign.read_rows()   # campaign 1 (campaign 2's tables: tests/release/test_campaign2.py)
    assert read_section(campaign.DOC, campaign.SECTION) == campaign.rows_table(rows).strip("\n")
    final1 = campaign.final_evaluation(rows)
    if final1 is not None:
        released1 = campaign.current_release_row(rows)
        assert read_section(RESULTS, campaign_final.FINAL_SECTION) == campaign_final.final_table(final1, released1).strip("\n")
    # The released state and the README: the latest released leg, of whichever campaign.
    released = campaign.current_release_row()
    number = campaign.campaign_of(released)
    final = campaign.final_evaluation(campaign.read_rows(campaign=number))
    _, summary = campaign_cards.card_specs(load_evaluation(REPO / released["eval"]), released, final=final)
    assert read_section(RESULTS, campaign.SECTION) == (campaign_cards.released_heading(campaign.CAMPAIGNS[number])
                                                       + summary).strip("\n")
    section = readme_module.readme_section(readme_module.shipped_pairs())
    assert read_section(README, readme_module.SECTION) == section.strip("\n")
    if study.JSONL.is_file():
        assert read_section(RESULTS, study.SECTION) == study.section(study.read_rows())
    for tag in sorted(p.name for p in view_generators.RECORDS.iterdir() if (p / "summary.json").is_file()):
        assert read_section(RESULTS, view_generators.section_name(tag)) == view_generators.markdown(
            view_generators.build(tag))


# ---------------------------------------------------------------------- the command
def test_release_command_errors_exit_2_and_write_nothing(tmp_path):
    res = CliRunner().invoke(release_cli, ["campaign", "cards", "--leg", "99", "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "Error: no row for leg 99" in res.output and not (tmp_path / "o").exists()
    res = CliRunner().invoke(release_cli, ["view-generators", "no-such-tag", "--no-write"])
    assert res.exit_code == 2 and "no comparison records in" in res.output
    res = CliRunner().invoke(release_cli, ["campaign", "final", "--leg", "6", "--paper-probe",
                                           str(README), str(README)])
    assert res.exit_code == 2 and "cannot read evaluation report" in res.output


def test_view_generators_prints_the_committed_section_without_writing():
    tag = "cpu"
    if not (view_generators.RECORDS / tag / "summary.json").is_file():
        pytest.skip("no view-generator records")
    before = RESULTS.read_bytes()
    res = CliRunner().invoke(release_cli, ["view-generators", tag, "--no-write"])
    assert res.exit_code == 0, res.output
    assert res.output.strip("\n") == read_section(RESULTS, view_generators.section_name(tag))
    assert RESULTS.read_bytes() == before and "wrote" not in res.output


def test_first_release_cards_are_the_committed_ones(tmp_path):
    """`python -m metaug_release cards` rebuilds the first release's card files from its converted
    reports and run logs: the same metrics, comparison and notes as committed; the written
    paths are printed absolute."""
    rel = BENCHMARKS / "release"
    if not (rel / "runs" / "metaug" / "log.jsonl").is_file():
        pytest.skip("no first-release run logs")
    res = CliRunner().invoke(release_cli, [
        "cards", "--metaug-eval", str(rel / "metaug.json"), "--cmc-eval", str(rel / "cmc.json"),
        "--floor-eval", str(rel / "floor.json"), "--metaug-run", str(rel / "runs" / "metaug"),
        "--cmc-run", str(rel / "runs" / "cmc"), "--recipe",
        str(REPO / "metaug_training" / "recipes" / "cifar10-release-metaug.json"), "-o", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert f"wrote {tmp_path / 'card-conv.json'}" in res.output
    for layer in ("conv", "fc"):
        new, old = (json.loads((d / f"card-{layer}.json").read_text()) for d in (tmp_path, rel))
        # (the committed files predate the NMI's names "k-means NMI in % (...)" and "k-means NMI (%)":
        # compare the numbers)
        assert [(m["metric"], m["value"], m["args"]) for m in new["metrics"]] == [
            (m["metric"], m["value"], m["args"]) for m in old["metrics"]]
        assert [list(r.values()) for r in new["comparison"]] == [list(r.values()) for r in old["comparison"]]
        for key in ("notes", "repo_id"):
            assert new[key] == old[key], (layer, key)
