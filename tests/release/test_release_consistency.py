"""The committed releases agree with their measurements, their recipes, benchmarks/RESULTS.md and
the README: no number on a card was typed in by hand. Every shipped pair is checked: the default
hub/cifar10-{conv,fc} (MetAug (only OUCL), campaign 2; benchmarks/current_release.json names its
records) and hub/cifar10-metaug-{conv,fc} (MetAug, campaign 1's final weights).

Re-measuring the k-NN numbers needs the full CIFAR-10 extraction (minutes); that is
``python -m metaug_release reproduce`` (run by ``benchmarks/campaign_leg.sh`` and ``benchmarks/release.sh``), whose last output is
committed as the record folder's reproduce.json and checked here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from metaug_features import load_encoder
from metaug_features.feature_files import sha256_file
from metaug_release import campaign, campaign_cards, cards
from metaug_release.records import load_evaluation
from metaug_training.publish import validate_model_folder

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Which measurements and recipe the default folders come from (the first release or a campaign leg).
CURRENT = json.loads((REPO_ROOT / "benchmarks" / "current_release.json").read_text())
MAX_FOLDER_BYTES = 25 * 1024 * 1024


@dataclass(frozen=True)
class Release:
    """A shipped pair and the records it was made from."""

    name: str                      # the release name: hub/<name>-conv, hub/<name>-fc
    folders: dict[str, Path]       # layer -> folder
    record: Path                   # card-*.json, reproduce.json
    evaluation: Path               # the evaluation of the released weights
    recipe: Path


def _releases() -> list[Release]:
    """The default pair from current_release.json, then every other campaign's shipped pair."""
    default = Release("cifar10", {layer: REPO_ROOT / "hub" / f"cifar10-{layer}" for layer in ("conv", "fc")},
                      REPO_ROOT / CURRENT["record"], REPO_ROOT / CURRENT["evaluation"], REPO_ROOT / CURRENT["recipe"])
    out = [default] if all((f / "config.json").is_file() for f in default.folders.values()) else []
    for c in campaign.shipped_campaigns():
        if c.release_name == default.name:
            continue
        row = campaign.current_release_row(campaign.read_rows(campaign=c.number))
        out.append(Release(c.release_name, {layer: c.folder(layer) for layer in ("conv", "fc")}, c.out,
                           REPO_ROOT / row["eval"], c.recipe))
    return out


RELEASES = _releases()
PAIRS = [(r, layer) for r in RELEASES for layer in ("conv", "fc")]
_ids = [f"{r.name}-{layer}" for r, layer in PAIRS]

pytestmark = pytest.mark.skipif(not RELEASES, reason="no release folders in this checkout")


def _final_evaluation_of(weights_sha256: str) -> dict | None:
    """The evaluation-only last row (benchmarks/campaign.jsonl, any campaign) of these weights, if
    their campaign's last leg has run."""
    return campaign.final_evaluation([r for r in campaign.all_rows() if r["weights_sha256"] == weights_sha256])


def test_both_pairs_ship_and_the_default_is_campaign_2s():
    """hub/ holds the default pair and the MetAug pair; current_release.json names the default's records."""
    assert [r.name for r in RELEASES] == ["cifar10", "cifar10-metaug"]
    default = campaign.CAMPAIGNS[campaign.campaign_of(campaign.current_release_row())]
    assert default.release_name == "cifar10" and default.out == RELEASES[0].record
    assert CURRENT["evaluated_folder"] == "hub/cifar10-fc"


@pytest.mark.parametrize(("release", "layer"), PAIRS, ids=_ids)
def test_folder_is_valid_small_and_defaults_to_its_layer(release, layer):
    folder = release.folders[layer]
    assert validate_model_folder(folder).ok
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size <= MAX_FOLDER_BYTES, f"{folder} is {size / 2**20:.1f} MiB"
    enc = load_encoder(folder)
    assert enc.config.default_layer == layer and enc.config.truncate_after == layer
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]


@pytest.mark.parametrize("release", RELEASES, ids=[r.name for r in RELEASES])
def test_both_folders_hold_the_same_network(release):
    """<name>-fc extends <name>-conv: identical conv features (same trained weights)."""
    conv, fc = load_encoder(release.folders["conv"]), load_encoder(release.folders["fc"])
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(conv(x), fc(x, "conv"))


@pytest.mark.parametrize(("release", "layer"), PAIRS, ids=_ids)
def test_card_metrics_are_the_measured_ones(release, layer):
    """Card model-index == the metrics metaug_release.cards derives from the evaluation report."""
    measured = load_evaluation(release.evaluation)
    expected = [(m["name"], m["value"]) for m in cards.layer_metrics(measured, layer)]
    final = _final_evaluation_of(measured.weights_sha256)
    if final is not None:
        # the campaign's last leg probed these weights with the paper protocol: its number is on the card
        metric = campaign_cards.paper_probe_metric(final, layer)
        expected.append((metric["name"], metric["value"]))
    card = ModelCard.load(release.folders[layer] / "README.md")
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == expected
    assert card.data.library_name == "metaug-features" and "cifar10" in card.data.tags
    # the card-metrics file the export read: same metrics, and its derived notes are on the card
    spec = json.loads((release.record / f"card-{layer}.json").read_text())
    assert [(m["name"], m["value"]) for m in spec["metrics"]] == expected
    for note in spec.get("notes", []):
        assert note in card.text
    # the evaluated weights are the released ones: same provenance, and the evaluation ran on the
    # shipped fc file's bytes (the conv folder holds the same tensors up to conv5)
    prov = load_encoder(release.folders[layer]).config.provenance
    assert prov == measured.provenance
    assert measured.weights_sha256 == sha256_file(release.folders["fc"] / "model.safetensors")


@pytest.mark.parametrize("release", RELEASES, ids=[r.name for r in RELEASES])
def test_card_knn_is_the_campaign_records(release):
    """The k-NN k=200 on each card is the campaign row's of the same weights (benchmarks/campaign.jsonl)."""
    sha = sha256_file(release.folders["fc"] / "model.safetensors")
    rows = [r for r in campaign.training_rows(campaign.all_rows()) if r["weights_sha256"] == sha and r.get("released")]
    assert rows, f"no released campaign row of {release.folders['fc']}'s weights"
    for layer in ("conv", "fc"):
        card = ModelCard.load(release.folders[layer] / "README.md")
        knn = next(r.metric_value for r in card.data.eval_results if r.metric_name.startswith("weighted k-NN k=200"))
        assert knn == rows[-1][f"knn_{layer}_k200"]


@pytest.mark.parametrize("release", RELEASES, ids=[r.name for r in RELEASES])
def test_provenance_matches_recipe(release):
    recipe = json.loads(release.recipe.read_text())
    enc = load_encoder(release.folders["conv"])
    prov = enc.config.provenance
    assert prov["method"] == recipe["method"] in ("metaug", "oucl")   # campaign 1: MetAug; campaign 2: OUCL
    if recipe["method"] == "metaug":
        assert prov["meta_every"] == recipe["metaug"]["meta_every"]
        assert (prov["delta"], prov["alpha"]) == (recipe["metaug"]["delta"], recipe["metaug"]["alpha"])
    assert prov["batch_size"] == recipe["optim"]["batch_size"]
    assert enc.config.width == recipe["model"]["width"] and list(enc.config.views) == recipe["model"]["views"]
    assert 0 < prov["epochs"] <= recipe["optim"]["epochs"]


@pytest.mark.parametrize("release", RELEASES, ids=[r.name for r in RELEASES])
def test_reproduction_record_agrees_with_cards(release):
    rows = json.loads((release.record / "reproduce.json").read_text())
    assert rows and all(r["ok"] and abs(r["diff"]) <= 0.3 for r in rows)
    assert {r["folder"] for r in rows} == {f"hub/{release.name}-{layer}" for layer in ("conv", "fc")}
    for r in rows:
        layer = Path(r["folder"]).name.split("-")[-1]
        card = ModelCard.load(release.folders[layer] / "README.md")
        assert r["value"] in [e.metric_value for e in card.data.eval_results if e.metric_name == r["name"]]


@pytest.mark.parametrize("release", RELEASES, ids=[r.name for r in RELEASES])
def test_results_and_readme_quote_the_card_numbers(release):
    results = (REPO_ROOT / "benchmarks" / "RESULTS.md").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    for layer, folder in release.folders.items():
        card = ModelCard.load(folder / "README.md")
        knn = next(r.metric_value for r in card.data.eval_results if r.metric_name.startswith("weighted k-NN k=200"))
        probe = next(r.metric_value for r in card.data.eval_results if r.metric_name.startswith("fast linear probe"))
        for text, where in ((results, "RESULTS.md"), (readme, "README.md")):
            assert f"{knn:.2f}" in text and f"{probe:.2f}" in text, f"{where} lacks the {folder.name} card numbers"
        row = next(x for x in readme.splitlines() if x.startswith(f"| `hub/{folder.name}` (`{folder.name}`) |"))
        assert f"| {knn:.2f} | {probe:.2f} |" in row, row
