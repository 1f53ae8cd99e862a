"""The committed release (hub/cifar10-conv, hub/cifar10-fc) agrees with its measurements, its
recipe, benchmarks/RESULTS.md and the README: no number on a card was typed in by hand.

Re-measuring the k-NN numbers needs the full CIFAR-10 extraction (minutes); that is
``metaug-release reproduce`` (run by ``benchmarks/campaign_leg.sh`` and ``benchmarks/release.sh``), whose last output is
committed as benchmarks/release/reproduce.json and checked here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from metaug_features import load_encoder
from metaug_features.feature_files import sha256_file
from metaug_training.publish import validate_model_folder
from metaug_training.release import campaign, campaign_cards, cards
from metaug_training.release.records import load_evaluation

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Which measurements and recipe the shipped folders come from (the first release or a campaign leg).
CURRENT = json.loads((REPO_ROOT / "benchmarks" / "current_release.json").read_text())
RELEASE = REPO_ROOT / CURRENT["record"]
EVALUATION = REPO_ROOT / CURRENT["evaluation"]
RECIPE = REPO_ROOT / CURRENT["recipe"]
FOLDERS = {layer: REPO_ROOT / "hub" / f"cifar10-{layer}" for layer in ("conv", "fc")}
MAX_FOLDER_BYTES = 25 * 1024 * 1024

pytestmark = pytest.mark.skipif(not all((f / "config.json").is_file() for f in FOLDERS.values()),
                                reason="no release folders in this checkout")


def _final_evaluation_of(weights_sha256: str) -> dict | None:
    """The evaluation-only last row (benchmarks/campaign.jsonl, any campaign) of these weights, if
    their campaign's last leg has run."""
    return campaign.final_evaluation([r for r in campaign.all_rows() if r["weights_sha256"] == weights_sha256])


@pytest.mark.parametrize("layer", ["conv", "fc"])
def test_folder_is_valid_small_and_defaults_to_its_layer(layer):
    folder = FOLDERS[layer]
    assert validate_model_folder(folder).ok
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size <= MAX_FOLDER_BYTES, f"{folder} is {size / 2**20:.1f} MiB"
    enc = load_encoder(folder)
    assert enc.config.default_layer == layer and enc.config.truncate_after == layer
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_both_folders_hold_the_same_network():
    """hub/cifar10-fc extends hub/cifar10-conv: identical conv features (same trained weights)."""
    conv, fc = load_encoder(FOLDERS["conv"]), load_encoder(FOLDERS["fc"])
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(conv(x), fc(x, "conv"))


@pytest.mark.parametrize("layer", ["conv", "fc"])
def test_card_metrics_are_the_measured_ones(layer):
    """Card model-index == the metrics metaug_training.release.cards derives from the evaluation report."""
    measured = load_evaluation(EVALUATION)
    expected = [(m["name"], m["value"]) for m in cards.layer_metrics(measured, layer)]
    final = _final_evaluation_of(measured.weights_sha256)
    if final is not None:
        # the campaign's last leg probed these weights with the paper protocol: its number is on the card
        metric = campaign_cards.paper_probe_metric(final, layer)
        expected.append((metric["name"], metric["value"]))
    card = ModelCard.load(FOLDERS[layer] / "README.md")
    assert [(r.metric_name, r.metric_value) for r in card.data.eval_results] == expected
    assert card.data.library_name == "metaug-features" and "cifar10" in card.data.tags
    # the card-metrics file the export read: same metrics, and its derived notes are on the card
    spec = json.loads((RELEASE / f"card-{layer}.json").read_text())
    assert [(m["name"], m["value"]) for m in spec["metrics"]] == expected
    for note in spec.get("notes", []):
        assert note in card.text
    # the evaluated weights are the released ones (the evaluation report records the run's export)
    prov = load_encoder(FOLDERS[layer]).config.provenance
    assert prov == measured.provenance
    if "evaluated_folder" in CURRENT:  # the evaluation ran on the shipped file itself
        assert measured.weights_sha256 == sha256_file(REPO_ROOT / CURRENT["evaluated_folder"] / "model.safetensors")


def test_provenance_matches_recipe():
    recipe = json.loads(RECIPE.read_text())
    enc = load_encoder(FOLDERS["conv"])
    prov = enc.config.provenance
    assert prov["method"] == recipe["method"] in ("metaug", "oucl")   # campaign 1: MetAug; campaign 2: OUCL
    if recipe["method"] == "metaug":
        assert prov["meta_every"] == recipe["metaug"]["meta_every"]
    assert prov["batch_size"] == recipe["optim"]["batch_size"]
    assert enc.config.width == recipe["model"]["width"] and list(enc.config.views) == recipe["model"]["views"]
    assert 0 < prov["epochs"] <= recipe["optim"]["epochs"]


def test_reproduction_record_agrees_with_cards():
    rows = json.loads((RELEASE / "reproduce.json").read_text())
    assert rows and all(r["ok"] and abs(r["diff"]) <= 0.3 for r in rows)
    for r in rows:
        layer = Path(r["folder"]).name.split("-")[-1]
        card = ModelCard.load(FOLDERS[layer] / "README.md")
        assert r["value"] in [e.metric_value for e in card.data.eval_results if e.metric_name == r["name"]]


def test_results_and_readme_quote_the_card_numbers():
    results = (REPO_ROOT / "benchmarks" / "RESULTS.md").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    for layer, folder in FOLDERS.items():
        card = ModelCard.load(folder / "README.md")
        knn = next(r.metric_value for r in card.data.eval_results if r.metric_name.startswith("weighted k-NN k=200"))
        probe = next(r.metric_value for r in card.data.eval_results if r.metric_name.startswith("fast linear probe"))
        for text, where in ((results, "RESULTS.md"), (readme, "README.md")):
            assert f"{knn:.2f}" in text and f"{probe:.2f}" in text, f"{where} lacks the {layer} card numbers"
