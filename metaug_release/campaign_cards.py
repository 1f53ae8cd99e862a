"""The campaign release's card-metrics files (``benchmarks/campaign/card-{conv,fc}.json``), their
summary and RESULTS.md's "Training campaign: the released state" section
(``python -m metaug_release campaign cards``); ``metaug-export --card-metrics`` renders the files into the
campaign's shipped folders (:meth:`.campaign.Campaign.folder`: ``hub/cifar10-{conv,fc}`` for campaign
2, the default; ``hub/cifar10-metaug-{conv,fc}`` for campaign 1) and ``python -m metaug_release campaign
recard`` re-renders the shipped cards. A campaign with a meta-diagnostics record
(:attr:`.campaign.Campaign.diagnostics`) gets its section on the cards (:mod:`.meta_diagnostics_card`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metaug_features.atomic import atomic_write_text
from metaug_features.feature_files import sha256_file
from metaug_features.hub import MODEL_ALIASES
from metaug_training.schedule import cosine_factor

from . import cards
from .campaign import (
    DEFAULT_RELEASE_NAME,
    RELEASE_LAYERS,
    Campaign,
    all_rows,
    campaign_of,
    current_release_row,
    final_evaluation,
    get_campaign,
    method_label,
    read_rows,
    row_of,
    schedule_complete,
)
from .meta_diagnostics_card import diagnostics_section, load_diagnostics
from .paths import FIRST_RELEASE, HUB, REPO, RESULTS, repo_relative
from .records import EncoderEvaluation, load_evaluation
from .run_log import run_budget
from .sections import write_section

#: The MetAug paper's linear-probe accuracies for alexnet224 on CIFAR-10 (Li et al., ICML 2022),
#: as quoted by issue #18 and ../shared/docs/GPU-QUEUE.md: a reference, not like-for-like (224-px
#: upsampled inputs, 13,824-d conv / 6,144-d fc features, the paper's GPU schedule).
PAPER_ALEXNET224 = {"conv": 87.87, "fc": 88.12}
THIS, CMC_FIRST = "MetAug (this model)", "CMC, first release"


def this_model(method: str) -> str:
    """The comparison row name of the released model: its method, from the run's recipe
    ("MetAug (this model)"; "MetAug (only OUCL), this model", not two pairs of brackets)."""
    label = method_label(method)
    return f"{label}, this model" if label.endswith(")") else f"{label} (this model)"


def campaign_name(c: Campaign) -> str:
    """How cards and notes name the campaign ("the CPU training campaign", "CPU training campaign 2")."""
    return "the CPU training campaign" if c.number == 1 else f"CPU training campaign {c.number}"


def paper_probe_metric(final: dict[str, Any], layer: str) -> dict[str, Any]:
    """The card metric entry (training.model_card format) of the final row's paper probe on ``layer``."""
    return {"task": "image-classification", "dataset": "CIFAR-10 (JPEG q75)", "dataset_type": "cifar10",
            "split": "test", "metric": "accuracy",
            "name": f"paper linear probe, {final['paper_probe_epochs']} epochs ({layer})",
            "value": round(float(final[f"paper_probe_{layer}"]), 2),
            "args": {"protocol": "paper-probe", "layer": layer, "epochs": final["paper_probe_epochs"],
                     "summary": final["paper_probe_summary"]}}


def card_specs(evaluation: EncoderEvaluation, row: dict[str, Any], recipe_path: Path | None = None,
               cmc_eval: Path = FIRST_RELEASE / "cmc.json", floor_eval: Path = FIRST_RELEASE / "floor.json",
               cmc_run: Path = FIRST_RELEASE / "runs" / "cmc",
               final: dict[str, Any] | None = None) -> tuple[dict[str, dict[str, Any]], str]:
    """Card-metrics specs for ``conv`` and ``fc`` and a Markdown summary for RESULTS.md.

    ``final``: the last leg's evaluation-only row (:func:`.campaign_final.final_row`), when it has
    run: each card gains its layer's paper-probe metric and the final note quotes both layers.
    The campaign is the row's (``campaign`` field); ``recipe_path`` defaults to its recipe, whose
    ``method`` names the model on the card (MetAug, MetAug (only OUCL), ...). The repo id is that of
    the campaign's alias (:meth:`.campaign.Campaign.alias`); the campaign's meta-diagnostics record,
    when there is one, adds its section (:func:`meta_diagnostics_sections`)."""
    c = get_campaign(campaign_of(row))
    recipe_path = recipe_path or c.recipe
    recipe = json.loads(recipe_path.read_text())
    this = this_model(recipe["method"])
    cmc_budget = run_budget(cmc_run)
    sections = meta_diagnostics_sections(c, row, recipe)
    evals = {this: evaluation, CMC_FIRST: load_evaluation(cmc_eval), cards.FLOOR: load_evaluation(floor_eval)}
    budgets = {this: {"epochs": row["epoch"]}, CMC_FIRST: cmc_budget, cards.FLOOR: None}
    rows = cards.comparison_rows(evals, budgets)
    o = recipe["optim"]
    f = cosine_factor(row["epoch"] / o["epochs"])
    done = schedule_complete(row, o["epochs"])
    budget = {
        "command": cards.train_command(recipe_path, legs=True),
        "campaign": (f"campaign {c.number}, " if c.number != 1 else "")
                    + f"leg {row['leg']} of {c.legs}; epoch {row['epoch']} of the planned {o['epochs']} "
                    f"(benchmarks/CAMPAIGN.md)",
        "training time": f"{row['training_minutes']} minutes on 2 CPU cores ({2 * row['training_minutes'] / 60:.1f} core-hours)",
        "steps": row["step"],
        "batch size": o["batch_size"],
        "learning-rate schedule": f"{o['schedule']} over {o['epochs']} epochs, lr {o['lr']} "
                                  + ("(complete)" if done else f"(now at {f:.2f} of its peak)"),
        **({"meta step": f"every {recipe['metaug']['meta_every']} iterations (metaug.meta_every)"}
           if recipe["method"] == "metaug" else {"method": f"{recipe['method']} (no meta step)"}),
        "throughput": f"{row['images_per_s']} images/s (leg {row['leg']})",
    }
    hardware = "CPU only: 2 cores (x86_64, AMD EPYC), 24 GB RAM; 2 torch threads"
    specs = {}
    for layer in cards.LAYERS:
        m, fl = evals[this][layer], evals[cards.FLOOR][layer]
        notes = _status_notes(row, final, o["epochs"], done, f, c) + _default_note(c, row)
        for name, get in (("weighted k-NN k=200", lambda e: e.knn[200]), ("fast linear probe", lambda e: e.probe)):
            if get(m) < get(fl):
                notes.append(f"**Below the random-init floor** on `{layer}` for {name} ({get(m):.2f} vs {get(fl):.2f}).")
        metrics = cards.layer_metrics(evaluation, layer)
        if final is not None:
            metrics.append(paper_probe_metric(final, layer))
        specs[layer] = {"metrics": metrics, "recipe": recipe, "budget": budget,
                        "hardware": hardware, "comparison": rows, "repo_id": MODEL_ALIASES[c.alias(layer)][0],
                        "license": "mit", "notes": notes,
                        "comparison_title": "Comparison with the first release's CMC and the random-init floor"}
        if sections:
            specs[layer]["sections"] = sections
    from metaug_training.model_card import markdown_table

    summary = ((f"Campaign {c.number}, leg" if c.number != 1 else "Campaign leg")
               + f" {row['leg']} of {c.legs} (`{recipe_path.name}`): epoch {row['epoch']} of {o['epochs']}, "
               f"{row['training_minutes']} training minutes on 2 cores, {row['images_per_s']} img/s this leg; "
               f"CMC row: the first release's 90-minute run ({cmc_budget['epochs']} epochs).\n\n"
               + markdown_table(rows) + "\n")
    return specs, summary


def weight_files(c: Campaign, row: dict[str, Any], hub: Path = HUB) -> dict[str, str]:
    """sha256 -> how a card names the file, for every file that holds the weights of ``row``: the
    evaluated weights (the ``fc`` folder's), the ``conv`` folder's truncation of them when shipped,
    and the run's committed state when it is at the row's step (it holds the MAGs too)."""
    fc, conv = c.folder("fc", hub), c.folder("conv", hub)
    out = {row["weights_sha256"]: f"the released weights, `hub/{fc.name}/model.safetensors` (`hub/{conv.name}` "
                                  f"holds the same tensors up to conv5)"}
    if (conv / "model.safetensors").is_file():
        out.setdefault(sha256_file(conv / "model.safetensors"),
                       f"the released `conv` weights, `hub/{conv.name}/model.safetensors`")
    state, weights = c.state / "state.json", c.state / "weights.safetensors"
    if state.is_file() and weights.is_file() and json.loads(state.read_text()).get("step") == row["step"]:
        out.setdefault(sha256_file(weights), f"the run's committed state at the released step, "
                                             f"`{repo_relative(weights)}` (the encoder and the MAGs)")
    return out


def meta_diagnostics_sections(c: Campaign, row: dict[str, Any], recipe: dict[str, Any]) -> list[dict[str, str]]:
    """The card's meta-diagnostics section (:mod:`.meta_diagnostics_card`), when the campaign has a
    record and ``row`` is its shipped (last released) row, whose weights the record must be of; none
    before the record exists, for a method without a meta step, or for an earlier leg's cards."""
    if c.diagnostics is None or not c.diagnostics.is_file():
        return []
    shipped = current_release_row(read_rows(campaign=c.number))
    if shipped is None or shipped["weights_sha256"] != row["weights_sha256"]:
        return []
    diag = load_diagnostics(c.diagnostics)
    return [diagnostics_section(diag, weight_files(c, row), repo_relative(c.diagnostics), recipe.get("metaug"))]


def _default_note(c: Campaign, row: dict[str, Any]) -> list[str]:
    """For a campaign whose pair is not the default one: which model the default aliases load,
    with both k-NN numbers from the campaign rows (nothing for the default pair itself)."""
    default = current_release_row(all_rows())
    if c.release_name == DEFAULT_RELEASE_NAME or default is None or campaign_of(default) == c.number:
        return []
    d = get_campaign(campaign_of(default))
    return [f"**Not the default model.** `load_encoder(\"{d.alias('conv')}\")` / `\"{d.alias('fc')}\"` load "
            f"{method_label(d.method)} from {campaign_name(d)} (k-NN k=200 `conv` {default['knn_conv_k200']:.2f} / "
            f"`fc` {default['knn_fc_k200']:.2f} against this model's {row['knn_conv_k200']:.2f} / "
            f"{row['knn_fc_k200']:.2f}; one training run each). This folder is the {method_label(c.method)} model of "
            f"{campaign_name(c)}."]


def _status_notes(row: dict[str, Any], final: dict[str, Any] | None, epochs: int, done: bool, f: float,
                  c: Campaign) -> list[str]:
    """The card's first note: final model (with or without the paper probe) or training in progress."""
    name, LEGS = campaign_name(c), c.legs
    if done and final is not None:
        return [f"**Final model of {name}**: the {epochs}-epoch schedule finished in leg "
                f"{row['leg']} of {LEGS}; leg {final['leg']} evaluated it in full. Paper-protocol linear probe "
                f"(docs/METHODS.md section 7: {final['paper_probe_epochs']} epochs of SGD on a linear layer with train-time "
                f"augmentation; {final['paper_probe_summary']}): `conv` {final['paper_probe_conv']:.2f}, "
                f"`fc` {final['paper_probe_fc']:.2f}. The MetAug paper reports {PAPER_ALEXNET224['conv']} / "
                f"{PAPER_ALEXNET224['fc']} for its "
                f"`alexnet224` after a GPU schedule: a reference, not like-for-like (`benchmarks/RESULTS.md`)."]
    if done:
        return [f"**Final model of {name}**: the {epochs}-epoch schedule finished in leg "
                f"{row['leg']} of {LEGS}. The numbers here are the fast evaluation every leg runs; the last leg "
                f"adds the paper-protocol linear probe (`benchmarks/RESULTS.md`)."]
    return [f"**Training in progress**: this release is the state after leg {row['leg']} of {LEGS} of "
            f"{name} (epoch {row['epoch']} of {epochs}; the learning rate is still "
            f"{f:.2f} of its peak). Later legs replace it."]


def write_cards(row: dict[str, Any], final: dict[str, Any] | None, output: Path | None = None) -> list[Path]:
    """card-conv.json, card-fc.json and summary.md of the release made from ``row`` (with the
    final evaluation's paper probe when it has run), and RESULTS.md's campaign section when the
    campaign made the default pair; returns the written paths."""
    c = get_campaign(campaign_of(row))
    output = output or c.out
    specs, summary = card_specs(load_evaluation(REPO / row["eval"]), row, final=final)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for layer, spec in specs.items():
        atomic_write_text(output / f"card-{layer}.json", json.dumps(spec, indent=2) + "\n")
        written.append(output / f"card-{layer}.json")
    atomic_write_text(output / "summary.md", summary)
    if not _is_default_release(c):
        return [*written, output / "summary.md"]
    write_section(RESULTS, released_heading(c) + summary, "campaign")
    return [*written, output / "summary.md", RESULTS]


def _is_default_release(c: Campaign) -> bool:
    """True when ``c`` made the default pair: RESULTS.md's released-state section is its summary
    (another shipped campaign's cards must not replace that section)."""
    row = current_release_row(all_rows())
    return row is None or campaign_of(row) == c.number


def released_heading(c: Campaign) -> str:
    """The heading of RESULTS.md's released-state section (the ``campaign`` section: whichever
    campaign made the current release)."""
    if c.number == 1:
        return "## Training campaign: the released state (#14-#18)\n\n"
    return f"## Training campaign {c.number}: the released state ({c.issues})\n\n"


def cards_for_leg(leg: int, output: Path | None = None, campaign: int = 1) -> list[Path]:
    """``python -m metaug_release campaign cards``: the card files of the leg's row (see :func:`write_cards`)."""
    rows = read_rows(campaign=campaign)
    return write_cards(row_of(rows, leg), final_evaluation(rows), output or get_campaign(campaign).out)


def recard_shipped(campaign: int = 1, hub: Path = HUB) -> list[Path]:
    """``python -m metaug_release campaign recard``: re-render the campaign's shipped cards
    (``hub/<release_name>-{conv,fc}/README.md``) from its card files (no checkpoint needed; the
    weights are not touched)."""
    c = get_campaign(campaign)
    return [cards.recard(c.folder(layer, hub), c.out / f"card-{layer}.json") for layer in RELEASE_LAYERS]
