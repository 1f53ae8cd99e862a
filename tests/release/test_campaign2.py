"""Campaign 2 (OUCL, continuing the recipe study's ``oucl-shared`` run): its definition beside
campaign 1's, its leg-1 row taken from the study's records, both campaigns in the tables and the
plot, the leg script, and cards that say "MetAug (only OUCL)" (the MetAug paper's Table 1 name for
OUCL on its own), never plain MetAug."""

from __future__ import annotations

import ast
import json
import math
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from _release_helpers import paper_probe_report
from click.testing import CliRunner
from PIL import Image

from metaug_release import campaign, campaign_cards, campaign_final, study
from metaug_release import readme as readme_module
from metaug_release.cli import main as release_cli
from metaug_release.paths import RESULTS
from metaug_release.records import load_evaluation
from metaug_release.run_log import minutes_up_to
from metaug_release.sections import read_section
from metaug_training.compact_state import has_compact_state, load_compact_state
from metaug_training.config import TrainConfig, diff_keys, load_config

REPO = Path(__file__).resolve().parents[2]
C1, C2 = campaign.CAMPAIGNS[1], campaign.CAMPAIGNS[2]
STUDY_NAME = "oucl-shared"


def _study_row() -> dict:
    return next(r for r in study.read_rows() if r["name"] == STUDY_NAME)


def _rows2() -> list[dict]:
    return campaign.read_rows(campaign=2)


# ---------------------------------------------------------------------- the definitions
def test_campaigns_are_one_dict_literal_and_campaign_1_is_unchanged():
    source = (REPO / "metaug_release" / "campaign.py").read_text()
    assigns = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Assign)
               and any(isinstance(t, ast.Name) and t.id == "CAMPAIGNS" for t in n.targets)]
    assert len(assigns) == 1 and isinstance(assigns[0].value, ast.Dict)
    assert sorted(campaign.CAMPAIGNS) == [1, 2] and all(n == c.number for n, c in campaign.CAMPAIGNS.items())
    # campaign 1's names and files as before
    assert (campaign.RECIPE, campaign.RUN, campaign.LEGS, campaign.SECTION) == (
        C1.recipe, REPO / "runs" / "cifar10-alexnet32-metaug" / "full", 5, "campaign")
    assert C1.recipe.name == "cifar10-alexnet32-metaug.json" and C1.method == "metaug"
    assert C1.eval_path(3) == REPO / "benchmarks" / "campaign" / "leg3.json"
    # campaign 2: the study's winner, its run folders, six legs as planned, records under c2/
    recipe = json.loads(C2.recipe.read_text())
    assert C2.recipe == REPO / "metaug_training" / "recipes" / "study-oucl-shared.json" and C2.method == "oucl"
    assert C2.run_dir == REPO / "runs" / "study" / "oucl-shared"
    assert (recipe["run"]["out_dir"], recipe["run"]["warm_start"]) == (
        str(C2.full.relative_to(REPO)), str(C2.state.relative_to(REPO)))
    assert C2.legs == recipe["_plan"]["legs"] == 6
    assert C2.eval_path(2) == REPO / "benchmarks" / "campaign" / "c2" / "leg2.json"
    assert C2.label == "campaign 2, MetAug (only OUCL)" and C1.label == "campaign 1, MetAug"
    # each campaign ships its own pair: campaign 2 the default aliases, campaign 1 the MetAug ones
    assert (C1.alias("fc"), C2.alias("fc")) == ("cifar10-metaug-fc", "cifar10-fc")
    assert C1.folder("conv") == REPO / "hub" / "cifar10-metaug-conv"
    assert C1.diagnostics == REPO / "benchmarks" / "meta_diagnostics" / "campaign1-final.json" and C2.diagnostics is None


def test_rows_without_campaign_are_campaign_1_and_file_order_is_campaign_then_leg():
    rows = campaign.all_rows()
    assert [(campaign.campaign_of(r), r["leg"]) for r in rows] == sorted((campaign.campaign_of(r), r["leg"]) for r in rows)
    assert all("campaign" not in r for r in campaign.read_rows())
    assert [r["leg"] for r in campaign.read_rows()] == [1, 2, 3, 4, 5]
    assert all(r["campaign"] == 2 for r in _rows2()) and [r["leg"] for r in _rows2()] == list(range(1, len(_rows2()) + 1))
    with pytest.raises(Exception, match="no campaign 9"):
        campaign.get_campaign(9)


# ---------------------------------------------------------------------- leg 1: the study's run
def test_leg_1_row_is_the_study_records():
    """Campaign 2's leg 1 is the recipe study's candidate run: the row's numbers are those of the
    study's final evaluation and the run's committed log, recomputed here."""
    row = campaign.row_of(_rows2(), 1)
    srow = _study_row()
    ev = load_evaluation(REPO / srow["eval"])
    assert row["eval"] == srow["eval"] == "benchmarks/recipe_study/oucl-shared.json"
    assert row["training_minutes"] == srow["training_minutes"] == minutes_up_to(C2.run_dir, row["step"]) == 121.5
    assert (row["step"], row["epoch"], row["planned_epochs"]) == (srow["step"], srow["epochs"], srow["planned_epochs"])
    assert row["epoch"] == round(float(ev.provenance["epochs"]), 3) == 46.759
    assert (row["knn_conv_k200"], row["knn_fc_k200"], row["probe_conv"], row["probe_fc"]) == (
        srow["knn_conv_k200"], srow["knn_fc_k200"], srow["probe_conv"], srow["probe_fc"]) == (61.47, 63.54, 71.5, 71.3)
    assert (row["leg_minutes"], row["leg_epochs"]) == (row["training_minutes"], row["epoch"])  # from the run's start
    assert abs(row["images_per_s"] - srow["images_per_s"]) < 0.5
    assert row["weights_sha256"] == ev.weights_sha256 and row["released"] is False
    # what `python -m metaug_release campaign row --campaign 2 --leg 1 --eval ...` computes, nothing typed in
    expected = campaign.make_row(1, ev, C2.run_dir, [], campaign=2)
    assert {k: row[k] for k in expected if k != "date_utc"} == {k: v for k, v in expected.items() if k != "date_utc"}
    assert row["date_utc"] == ev.date_utc


def test_campaign_2_rows_progress_and_agree_with_their_evaluations():
    """What each leg issue asks to show: a higher epoch than the last row, at least 80% of the ~125
    training minutes a leg is allotted, and numbers that are the evaluation's. The last leg's
    evaluation-only row (once the schedule is complete) adds no epochs: it comes last and quotes
    the finished leg's step, weights and evaluation."""
    plan = json.loads(C2.recipe.read_text())["_plan"]
    rows = _rows2()
    trained = campaign.training_rows(rows)
    final = campaign.final_evaluation(rows)
    if final is not None:
        assert final is rows[-1] and len(trained) == len(rows) - 1
        last = trained[-1]
        assert campaign.schedule_complete(last, last["planned_epochs"]) and last["released"]
        assert (final["epoch"], final["step"], final["leg_epochs"], final["leg_minutes"]) == (
            last["epoch"], last["step"], 0.0, 0.0)
        assert final["weights_sha256"] == last["weights_sha256"] and final["eval"] == last["eval"]
    previous = 0.0
    for r in trained:
        assert r["epoch"] > previous and r["leg_epochs"] == pytest.approx(r["epoch"] - previous, abs=1e-2)
        if r["epoch"] < r["planned_epochs"]:
            assert r["leg_minutes"] >= 0.8 * plan["leg_training_minutes"], r
        previous = r["epoch"]
        ev = load_evaluation(REPO / r["eval"])
        assert (r["knn_conv_k200"], r["probe_conv"]) == (round(ev["conv"].knn[200], 2), round(ev["conv"].probe, 2))
        assert r["step"] == ev.provenance["steps"] and ev.provenance["method"] == "oucl"


def test_make_row_refuses_weights_past_the_runs_log():
    """An evaluation of weights the run's log does not reach (another run's, or a stale log) is refused."""
    ev = load_evaluation(REPO / _study_row()["eval"])
    report = json.loads(json.dumps(ev.report))
    report["inputs"]["model"]["provenance"]["steps"] = 10 ** 7
    with pytest.raises(Exception, match="past the last step"):
        campaign.make_row(1, replace(ev, report=report), C2.run_dir, [], campaign=2)


@pytest.mark.skipif(not has_compact_state(C2.state), reason="no committed campaign-2 state")
def test_committed_state_is_at_the_last_campaign_2_row_and_continues_the_recipe():
    state = load_compact_state(C2.state)
    assert state["step"] == _rows2()[-1]["step"]
    changed = [k for k in diff_keys(TrainConfig.from_dict(state["config"]), load_config(str(C2.recipe)))
               if not k.startswith("run.")]
    assert changed in ([], ["data.path"])
    own = sum(p.stat().st_size for p in C2.state.iterdir())
    assert own <= 30 * 1000 * 1000


# ---------------------------------------------------------------------- tables, plot, plan
def test_both_campaigns_render_into_the_sections():
    """CAMPAIGN.md keeps campaign 1's table and has campaign 2's as a second one; RESULTS.md has
    campaign 2's legs: all exactly what the rows give."""
    assert read_section(campaign.DOC, "campaign") == campaign.rows_table(campaign.read_rows()).strip("\n")
    assert read_section(campaign.DOC, C2.section) == campaign.rows_table(_rows2()).strip("\n")
    assert read_section(RESULTS, C2.section) == campaign.results_section(2, _rows2()).strip("\n")
    body = read_section(campaign.DOC, C2.section)
    for key in ("knn_conv_k200", "knn_fc_k200", "probe_conv"):
        assert all(f"| {r[key]:.2f} |" in body for r in _rows2())
    assert "46.76 of 284" in body and "121.50" in body

    final = campaign.final_evaluation(_rows2())
    if final is not None:   # leg 6 has run: its table compares with campaign 1's final model
        released = campaign.current_release_row(_rows2())
        assert read_section(RESULTS, campaign_final.final_section(2)) == campaign_final.final_table(
            final, released, earlier=campaign_final.earlier_finals(2)).strip("\n")


def test_plot_fingerprint_covers_both_campaigns(tmp_path):
    rows = campaign.all_rows()
    assert {campaign.campaign_of(r) for r in rows} == {1, 2}
    assert Image.open(campaign.PNG).text["rows_sha256"] == campaign.rows_sha256(rows)   # the committed plot
    campaign.plot(rows, tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").text["rows_sha256"] == campaign.rows_sha256(rows)
    moved = rows[:-1] + [dict(rows[-1], knn_conv_k200=rows[-1]["knn_conv_k200"] + 1)]
    assert campaign.rows_sha256(moved) != campaign.rows_sha256(rows)


def test_campaign_2_plan_arithmetic_is_in_campaign_md():
    """CAMPAIGN.md's campaign-2 numbers follow from the recipe's _plan and leg 1's row."""
    recipe = json.loads(C2.recipe.read_text())
    plan, o = recipe["_plan"], recipe["optim"]
    steps_per_epoch = 50000 // o["batch_size"]
    assert plan["epoch_images"] == steps_per_epoch * o["batch_size"] == 49920
    assert plan["epochs"] == math.floor(plan["legs"] * plan["leg_training_minutes"] * 60 * plan["measured_img_per_s"]
                                        / plan["epoch_images"]) == o["epochs"]
    leg1 = campaign.row_of(_rows2(), 1)
    left = plan["epochs"] * steps_per_epoch - leg1["step"]
    doc = " ".join(campaign.DOC.read_text().split())
    per_leg = plan["leg_training_minutes"] * 60 * plan["measured_img_per_s"] / plan["epoch_images"]
    for text in (f"{plan['epochs'] * steps_per_epoch:,} steps", f"{left:,} steps = {left / steps_per_epoch:.2f} epochs",
                 f"{left * o['batch_size'] / plan['measured_img_per_s'] / 60:.1f} at {plan['measured_img_per_s']} img/s",
                 f"({left * o['batch_size'] / leg1['images_per_s'] / 60:.1f} at leg 1's {leg1['images_per_s']})",
                 f"| {per_leg:.1f} |", "bash benchmarks/study_start.sh metaug_training/recipes/study-oucl-shared.json MINUTES",
                 "bash benchmarks/campaign_leg.sh LEG 2", "with >= 35 of the 180 minutes left"):
        assert text in doc, text


def test_campaign_2_final_table_compares_with_campaign_1s_final(tmp_path):
    """Leg 6's RESULTS table: campaign 2's final model (MetAug (only OUCL)) first, campaign 1's final
    model (MetAug, its paper probe and compute from its own rows, shipped as hub/cifar10-metaug-*)
    beside it, and a reading whose differences are the two rows' numbers subtracted."""
    row = campaign.current_release_row(_rows2())
    released = dict(row, epoch=float(row["planned_epochs"]))          # as if it had finished the schedule
    ev = load_evaluation(REPO / released["eval"])
    reports = {layer: paper_probe_report(tmp_path / f"{layer}.json", layer, top1, ev.provenance)
               for layer, top1 in (("conv", 74.5), ("fc", 76.0))}
    final = campaign_final.final_row(C2.legs, released, reports, date_utc="2026-12-08T12:00:00Z")
    assert final["campaign"] == 2 and final["leg"] == 6 and final["training_minutes"] == row["training_minutes"]
    earlier = campaign_final.earlier_finals(2)
    (f1, r1), = earlier
    assert campaign.campaign_of(r1) == 1 and (f1["paper_probe_conv"], f1["paper_probe_fc"]) == (72.73, 75.05)
    assert campaign_final.earlier_finals(1) == []
    table = campaign_final.final_table(final, released, earlier=earlier)
    ev1 = load_evaluation(REPO / r1["eval"])
    assert table.startswith("## Training campaign 2: the final model's full evaluation (#34, #36-#40)")
    assert "`bash benchmarks/campaign_final.sh 6 2`" in table
    lines = table.splitlines()
    ours = [x for x in lines if x.startswith("| **MetAug (only OUCL), campaign 2 final** (`hub/cifar10-")]
    theirs = [x for x in lines if x.startswith("| MetAug, campaign 1 final (`hub/cifar10-metaug-")]
    assert len(ours) == len(theirs) == 2
    assert "| conv | 74.50 |" in ours[0] and "| fc | 76.00 |" in ours[1]
    assert f"| conv | 72.73 | {ev1['conv'].probe:.2f} | {ev1['conv'].knn[200]:.2f} |" in theirs[0]
    reading = next(x for x in lines if x.startswith("Against campaign 1's final model (MetAug"))
    assert f"paper probe `conv` {74.5 - 72.73:+.2f} (74.50 vs 72.73), `fc` {76.0 - 75.05:+.2f}" in reading
    assert f"`conv` {ev['conv'].probe - ev1['conv'].probe:+.2f} ({ev['conv'].probe:.2f} vs {ev1['conv'].probe:.2f})" in reading
    assert f"{row['training_minutes'] / f1['training_minutes']:.2f}x its training minutes" in reading
    assert campaign_final.final_section(2) == "campaign2_final" and campaign_final.final_section(1) == "campaign_final"
    text = " ".join(readme_module.readme_section([readme_module.ShippedPair(released, ev, final, {"conv": 1, "fc": 1})]).split())
    assert "`bash benchmarks/campaign_final.sh 6 2`" in text and "campaign 2's final model" in text
    assert "| paper linear probe |" in text and "| 74.50 |" in text
    # campaign 1's table has no such comparison (and is what it was: test_release_package)
    released1 = campaign.current_release_row(campaign.read_rows())
    assert "Against campaign" not in campaign_final.final_table(f1, released1)


def test_final_script_takes_the_campaign():
    script = (REPO / "benchmarks" / "campaign_final.sh").read_text().split("set -euo")[1]
    assert 'campaign paths --campaign "$CAMPAIGN"' in script and "OUT=$OUTDIR" in script
    for sub in ("final", "recard", "readme"):
        assert f'python -m metaug_release campaign {sub} --campaign "$CAMPAIGN"' in script, sub
    # the README's released leg is the campaign's own last one (campaign readme without --leg),
    # never a path of campaign 1 typed into the script
    assert "benchmarks/campaign\n" not in script and "read_rows(" not in script
    assert script.rstrip().endswith('python -m metaug_release campaign readme --campaign "$CAMPAIGN"   # its last released leg')

# ---------------------------------------------------------------------- the scripts and the command
@pytest.mark.parametrize("script", ["campaign_leg.sh", "campaign_start.sh", "campaign_final.sh"])
def test_campaign_scripts_parse(script):
    res = subprocess.run(["bash", "-n", str(REPO / "benchmarks" / script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_leg_script_takes_its_paths_from_the_campaign_definition():
    res = CliRunner().invoke(release_cli, ["campaign", "paths", "--campaign", "2", "--leg", "3"])
    assert res.exit_code == 0, res.output
    assert dict(line.split("=", 1) for line in res.output.split()) == {
        "RECIPE": "metaug_training/recipes/study-oucl-shared.json", "RUN": "runs/study/oucl-shared/full",
        "STATE": "runs/study/oucl-shared/state", "COMMITTED": "runs/study/oucl-shared",
        "OUTDIR": "benchmarks/campaign/c2", "EVAL": "benchmarks/campaign/c2/leg3.json"}
    res = CliRunner().invoke(release_cli, ["campaign", "paths", "--leg", "4"])   # default: campaign 1, as before
    assert "EVAL=benchmarks/campaign/leg4.json" in res.output and "RUN=runs/cifar10-alexnet32-metaug/full" in res.output
    res = CliRunner().invoke(release_cli, ["campaign", "paths", "--campaign", "7"])
    assert res.exit_code == 2 and "no campaign 7" in res.output
    script = (REPO / "benchmarks" / "campaign_leg.sh").read_text()
    assert 'campaign paths --campaign "$CAMPAIGN"' in script and "cifar10-alexnet32-metaug" not in script.split("set -euo")[1]
    for sub in ("row", "plot", "cards", "readme", "final", "recard"):
        res = CliRunner().invoke(release_cli, ["campaign", sub, "--help"])
        assert "--campaign" in res.output, sub


# ---------------------------------------------------------------------- OUCL cards
def _shipped_method_label() -> str:
    """The method the shipped hub/ folders were trained with: that of the recipe current_release.json names."""
    recipe = json.loads((REPO / "benchmarks" / "current_release.json").read_text())["recipe"]
    return campaign.METHOD_LABELS[json.loads((REPO / recipe).read_text())["method"]]


def _c2_release_inputs(tmp_path: Path) -> tuple:
    """A campaign-2 row as a leg would release it, with a full evaluation (k-means included; the
    study's report has none, so campaign 1's leg-4 report stands in for the numbers)."""
    ev = load_evaluation(REPO / "benchmarks" / "campaign" / "leg4.json")
    row = dict(campaign.row_of(_rows2(), 1), released=True, eval="benchmarks/campaign/leg4.json")
    return ev, row


def test_campaign_2_cards_say_oucl_and_never_metaug(tmp_path):
    from metaug_features import load_encoder
    from metaug_training.model_card import render_card

    ev, row = _c2_release_inputs(tmp_path)
    specs, summary = campaign_cards.card_specs(ev, row)
    assert "MetAug (only OUCL), this model" in summary and "MetAug (this model)" not in summary
    assert summary.startswith("Campaign 2, leg 1 of 6 (`study-oucl-shared.json`)")
    config = load_encoder(REPO / "hub" / "cifar10-conv").config
    # the provenance an OUCL run's export records (the study run's, as its evaluation report keeps it)
    oucl = replace(config, provenance=load_evaluation(REPO / _study_row()["eval"]).provenance)
    assert oucl.provenance["method"] == "oucl"
    for layer, spec in specs.items():
        assert spec["recipe"]["method"] == "oucl" and "meta step" not in spec["budget"]
        assert spec["budget"]["campaign"].startswith("campaign 2, leg 1 of 6")
        assert "CPU training campaign 2" in spec["notes"][0] and "Training in progress" in spec["notes"][0]
        assert {r["model"] for r in spec["comparison"]} >= {"MetAug (only OUCL), this model"}
        assert spec["repo_id"].endswith(f"/metaug-only-oucl-alexnet32-cifar10-{layer}") and "sections" not in spec
        text = render_card(oucl, spec["metrics"], **{k: spec[k] for k in ("recipe", "budget", "hardware", "comparison",
                                                                             "repo_id", "notes", "comparison_title")})
        assert "trained with **MetAug (only OUCL)**" in text and "no meta feature augmentation" in text
        assert "trained with **MetAug**" not in text and "MetAug (this model)" not in text
        assert "\n- oucl\n" in text and "\n- metaug\n" not in text   # tags
    # The shipped default cards name the method of the release's recipe (campaign 1: MetAug, campaign 2:
    # MetAug (only OUCL)), never the other one.
    shipped = _shipped_method_label()
    other = "OUCL" if shipped == "MetAug" else "MetAug"
    for layer in ("conv", "fc"):
        card = (REPO / "hub" / f"cifar10-{layer}" / "README.md").read_text()
        assert f"trained with **{shipped}**" in card and f"trained with **{other}**" not in card


def test_campaign_2_readme_section_says_oucl(tmp_path):
    ev, row = _c2_release_inputs(tmp_path)
    text = " ".join(readme_module.readme_section([readme_module.ShippedPair(row, ev, None, {"conv": 1, "fc": 1})]).split())
    assert "identical `conv` features): **MetAug (only OUCL)** (the MetAug paper's Table 1 name" in text
    assert "no meta step), `alexnet32` width 0.5" in text and "| MetAug (only OUCL) |" in text
    assert "**MetAug**" not in text and "| MetAug |" not in text and "leg 1 of 6 of CPU training campaign 2" in text
    assert "`bash benchmarks/campaign_leg.sh 1 2`" in text and "study-oucl-shared.json" in text


def test_card_method_comes_from_the_folders_provenance():
    from metaug_features import load_encoder
    from metaug_training.model_card import method_text

    config = load_encoder(REPO / "hub" / "cifar10-conv").config
    assert method_text(config).startswith(f"**{_shipped_method_label()}**")
    assert method_text(replace(config, provenance=dict(config.provenance, method="metaug"))).startswith("**MetAug**")
    assert method_text(replace(config, provenance=dict(config.provenance, method="oucl"))).startswith(
        "**MetAug (only OUCL)**")
    assert method_text(replace(config, provenance=dict(config.provenance, method="cmc"))).startswith("**CMC**")
    unknown = method_text(replace(config, provenance={}))
    assert "MetAug**" not in unknown and "does not record" in unknown
