"""The training campaign's record (metaug_release.campaign*, CAMPAIGN.md, campaign.jsonl, the
committed resume state) is computed correctly and agrees with itself, the recipe's plan and the
release."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from _release_helpers import paper_probe_report

from metaug_features.errors import MetAugError
from metaug_release import campaign, campaign_cards, campaign_final, cards, run_log, sections
from metaug_release import readme as readme_section_module
from metaug_release.records import load_evaluation
from metaug_training.compact_state import has_compact_state, load_compact_state
from metaug_training.config import TrainConfig, diff_keys, load_config

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "metaug_training" / "recipes" / "cifar10-alexnet32-metaug.json"
STATE = REPO / "runs" / "cifar10-alexnet32-metaug" / "state"
JSONL = REPO / "benchmarks" / "campaign.jsonl"
LEG_BUDGET_BYTES = 30 * 1000 * 1000


def _rows() -> list[dict]:
    """Campaign 1's rows (those without a ``campaign`` field; campaign 2's: tests/release/test_campaign2.py)."""
    rows = [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()] if JSONL.is_file() else []
    return [r for r in rows if r.get("campaign", 1) == 1]


def test_training_time_counts_logged_intervals_across_kills_and_legs():
    """Records every 50 steps at 100 img/s (batch 100: 1 s per step); a kill after step 800
    resumes from the checkpoint at 780 (20 steps redone, counted: they took time); a leg that
    stopped at its deadline (step 1234) is continued by the next leg from there."""
    recs = [{"step": s, "img_per_s": 100.0} for s in range(50, 801, 50)]     # 800 steps
    recs += [{"step": 800, "img_per_s": 100.0}]                               # resumed at 780: 20
    recs += [{"step": s, "img_per_s": 50.0} for s in range(850, 1201, 50)]     # 400 steps at 2 s
    recs += [{"step": 1234, "img_per_s": 50.0}, {"event": "stop", "step": 1234}]  # 34 at 2 s
    recs += [{"step": 1250, "img_per_s": 100.0}]                              # next leg: 16
    seconds, steps = run_log.training_time(recs, batch_size=100, ckpt_every=390)
    assert steps == 800 + 20 + 400 + 34 + 16
    assert seconds == pytest.approx(800 + 20 + 800 + 68 + 16)
    leg2_s, leg2_steps = run_log.training_time(recs, 100, 390, after_step=1234)
    assert (leg2_s, leg2_steps) == (pytest.approx(16.0), 16)


def test_recipe_plan_arithmetic():
    """Total epochs = what the legs reach at the measured speed, rounded down; the recipe runs it."""
    recipe = json.loads(RECIPE.read_text())
    plan, cfg = recipe["_plan"], load_config(str(RECIPE))
    assert plan["epoch_images"] == (50000 // cfg.optim.batch_size) * cfg.optim.batch_size
    reach = plan["legs"] * plan["leg_training_minutes"] * 60 * plan["measured_img_per_s"] / plan["epoch_images"]
    assert plan["epochs"] == math.floor(reach) == cfg.optim.epochs
    assert cfg.optim.schedule == "cosine" and cfg.method == "metaug" and list(cfg.model.views) == ["l", "ab", "ori"]
    assert (cfg.model.width, cfg.optim.batch_size, cfg.metaug.meta_every) == (0.5, 128, 16)
    assert cfg.run.warm_start == str(STATE.relative_to(REPO))
    doc = (REPO / "benchmarks" / "CAMPAIGN.md").read_text()
    assert f"{plan['measured_img_per_s']}" in doc and f"{plan['epochs']} epochs" in doc


def test_plot_is_written(tmp_path):
    rows = [{"leg": 1, "epoch": 30.0, "planned_epochs": 165, "training_minutes": 120.0, "knn_conv_k200": 50.0,
             "knn_fc_k200": 48.0, "probe_conv": 60.0}]
    campaign.plot(rows, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not JSONL.is_file(), reason="no campaign legs recorded yet")
def test_rows_progress_and_agree_with_their_evaluations_and_the_doc():
    rows = _rows()
    plan = json.loads(RECIPE.read_text())["_plan"]
    per_leg = plan["epochs"] / plan["legs"]
    doc = (REPO / "benchmarks" / "CAMPAIGN.md").read_text()
    assert [r["leg"] for r in rows] == list(range(1, len(rows) + 1))
    final = campaign.final_evaluation(rows)
    if final is not None:
        # The last leg's evaluation-only row: it comes last, after the schedule finished, adds no
        # epochs, and quotes the released weights and their paper-probe reports.
        assert final is rows[-1] and len(campaign.training_rows(rows)) == len(rows) - 1
        last = rows[-2]
        assert campaign.schedule_complete(last, plan["epochs"]) and last["released"]
        assert (final["epoch"], final["step"], final["leg_epochs"]) == (last["epoch"], last["step"], 0.0)
        assert final["weights_sha256"] == last["weights_sha256"] and final["eval"] == last["eval"]
        for layer in ("conv", "fc"):
            res = campaign_final.paper_probe_result(REPO / final["paper_probe_reports"][layer])
            assert res["layer"] == layer and final[f"paper_probe_{layer}"] == res["top1"]
            assert f"{res['top1']:.2f}" in doc
        rows = campaign.training_rows(rows)
    previous = 0.0
    for r in rows:
        assert r["epoch"] > previous
        assert r["leg_epochs"] == pytest.approx(r["epoch"] - previous, abs=1e-2)
        assert r["leg_epochs"] >= (0.5 if r["leg"] == 1 else 0.8) * per_leg, r
        previous = r["epoch"]
        ev = load_evaluation(REPO / r["eval"])
        assert r["knn_conv_k200"] == round(ev["conv"].knn[200], 2)
        assert r["knn_fc_k200"] == round(ev["fc"].knn[200], 2)
        assert r["probe_conv"] == round(ev["conv"].probe, 2)
        assert r["step"] == ev.provenance["steps"]
        for key in ("knn_conv_k200", "knn_fc_k200", "probe_conv"):
            assert f"{r[key]:.2f}" in doc, f"CAMPAIGN.md lacks leg {r['leg']}'s {key}"


@pytest.mark.skipif(not JSONL.is_file(), reason="no campaign legs recorded yet")
def test_release_is_the_last_released_leg():
    current = json.loads((REPO / "benchmarks" / "current_release.json").read_text())
    row = campaign.current_release_row()   # of any campaign: the latest released leg
    if row is None:
        assert current["record"] == "benchmarks/release"
        return
    c = campaign.CAMPAIGNS[campaign.campaign_of(row)]
    assert current["evaluation"] == row["eval"]
    assert current["recipe"] == str(c.recipe.relative_to(REPO))
    assert current["record"] == str(c.out.relative_to(REPO))


@pytest.mark.skipif(not has_compact_state(STATE), reason="no committed resume state yet")
def test_committed_state_loads_and_continues_the_recipe():
    """The committed state reads (every file's sha256 checked), is at the last leg's step, and
    belongs to the recipe's run (only run.* may differ)."""
    state = load_compact_state(STATE)
    rows = _rows()
    assert rows and state["step"] == rows[-1]["step"]
    cfg = load_config(str(RECIPE))
    changed = [k for k in diff_keys(TrainConfig.from_dict(state["config"]), cfg) if not k.startswith("run.")]
    assert changed in ([], ["data.path"])
    assert state["mags"] is not None and len(state["encoder"]) > 0
    # A copy of a former release's weights kept beside the state (release-fc.safetensors: campaign 1's
    # hub/cifar10-fc, moved there when campaign 2 re-released) is a blob the repository already holds.
    copies = {Path(ref["file"]).name for ref in json.loads((STATE / "state.json").read_text())["references"].values()
              if "/" not in ref["file"]}
    own = sum(p.stat().st_size for p in STATE.iterdir() if p.name not in copies)
    release = sum(p.stat().st_size for layer in ("conv", "fc") for p in (REPO / "hub" / f"cifar10-{layer}").iterdir())
    assert own + release <= LEG_BUDGET_BYTES, f"a leg may add at most 30 MB: state {own} + release {release} bytes"


@pytest.mark.skipif(not JSONL.is_file(), reason="no campaign legs recorded yet")
def test_readme_release_section_is_generated_from_the_release_record():
    """The README's released-models table and paragraphs are exactly what `python -m metaug_release campaign readme`
    renders from every shipped pair's released row, its evaluation and the shipped folders' sizes; the
    default pair (the latest released leg of any campaign) comes first."""
    row = campaign.current_release_row()   # of any campaign: the latest released leg
    if row is None:
        pytest.skip("no campaign leg released yet")
    pairs = readme_section_module.shipped_pairs()
    assert pairs[0].row == row and pairs[0].campaign.alias("conv") == "cifar10-conv"
    assert [p.campaign.number for p in pairs] == [c.number for c in campaign.shipped_campaigns()]
    expected = readme_section_module.readme_section(pairs)
    readme = (REPO / "README.md").read_text()
    begin, end = sections.markers("release")
    assert readme.count(begin) == readme.count(end) == 1
    assert readme[readme.index(begin) + len(begin):readme.index(end)].strip("\n") == expected.strip("\n")
    planned = row["planned_epochs"]
    trained = (f"the whole {planned}-epoch schedule" if campaign.schedule_complete(row, planned)
               else f"{row['epoch']:.1f} of a planned")
    assert f"campaign_leg.sh {row['leg']}" in expected and trained in " ".join(expected.split())


@pytest.mark.skipif(not JSONL.is_file(), reason="no campaign legs recorded yet")
def test_cards_and_readme_say_whether_the_schedule_is_complete():
    """A leg before the end of the schedule is labelled as training in progress; the leg that
    reaches the planned epochs is labelled the final model, with the schedule complete."""
    row = _rows()[0]
    ev = load_evaluation(REPO / row["eval"])
    planned = json.loads(RECIPE.read_text())["optim"]["epochs"]
    sizes = {"conv": 1, "fc": 1}
    for epoch, final in ((planned / 2, False), (float(planned), True)):
        r = dict(row, epoch=epoch)
        assert campaign.schedule_complete(r, planned) is final
        specs, _ = campaign_cards.card_specs(ev, r)
        for layer in ("conv", "fc"):
            note = specs[layer]["notes"][0]
            assert ("Final model" in note) is final and ("Training in progress" in note) is not final
            assert specs[layer]["budget"]["learning-rate schedule"].endswith("(complete)") is final
        pair = readme_section_module.ShippedPair(r, ev, None, sizes)
        text = " ".join(readme_section_module.readme_section([pair]).split())  # unwrapped
        assert ("the campaign's final model" in text) is final and ("later legs replace it" in text) is not final


def test_write_section_is_idempotent_and_keeps_the_text_around(tmp_path):
    path = tmp_path / "doc.md"
    path.write_text("# Title\n\n<!-- s:start -->\nold\n<!-- s:end -->\n\n## Next\n")
    for _ in range(2):
        sections.write_section(path, "new\n", "s")
        assert path.read_text() == "# Title\n\n<!-- s:start -->\nnew\n<!-- s:end -->\n\n## Next\n"


# ---------------------------------------------------------------------- the last leg's evaluation
def _final_inputs(tmp_path: Path, conv: float, fc: float) -> tuple[int, dict, dict, dict[str, Path]]:
    """(planned epochs, a released row moved to the end of the schedule, its evaluation, paper-probe
    reports of its weights with top-1 ``conv`` and ``fc``)."""
    planned = json.loads(RECIPE.read_text())["optim"]["epochs"]
    row = next(r for r in campaign.training_rows(_rows()) if r.get("released"))
    released, ev = dict(row, epoch=float(planned), planned_epochs=planned), load_evaluation(REPO / row["eval"])
    prov = ev.provenance
    reports = {"conv": paper_probe_report(tmp_path / "c.json", "conv", conv, prov),
               "fc": paper_probe_report(tmp_path / "f.json", "fc", fc, prov)}
    return planned, released, ev, reports


@pytest.mark.skipif(not JSONL.is_file(), reason="no campaign legs recorded yet")
def test_final_row_takes_the_paper_probe_of_the_released_weights(tmp_path):
    """The evaluation-only row copies the released row's position and fast numbers, adds no
    epochs, and carries both layers' paper-probe accuracy; the cards and README gain them."""
    planned, released, ev, reports = _final_inputs(tmp_path, 80.123, 81.5)
    final = campaign_final.final_row(released["leg"] + 1, released, reports, date_utc="2026-12-03T20:00:00Z")
    assert final["kind"] == campaign.FINAL_KIND and final["leg_epochs"] == 0.0 and final["images_per_s"] is None
    assert (final["epoch"], final["step"], final["knn_conv_k200"]) == (planned, released["step"], released["knn_conv_k200"])
    assert (final["paper_probe_conv"], final["paper_probe_fc"]) == (80.12, 81.5)
    assert final["paper_probe_summary"] == "1 seed, mean test top-1 of the last 5 epochs"
    assert final["paper_probe_minutes"] == {"conv": 38.0, "fc": 38.0}
    specs, _ = campaign_cards.card_specs(ev, released, final=final)
    for layer, value in (("conv", 80.12), ("fc", 81.5)):
        metric = specs[layer]["metrics"][-1]
        assert (metric["name"], metric["value"]) == ("paper linear probe, 60 epochs (%s)" % layer, value)
        assert "80.12" in specs[layer]["notes"][0] and "81.50" in specs[layer]["notes"][0]
        assert [m["name"] for m in specs[layer]["metrics"][:-1]] == [m["name"] for m in campaign_cards.card_specs(ev, released)[0][layer]["metrics"]]
    pair = readme_section_module.ShippedPair(released, ev, final, {"conv": 1, "fc": 1})
    text = " ".join(readme_section_module.readme_section([pair]).split())
    assert "| paper linear probe |" in text and "| 80.12 |" in text and "campaign_final.sh" in text
    table = campaign_final.final_table(final, released)
    assert "| 80.12 |" in table and "| 87.87 |" in table and "| 88.12 |" in table and "not measured" in table
    assert f"{87.87 - 80.12:.2f} / {88.12 - 81.5:.2f} points below" in table
    campaign.plot(campaign.training_rows(_rows()) + [final], tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not JSONL.is_file(), reason="no campaign legs recorded yet")
def test_final_row_refuses_what_is_not_the_final_evaluation(tmp_path):
    planned, released, ev, good = _final_inputs(tmp_path, 80.0, 81.0)
    prov = ev.provenance
    leg = released["leg"] + 1
    with pytest.raises(MetAugError, match="schedule is not complete"):
        campaign_final.final_row(leg, dict(released, epoch=planned / 2), good)
    with pytest.raises(MetAugError, match="must come after"):
        campaign_final.final_row(released["leg"], released, good)
    with pytest.raises(MetAugError, match="not the paper's protocol"):   # a reduced-budget timing run
        campaign_final.final_row(leg, released, dict(good, fc=paper_probe_report(tmp_path / "r.json", "fc", 69.0, prov, epochs=1)))
    with pytest.raises(MetAugError, match="probes layer 'conv'"):
        campaign_final.final_row(leg, released, dict(good, fc=good["conv"]))
    with pytest.raises(MetAugError, match="other weights"):
        other = dict(prov, steps=prov["steps"] - 1)
        campaign_final.final_row(leg, released, dict(good, fc=paper_probe_report(tmp_path / "o.json", "fc", 81.0, other)))
    (tmp_path / "x.json").write_text(json.dumps({"format": "metaug-eval-report", "version": 2, "inputs": {},
                                                 "evaluations": [{"name": "knn"}]}))
    with pytest.raises(MetAugError, match="not a `metaug-eval paper-probe` report"):
        campaign_final.final_row(leg, released, dict(good, fc=tmp_path / "x.json"))
    (tmp_path / "y.json").write_text(json.dumps({"evaluations": [{"name": "paper_probe"}]}))
    with pytest.raises(MetAugError, match="not a metaug-eval-report file"):
        campaign_final.final_row(leg, released, dict(good, fc=tmp_path / "y.json"))
    with pytest.raises(MetAugError, match="cannot read"):
        campaign_final.final_row(leg, released, dict(good, fc=tmp_path / "missing.json"))


@pytest.mark.parametrize(("number", "layer"), [(n, layer) for n in (1, 2) for layer in ("conv", "fc")])
def test_recard_renders_the_shipped_card_from_its_spec_byte_exact(tmp_path, number, layer):
    """`python -m metaug_release campaign recard` (no checkpoint) renders exactly what `metaug-export --card-metrics`
    wrote: re-rendering each shipped folder (campaign 2: hub/cifar10-*, the default; campaign 1:
    hub/cifar10-metaug-*) from its committed card file changes nothing."""
    import shutil

    c = campaign.CAMPAIGNS[number]
    src = c.folder(layer)
    card = c.out / f"card-{layer}.json"
    if number == 2:   # the default pair: current_release.json names its record
        assert card.parent == REPO / json.loads((REPO / "benchmarks" / "current_release.json").read_text())["record"]
    if not (src / "README.md").is_file() or not card.is_file():
        pytest.skip("no release folder in this checkout")
    folder = tmp_path / layer
    shutil.copytree(src, folder)
    (folder / "README.md").write_text("stale card\n")
    cards.recard(folder, card)
    assert (folder / "README.md").read_bytes() == (src / "README.md").read_bytes()
    assert (folder / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
