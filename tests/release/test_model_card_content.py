"""What a rendered model card says (metaug_training/model_card.py + metaug_training/model_cards/encoder_card.md): no
internal recipe notes, a Hub-status statement whose alias, repo id and revision come from
metaug_features.hub.MODEL_ALIASES at render time, and the shipped cards agree with both."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaug_features import EncoderConfig, hub, load_encoder
from metaug_training import model_card
from metaug_training.model_card import render_card, without_notes

REPO = Path(__file__).resolve().parents[2]
CFG = EncoderConfig(architecture="alexnet32", width=0.125, views=("l", "ab"))
METRIC = {"task": "image-classification", "dataset": "CIFAR-10 (JPEG q75)", "metric": "accuracy",
          "name": "weighted k-NN k=200 T=0.07 (conv)", "value": 55.13}
RECIPE = {"_comment": "internal: plan of issue #14", "method": "metaug",
          "_plan": {"legs": 5, "_per_leg": "125 min"},
          "optim": {"epochs": 30, "_why": "sized to the budget", "lr": 0.03},
          "model": {"views": ["l", "ab"]}}


def _card(repo_id: str | None, recipe=RECIPE) -> str:
    return render_card(CFG, [METRIC], recipe=recipe, budget={"epochs": 30}, hardware="2 CPU cores",
                       repo_id=repo_id)


def test_without_notes_drops_underscore_keys_at_any_depth():
    assert without_notes(RECIPE) == {"method": "metaug", "optim": {"epochs": 30, "lr": 0.03},
                                     "model": {"views": ["l", "ab"]}}
    assert without_notes([{"_a": 1, "b": {"_c": 2, "d": 3}}]) == [{"b": {"d": 3}}]


def test_card_renders_no_recipe_notes():
    text = _card("metaug-features/test-model")
    assert '"method": "metaug"' in text and '"lr": 0.03' in text  # the settings are there
    for note in ("_comment", "_plan", "_per_leg", "_why", "internal: plan", "sized to the budget"):
        assert note not in text, note


def test_hub_status_of_a_builtin_model_comes_from_model_aliases(monkeypatch):
    """The alias, repo id and revision are read from MODEL_ALIASES when the card is rendered: a
    changed pin shows up in the next rendering, nothing is hard-coded."""
    monkeypatch.setitem(hub.MODEL_ALIASES, "cifar10-conv", ("some-org/some-repo", "v9.8.7"))
    text = " ".join(_card("some-org/some-repo").split())
    assert ("Hub status: this model is not published on the Hugging Face Hub yet. It ships inside the "
            "`metaug-features` package (load it with `load_encoder(\"cifar10-conv\")` or the folder path "
            "`hub/cifar10-conv`, offline). `metaug-push hub/cifar10-conv --repo-id some-org/some-repo --tag v9.8.7` "
            "publishes it under the repo id and revision the built-in alias names.") in text
    assert 'load_encoder("cifar10-conv").extract' in text  # the usage line loads the shipped copy
    assert "not one of the models built into" not in text and "<!--" not in text


def test_hub_status_of_another_folder_says_so():
    text = " ".join(_card("metaug-features/test-model").split())
    assert "not one of the models built into `metaug-features`" in text
    assert "metaug-push FOLDER --repo-id metaug-features/test-model --tag TAG" in text
    assert "not published on the Hugging Face Hub yet" not in text and "<!--" not in text
    assert 'load_encoder("metaug-features/test-model")' in text
    text = " ".join(_card(None).split())
    assert "--repo-id ORG/NAME" in text and 'load_encoder("path/to/this/folder")' in text


@pytest.mark.parametrize("alias", sorted(hub.MODEL_ALIASES))
def test_shipped_cards_state_their_hub_status_and_carry_no_notes(alias):
    folder = REPO / "hub" / alias
    if not (folder / "README.md").is_file():
        pytest.skip("no release folder in this checkout")
    text = (folder / "README.md").read_text(encoding="utf-8")
    repo_id, revision = hub.MODEL_ALIASES[alias]
    flat = " ".join(text.split())
    assert (f"load it with `load_encoder(\"{alias}\")` or the folder path `hub/{alias}`, offline). "
            f"`metaug-push hub/{alias} --repo-id {repo_id} --tag {revision}`") in flat
    assert '"_' not in text, "a recipe note (key starting with '_') leaked into the card"
    assert "<!--" not in text
    # and it is the folder the alias loads
    assert load_encoder(alias).config == load_encoder(folder).config


def test_the_template_is_the_one_rendered():
    """Both Hub-status alternatives are in metaug_training/model_cards/encoder_card.md (not in code)."""
    template = model_card.load_template().template
    assert "<!-- hub-status: built-in -->" in template and "<!-- hub-status: other -->" in template
    assert "${alias_repo_id}" in template and "${alias_revision}" in template


# ---------------------------------------------------------------------- training length, training command
def _with_epochs(epochs):
    prov = {"method": "oucl"} if epochs is None else {"method": "oucl", "epochs": epochs}
    return EncoderConfig(architecture="alexnet32", width=0.5, views=("l", "ab", "ori"), provenance=prov)


@pytest.mark.parametrize("epochs,expected", [
    (284.0, "**Training length close to the paper's**: 284 epochs against the 300 of its schedule"),
    (147.0, "**Shorter training than the paper**: 147 epochs against the 300 of its schedule"),
    (6.46, "**Shorter training than the paper**: 6.46 epochs against the 300 of its schedule"),
    (None, "**Training length not recorded**"),
])
def test_training_length_comes_from_the_folders_epochs(epochs, expected):
    """The limitation quotes the folder's own epochs against the paper's 300; a schedule within 90%
    of it is "close to the paper's" (with the network that differs), never "far fewer epochs"."""
    text = model_card.training_length_text(_with_epochs(epochs))
    assert text.startswith(expected), text
    assert ("smaller network than the paper's `alexnet224`: `alexnet32` width 0.5 on 32-pixel inputs" in text) == (
        epochs == 284.0)
    card = " ".join(render_card(_with_epochs(epochs), [METRIC], recipe=RECIPE, budget={}, hardware="x").split())
    assert f"- {text}" in card and "far fewer" not in card


@pytest.mark.parametrize("alias", sorted(hub.MODEL_ALIASES))
def test_shipped_cards_quote_their_epochs_and_a_command_that_runs_after_pip_install(alias):
    """Each shipped card's training-length line is its own provenance's (284 epochs: close to the
    paper's 300, not "far fewer"), and its training command names the recipe (package data, which
    `metaug-train --config NAME` loads after a plain install), never a checkout path."""
    from metaug_training.config import load_config

    folder = REPO / "hub" / alias
    if not (folder / "README.md").is_file():
        pytest.skip("no release folder in this checkout")
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert "far fewer epochs" not in text
    assert f"- {model_card.training_length_text(load_encoder(folder).config)}\n" in text
    (command,) = [line for line in text.splitlines() if line.startswith("- command: ")]
    assert "metaug_training/recipes/" not in command and ".json" not in command, command
    recipe = command.split("--config ", 1)[1].split()[0]
    assert (REPO / "metaug_training" / "recipes" / f"{recipe}.json").is_file(), command
    assert load_config(recipe).method == load_encoder(folder).config.provenance["method"]
