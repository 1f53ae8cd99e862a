"""Model-card metrics from measured evaluations, the first release's card files, and the
re-rendering of a shipped folder's card.

A card-metrics file (``card-conv.json``, ``card-fc.json``) is what ``metaug-export --card-metrics``
renders into a release folder's README.md. Nothing on a card is typed in by hand: every number
comes from an evaluation report (:mod:`.records`) and the runs' logs (:mod:`.run_log`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaug_features.atomic import atomic_write_text
from metaug_features.errors import MetAugError
from metaug_features.evaluation.knn import KNNConfig
from metaug_features.hub import MODEL_ALIASES

from .records import EncoderEvaluation, LayerResult, load_evaluation
from .run_log import run_budget

DATASET = "CIFAR-10 (JPEG q75)"
TASK = "image-classification"
LAYERS = ("conv", "fc")
#: The Hub repos the first release's cards are written for: it was MetAug (v0.1.0), so the repos
#: of the MetAug aliases (a campaign's cards take its own aliases': :meth:`.campaign.Campaign.alias`).
REPO_IDS = {layer: MODEL_ALIASES[f"cifar10-metaug-{layer}"][0] for layer in LAYERS}
#: Names of the first release's comparison rows (card tables and notes).
THIS, CMC_EQUAL, FLOOR = "MetAug (this model)", "CMC, equal budget", "random init (floor)"


def train_command(recipe: Path, legs: bool = False) -> str:
    """The training command a card quotes: the recipe by its name, which ``metaug-train --config``
    resolves after a plain ``pip install`` (recipes are package data), never a checkout path.
    ``legs``: the run trained one session at a time, each continuing with ``--resume``."""
    command = f"metaug-train --config {Path(recipe).stem} data.path=CIFAR10_FOLDER_OR_ARCHIVE"
    return command + (" (one leg per session, each continued with --resume)" if legs else "")


def layer_metrics(ev: EncoderEvaluation, layer: str) -> list[dict[str, Any]]:
    """Card metric entries (``metaug_training.model_card`` format) of one layer of an evaluation."""
    e = ev[layer]
    base = {"task": TASK, "dataset": DATASET, "dataset_type": "cifar10", "split": "test"}
    t = KNNConfig.temperature   # the k-NN protocol's settings, from their one source
    out = [
        {**base, "metric": "accuracy", "name": f"weighted k-NN k={k} T={t:g} ({layer})", "value": e.knn[k],
         "args": {"protocol": "knn", "k": k, "temperature": t, "layer": layer}}
        for k in KNNConfig.ks
    ] + [
        {**base, "metric": "accuracy", "name": f"fast linear probe ({layer})", "value": _probe(e),
         "args": {"protocol": "fast-probe", "layer": layer, "C": e.chosen_c}},
        {**base, "metric": "nmi", "name": f"k-means NMI in % ({layer})", "value": round(e.nmi_percent, 2),
         "args": {"protocol": "kmeans", "layer": layer, "scale": "percent"}},
        {**base, "metric": "accuracy", "name": f"k-means accuracy ({layer})", "value": round(e.kmeans_accuracy, 2),
         "args": {"protocol": "kmeans", "layer": layer}},
    ]
    for m in out:
        m["value"] = round(float(m["value"]), 2)
    return out


def _probe(e: LayerResult) -> float:
    if e.probe is None:
        raise MetAugError(f"layer {e.layer!r} has no fast-probe evaluation: a card needs one")
    return e.probe


def comparison_rows(evals: dict[str, EncoderEvaluation], budgets: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """One row per (model, layer): k-NN k=200, fast probe, k-means NMI/accuracy, epochs."""
    rows = []
    for name, ev in evals.items():
        b = budgets.get(name)
        for layer in LAYERS:
            e = ev[layer]
            rows.append({
                "model": name, "layer": layer,
                "k-NN k=200": round(e.knn[200], 2),
                "fast probe": round(_probe(e), 2),
                "k-means NMI (%)": round(e.nmi_percent, 2),
                "k-means acc": round(e.kmeans_accuracy, 2),
                "epochs": b["epochs"] if b else 0,
            })
    return rows


def floor_and_baseline_notes(evals: dict[str, EncoderEvaluation], budgets: dict[str, dict[str, Any] | None],
                             layer: str) -> list[str]:
    """Card limitations that follow from the numbers: where the released model is below the
    random-init floor or behind CMC at equal budget (empty when it beats both)."""
    m, c, f = (evals[k][layer] for k in (THIS, CMC_EQUAL, FLOOR))
    mb, cb = budgets[THIS], budgets[CMC_EQUAL]
    metrics = {"weighted k-NN k=200": lambda e: e.knn[200], "fast linear probe": _probe}
    notes = []
    below = [f"{name} {get(m):.2f} vs {get(f):.2f}" for name, get in metrics.items() if get(m) < get(f)]
    if below:
        notes.append(f"**Below the random-init floor** of the same architecture on `{layer}` ({'; '.join(below)}): "
                     f"after {mb['epochs']} epochs the run is still in the early-training dip in which a trained "
                     f"encoder's features lose to random ones. Use this release to integrate the toolkit, not for "
                     f"accuracy; longer training (the CPU training campaign) replaces it.")
    behind = [f"{name} {get(c):.2f} vs {get(m):.2f}" for name, get in metrics.items() if get(c) > get(m)]
    if behind:
        notes.append(f"**CMC is ahead at equal wall-clock** on `{layer}` ({'; '.join(behind)}): a MetAug step costs "
                     f"{cb['images_per_second'] / mb['images_per_second']:.1f}x a CMC step on this CPU (meta step every "
                     f"{mb['meta_every']} iterations), so MetAug got {mb['epochs']} epochs to CMC's {cb['epochs']}.")
    return notes


@dataclass(frozen=True)
class FirstReleaseInputs:
    """The files the first release's cards come from (``python -m metaug_release cards``)."""

    metaug_eval: Path
    cmc_eval: Path
    floor_eval: Path
    metaug_run: Path
    cmc_run: Path
    recipe: Path
    hardware: str = ("CPU only: 2 cores (x86_64), 24 GB RAM; the MetAug and CMC runs trained "
                     "side by side, one core (1 torch thread) each")


def first_release_cards(inputs: FirstReleaseInputs, output: Path) -> list[Path]:
    """Write ``card-conv.json``, ``card-fc.json`` and ``summary.md`` of a release made from a
    MetAug run, its CMC baseline at equal wall-clock and the random-init floor into ``output``;
    return the written paths. Runs of different budgets are refused."""
    evals = {THIS: load_evaluation(inputs.metaug_eval), CMC_EQUAL: load_evaluation(inputs.cmc_eval),
             FLOOR: load_evaluation(inputs.floor_eval)}
    budgets = {THIS: run_budget(inputs.metaug_run), CMC_EQUAL: run_budget(inputs.cmc_run), FLOOR: None}
    mb, cb = budgets[THIS], budgets[CMC_EQUAL]
    if mb["wall_clock_minutes"] != cb["wall_clock_minutes"]:
        raise MetAugError(f"the runs' budgets differ: {mb['wall_clock_minutes']} vs {cb['wall_clock_minutes']} minutes")
    try:
        recipe = json.loads(inputs.recipe.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MetAugError(f"cannot read the recipe {inputs.recipe}: {e}") from None
    budget = {
        "command": train_command(inputs.recipe),
        "wall-clock": f"{mb['wall_clock_minutes']} minutes on one CPU core (run.stop_after_minutes)",
        "epochs reached": mb["epochs"],
        "steps": mb["steps"],
        "batch size": mb["batch_size"],
        "learning-rate schedule": mb["schedule"],
        "meta step": f"every {mb['meta_every']} iterations (metaug.meta_every)",
        "throughput": f"{mb['images_per_second']} images/s",
        "CMC baseline": f"same encoder, views, batch and schedule shape, same wall-clock: {cb['epochs']} epochs at "
                        f"{cb['images_per_second']} images/s (metaug_training/recipes/cifar10-release-cmc.json)",
    }
    from metaug_training.model_card import markdown_table

    rows = comparison_rows(evals, budgets)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for layer in LAYERS:
        spec = {"metrics": layer_metrics(evals[THIS], layer), "recipe": recipe,
                "budget": budget, "hardware": inputs.hardware, "comparison": rows, "repo_id": REPO_IDS[layer],
                "license": "mit", "notes": floor_and_baseline_notes(evals, budgets, layer)}
        atomic_write_text(output / f"card-{layer}.json", json.dumps(spec, indent=2) + "\n")
        written.append(output / f"card-{layer}.json")
    summary = (f"Recipe `{inputs.recipe.stem}`; budget {mb['wall_clock_minutes']} wall-clock minutes on one core each "
               f"(MetAug {mb['epochs']} epochs at {mb['images_per_second']} img/s, CMC {cb['epochs']} epochs at "
               f"{cb['images_per_second']} img/s).\n\n" + markdown_table(rows) + "\n")
    for layer in LAYERS:
        summary += "".join(f"\n- {n}" for n in floor_and_baseline_notes(evals, budgets, layer))
    summary += "\n"
    atomic_write_text(output / "summary.md", summary)
    return [*written, output / "summary.md"]


def recard(folder: Path, card_json: Path) -> Path:
    """Re-render ``folder``'s model card from ``card_json`` and the folder's own config, as
    ``metaug-export --card-metrics`` would (the same renderer), without the training checkpoint;
    the weights are not read or written. Atomic: the old card stays until the new one is whole."""
    from metaug_features import load_encoder
    from metaug_training.model_card import card_renderer_from_json

    if not Path(card_json).is_file():
        raise MetAugError(f"no card-metrics file {card_json}")
    text = card_renderer_from_json(card_json)(load_encoder(folder).config, None)
    atomic_write_text(Path(folder) / "README.md", text)
    return Path(folder) / "README.md"
