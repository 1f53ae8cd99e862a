"""Names that say what the weights are (issue #54): every shipped folder's card names the method its
own config records. OUCL-trained weights are "MetAug (only OUCL)" (the MetAug paper's Table 1 name
for that ablation) or OUCL, never plain MetAug; MetAug-trained weights say MetAug. Also: the MetAug
pair is campaign 1's final weights bit for bit, its cards carry the meta diagnostics of those
weights when the record exists, and the recipe study's decision says what one seed and one
setting show, no more."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from metaug_features import load_encoder
from metaug_features.errors import MetAugError
from metaug_features.feature_files import sha256_file
from metaug_features.hub import MODEL_ALIASES, RELEASE_TAG
from metaug_release import campaign, campaign_cards, cards, meta_diagnostics_card
from metaug_release.paths import RESULTS
from metaug_release.records import load_evaluation
from metaug_training.model_card import method_tags, sections_text

REPO = Path(__file__).resolve().parents[2]
FOLDERS = sorted(p for p in (REPO / "hub").iterdir() if (p / "config.json").is_file() and p.name in MODEL_ALIASES)
C1 = campaign.CAMPAIGNS[1]
#: A plain MetAug claim: "metaug" in a name that does not also say OUCL.
_PLAIN_METAUG = re.compile(r"metaug", re.I)


def _card(folder: Path) -> tuple[dict, ModelCard, str]:
    config = json.loads((folder / "config.json").read_text())
    card = ModelCard.load(folder / "README.md")
    title = next(line[2:].strip() for line in card.text.splitlines() if line.startswith("# "))
    return config, card, title


def check_names(folder: Path) -> None:
    """The folder's model-index name, title, tags and text say the method its config records."""
    config, card, title = _card(folder)
    method = config["provenance"]["method"]
    name = card.data.model_name
    text = " ".join(card.text.split())
    tags = set(card.data.tags)
    if method == "oucl":
        for what, value in (("model-index name", name), ("title", title)):
            assert "oucl" in value.lower(), f"{folder.name}: the {what} {value!r} does not say OUCL"
        assert "metaug" not in tags and {"oucl", "metaug-only-oucl"} <= tags, (folder.name, tags)
        assert "trained with **MetAug (only OUCL)**" in text and "trained with **MetAug**" not in text
        assert "MetAug (this model)" not in text
    elif method == "metaug":
        for what, value in (("model-index name", name), ("title", title)):
            assert _PLAIN_METAUG.search(value) and "oucl" not in value.lower(), f"{folder.name}: {what} {value!r}"
        assert {"metaug", "meta-feature-augmentation"} <= tags and "oucl" not in tags, (folder.name, tags)
        assert "trained with **MetAug**" in text and "MetAug (only OUCL)**" not in text
    else:
        raise AssertionError(f"{folder.name}: unexpected method {method!r}")
    # the name is the Hub repo the folder's alias points to, at the pinned release
    repo_id, revision = MODEL_ALIASES[folder.name]
    assert repo_id.split("/")[-1] == name == title and revision == RELEASE_TAG


def test_every_shipped_folder_is_checked():
    assert [f.name for f in FOLDERS] == sorted(MODEL_ALIASES) == [
        "cifar10-conv", "cifar10-fc", "cifar10-metaug-conv", "cifar10-metaug-fc"]


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_shipped_card_names_the_method_of_its_weights(folder):
    check_names(folder)


def test_the_check_fails_on_an_oucl_folder_named_metaug(tmp_path):
    """The check can fail: the OUCL card with its old name (v0.2.0) and tags is refused."""
    folder = tmp_path / "cifar10-conv"
    shutil.copytree(REPO / "hub" / "cifar10-conv", folder)
    text = (folder / "README.md").read_text()
    old = text.replace("metaug-only-oucl-alexnet32", "metaug-alexnet32").replace("- metaug-only-oucl\n- oucl\n", "- metaug\n")
    (folder / "README.md").write_text(old)
    with pytest.raises(AssertionError, match="does not say OUCL"):
        check_names(folder)
    (folder / "README.md").write_text(text.replace("**MetAug (only OUCL)**", "**MetAug**"))
    with pytest.raises(AssertionError):
        check_names(folder)


def test_method_tags_follow_the_provenance():
    config = load_encoder(REPO / "hub" / "cifar10-conv").config
    assert method_tags(config)[:2] == ["metaug-only-oucl", "oucl"] and "metaug" not in method_tags(config)
    metaug = replace(config, provenance=dict(config.provenance, method="metaug"))
    assert method_tags(metaug)[:2] == ["metaug", "meta-feature-augmentation"]
    assert "metaug" not in method_tags(replace(config, provenance={})) and "cifar10" in method_tags(config)


def test_readme_table_says_which_method_each_pair_is():
    readme = (REPO / "README.md").read_text()
    for folder in FOLDERS:
        config, _, _ = _card(folder)
        label = campaign.METHOD_LABELS[config["provenance"]["method"]]
        row = next(x for x in readme.splitlines() if x.startswith(f"| `hub/{folder.name}` (`{folder.name}`) |"))
        assert row.split(" | ")[1] == label, row
    assert campaign.METHOD_LABELS["oucl"] == "MetAug (only OUCL)"


# ---------------------------------------------------------------------- the MetAug pair
def test_metaug_pair_is_campaign_1s_final_weights():
    """hub/cifar10-metaug-fc is the file campaign 1's final rows evaluated (and the copy its
    committed state keeps); hub/cifar10-metaug-conv holds the same tensors up to conv5."""
    rows = campaign.read_rows(campaign=1)
    final = campaign.final_evaluation(rows)
    released = campaign.current_release_row(rows)
    fc, conv = C1.folder("fc"), C1.folder("conv")
    sha = sha256_file(fc / "model.safetensors")
    assert sha == final["weights_sha256"] == released["weights_sha256"] == load_evaluation(REPO / released["eval"]).weights_sha256
    assert sha == sha256_file(C1.state / "release-fc.safetensors")
    assert (final["knn_conv_k200"], final["knn_fc_k200"], final["paper_probe_conv"], final["paper_probe_fc"]) == (
        65.63, 69.5, 72.73, 75.05)
    full, small = load_file(fc / "model.safetensors"), load_file(conv / "model.safetensors")
    assert small and set(small) < set(full)
    assert all(torch.equal(small[k], full[k]) for k in small)
    assert json.loads((conv / "config.json").read_text())["provenance"] == json.loads((fc / "config.json").read_text())["provenance"]


def test_metaug_card_files_name_the_metaug_repos_and_the_default_model():
    for layer in ("conv", "fc"):
        spec = json.loads((C1.out / f"card-{layer}.json").read_text())
        assert spec["repo_id"] == MODEL_ALIASES[f"cifar10-metaug-{layer}"][0]
        assert spec["comparison"][0]["model"] == "MetAug (this model)"
        assert any(n.startswith("**Not the default model.**") and "MetAug (only OUCL)" in n for n in spec["notes"])
        assert (spec["recipe"]["metaug"]["delta"], spec["recipe"]["metaug"]["alpha"]) == (1e-05, 1e-11)
    assert cards.REPO_IDS == {layer: MODEL_ALIASES[f"cifar10-metaug-{layer}"][0] for layer in ("conv", "fc")}


def test_metaug_cards_carry_the_diagnostics_when_recorded():
    """Once benchmarks/meta_diagnostics/campaign1-final.json exists, the MetAug card files and cards
    hold its section exactly as the renderer makes it (re-render: benchmarks/CAMPAIGN.md)."""
    if not C1.diagnostics.is_file():
        for layer in ("conv", "fc"):
            assert meta_diagnostics_card.TITLE not in (C1.folder(layer) / "README.md").read_text()
        pytest.skip(f"no {C1.diagnostics.name} yet")
    row = campaign.current_release_row(campaign.read_rows(campaign=1))
    expected = campaign_cards.meta_diagnostics_sections(C1, row, json.loads(C1.recipe.read_text()))
    assert len(expected) == 1
    for layer in ("conv", "fc"):
        spec = json.loads((C1.out / f"card-{layer}.json").read_text())
        assert spec.get("sections") == expected, "stale card file: run python -m metaug_release campaign cards --campaign 1 --leg 4"
        assert sections_text(expected).strip() in (C1.folder(layer) / "README.md").read_text()


# ---------------------------------------------------------------------- the diagnostics section
def _record(tmp_path: Path, **changes) -> Path:
    """A record of the schema, numbers made up for the test (never a card's)."""
    doc = {"command": "metaug-meta-diagnostics runs/x --json out.json", "date_utc": "2026-01-01T00:00:00Z",
           "machine": "test machine", "weights_sha256": "ab" * 32, "meta_steps": 12, "inner_lr": 0.001,
           "delta": 1e-05, "alpha": 1e-11, "second_order_share": 0.0021, "cos_z_mag": {"l": 0.91, "ab": 0.92, "ori": 0.93},
           "pos_orig": 0.737, "pos_aug": 0.0167, "aug_orig_loss_ratio": 1.597, "reg": 0.25,
           "encoder_step_relative_change": 2.94e-05, "verdict": "Test verdict.", "extra_field": [1, 2]}
    doc.update(changes)
    path = tmp_path / "diag.json"
    path.write_text(json.dumps(doc))
    return path


def test_diagnostics_section_renders_every_number_of_the_record(tmp_path):
    diag = meta_diagnostics_card.load_diagnostics(_record(tmp_path))
    weights = {"ab" * 32: "the released weights, `hub/x-fc/model.safetensors`"}
    sec = meta_diagnostics_card.diagnostics_section(diag, weights, "benchmarks/meta_diagnostics/x.json",
                                                    {"inner_lr": 0.001, "delta": 1e-05, "alpha": 1e-11})
    assert sec["title"] == meta_diagnostics_card.TITLE
    body = sec["body"]
    for text in ("the released weights, `hub/x-fc/model.safetensors`, sha256 `" + "ab" * 32 + "`",
                 "`metaug-meta-diagnostics runs/x --json out.json` (2026-01-01T00:00:00Z; test machine)",
                 "12 meta steps with inner lr 0.001, delta 1e-05, alpha 1e-11 (the training recipe's)",
                 "| 0.0021 |", "`l` / `ab` / `ori`", "| 0.91 / 0.92 / 0.93 |", "| 0.737 / 0.0167 |", "| 1.597 |",
                 "| 0.25 |", "| 2.94e-05 |", "**Verdict** (the record's): Test verdict.",
                 "`benchmarks/meta_diagnostics/x.json`"):
        assert text in body, text
    assert "extra_field" not in body
    other = meta_diagnostics_card.diagnostics_section(diag, weights, "r.json", {"inner_lr": 0.06, "delta": 1e-05, "alpha": 1e-11})
    assert "not the training recipe's: it trained with inner lr 0.06" in other["body"]
    card_text = sections_text([sec])
    assert card_text.startswith(f"\n\n## {meta_diagnostics_card.TITLE}\n\n") and sections_text(None) == ""


def test_diagnostics_of_other_weights_or_a_broken_record_are_refused(tmp_path):
    diag = meta_diagnostics_card.load_diagnostics(_record(tmp_path))
    with pytest.raises(MetAugError, match="none of this model's files"):
        meta_diagnostics_card.diagnostics_section(diag, {"cd" * 32: "other"}, "r.json")
    for change, message in (({"second_order_share": None}, "second_order_share"),
                            ({"second_order_share": 1.5}, "second_order_share"),
                            ({"cos_z_mag": {"l": None}}, "cos_z_mag"), ({"meta_steps": 0}, "meta_steps"),
                            ({"verdict": ""}, "verdict"), ({"pos_aug": float("nan")}, "pos_aug")):
        with pytest.raises(MetAugError, match=message):
            meta_diagnostics_card.load_diagnostics(_record(tmp_path, **change))
    path = _record(tmp_path)
    doc = json.loads(path.read_text())
    del doc["reg"]
    path.write_text(json.dumps(doc))
    with pytest.raises(MetAugError, match=r"missing field\(s\) \['reg'\]"):
        meta_diagnostics_card.load_diagnostics(path)


def test_campaign_1_cards_render_a_record_of_its_weights(tmp_path):
    """The card files of campaign 1 take the section from the campaign's record: a record of the
    committed state's weights renders (named as that file), one of other weights is an error."""
    state_sha = sha256_file(C1.state / "weights.safetensors")
    c = replace(C1, diagnostics=_record(tmp_path, weights_sha256=state_sha))
    row = campaign.current_release_row(campaign.read_rows(campaign=1))
    recipe = json.loads(C1.recipe.read_text())
    (sec,) = campaign_cards.meta_diagnostics_sections(c, row, recipe)
    assert "`runs/cifar10-alexnet32-metaug/state/weights.safetensors` (the encoder and the MAGs)" in sec["body"]
    assert "(the training recipe's)" in sec["body"]
    # an earlier leg's cards get no section; a record of other weights is refused
    assert campaign_cards.meta_diagnostics_sections(c, campaign.row_of(campaign.read_rows(campaign=1), 1), recipe) == []
    bad = replace(C1, diagnostics=_record(tmp_path, weights_sha256="ef" * 32))
    with pytest.raises(MetAugError, match="none of this model's files"):
        campaign_cards.meta_diagnostics_sections(bad, row, recipe)
    assert campaign_cards.meta_diagnostics_sections(campaign.CAMPAIGNS[2], row, recipe) == []   # no meta step


# ---------------------------------------------------------------------- the recipe study's decision
def test_recipe_study_decision_says_what_one_seed_and_one_setting_show():
    text = RESULTS.read_text()
    decision = " ".join(text.split("### Decision: campaign 2 continues `oucl-shared`", 1)[1].split("<!--", 1)[0].split())
    assert "loses to OUCL, plainly" not in decision and "Neither setting has shown" not in decision
    for phrase in ("a single MetAug setting", "(delta 0.25 over the four code terms, alpha 1)", "on one seed",
                   "had not annealed", "this setting trailed OUCL early in training",
                   "It does not show that MetAug loses to OUCL"):
        assert phrase in decision, phrase
    # its numbers are the study's
    for number in ("214 img/s", "0.67x", "55.94 at epoch 31.3", "59.57 at epoch 32", "51.76 at epoch 22",
                   "55.58 at epoch 18", "61.47 / fc 63.54", "70.33", "**MetAug (only OUCL)**"):
        assert number in decision, number
