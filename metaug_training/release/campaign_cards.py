"""The campaign release's card-metrics files (``benchmarks/campaign/card-{conv,fc}.json``), their
summary and RESULTS.md's "Training campaign: the released state" section
(``metaug-release campaign cards``); ``metaug-export --card-metrics`` renders the files into
``hub/cifar10-{conv,fc}`` and ``metaug-release campaign recard`` re-renders the shipped cards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metaug_features.atomic import atomic_write_text
from metaug_training.schedule import cosine_factor

from . import cards
from .campaign import (METHOD_LABELS, OUT, Campaign, campaign_of, final_evaluation, get_campaign, read_rows, row_of,
                       schedule_complete)
from .paths import FIRST_RELEASE, HUB, REPO, RESULTS
from .records import EncoderEvaluation, load_evaluation
from .run_log import run_budget
from .sections import write_section

#: The MetAug paper's linear-probe accuracies for alexnet224 on CIFAR-10 (Li et al., ICML 2022),
#: as quoted by issue #18 and ../shared/docs/GPU-QUEUE.md: a reference, not like-for-like (224-px
#: upsampled inputs, 13,824-d conv / 6,144-d fc features, the paper's GPU schedule).
PAPER_ALEXNET224 = {"conv": 87.87, "fc": 88.12}
THIS, CMC_FIRST = "MetAug (this model)", "CMC, first release"


def this_model(method: str) -> str:
    """The comparison row name of the released model: its method, from the run's recipe."""
    return f"{METHOD_LABELS.get(method, method)} (this model)"


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
    ``method`` names the model on the card (MetAug, OUCL, ...)."""
    c = get_campaign(campaign_of(row))
    recipe_path = recipe_path or c.recipe
    recipe = json.loads(recipe_path.read_text())
    this = this_model(recipe["method"])
    cmc_budget = run_budget(cmc_run)
    evals = {this: evaluation, CMC_FIRST: load_evaluation(cmc_eval), cards.FLOOR: load_evaluation(floor_eval)}
    budgets = {this: {"epochs": row["epoch"]}, CMC_FIRST: cmc_budget, cards.FLOOR: None}
    rows = cards.comparison_rows(evals, budgets)
    o = recipe["optim"]
    f = cosine_factor(row["epoch"] / o["epochs"])
    done = schedule_complete(row, o["epochs"])
    budget = {
        "command": f"metaug-train --config metaug_training/recipes/{recipe_path.name} --resume (one leg per session)",
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
        notes = _status_notes(row, final, o["epochs"], done, f, c)
        for name, get in (("weighted k-NN k=200", lambda e: e.knn[200]), ("fast linear probe", lambda e: e.probe)):
            if get(m) < get(fl):
                notes.append(f"**Below the random-init floor** on `{layer}` for {name} ({get(m):.2f} vs {get(fl):.2f}).")
        metrics = cards.layer_metrics(evaluation, layer)
        if final is not None:
            metrics.append(paper_probe_metric(final, layer))
        specs[layer] = {"metrics": metrics, "recipe": recipe, "budget": budget,
                        "hardware": hardware, "comparison": rows, "repo_id": cards.REPO_IDS[layer], "license": "mit",
                        "notes": notes, "comparison_title": "Comparison with the first release's CMC and the random-init floor"}
    from metaug_training.model_card import markdown_table

    summary = ((f"Campaign {c.number}, leg" if c.number != 1 else "Campaign leg")
               + f" {row['leg']} of {c.legs} (`{recipe_path.name}`): epoch {row['epoch']} of {o['epochs']}, "
               f"{row['training_minutes']} training minutes on 2 cores, {row['images_per_s']} img/s this leg; "
               f"CMC row: the first release's 90-minute run ({cmc_budget['epochs']} epochs).\n\n"
               + markdown_table(rows) + "\n")
    return specs, summary


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
    final evaluation's paper probe when it has run), and RESULTS.md's campaign section; returns
    the written paths."""
    c = get_campaign(campaign_of(row))
    output = output or c.out
    specs, summary = card_specs(load_evaluation(REPO / row["eval"]), row, final=final)
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for layer, spec in specs.items():
        atomic_write_text(output / f"card-{layer}.json", json.dumps(spec, indent=2) + "\n")
        written.append(output / f"card-{layer}.json")
    atomic_write_text(output / "summary.md", summary)
    write_section(RESULTS, released_heading(c) + summary, "campaign")
    return [*written, output / "summary.md", RESULTS]


def released_heading(c: Campaign) -> str:
    """The heading of RESULTS.md's released-state section (the ``campaign`` section: whichever
    campaign made the current release)."""
    if c.number == 1:
        return "## Training campaign: the released state (#14-#18)\n\n"
    return f"## Training campaign {c.number}: the released state ({c.issues})\n\n"


def cards_for_leg(leg: int, output: Path | None = None, campaign: int = 1) -> list[Path]:
    """``metaug-release campaign cards``: the card files of the leg's row (see :func:`write_cards`)."""
    rows = read_rows(campaign=campaign)
    return write_cards(row_of(rows, leg), final_evaluation(rows), output or get_campaign(campaign).out)


def recard_shipped(hub: Path = HUB, cards_dir: Path = OUT) -> list[Path]:
    """``metaug-release campaign recard``: re-render ``hub/cifar10-{conv,fc}/README.md`` from the
    campaign's card files (no checkpoint needed; the weights are not touched)."""
    return [cards.recard(hub / f"cifar10-{layer}", cards_dir / f"card-{layer}.json") for layer in cards.LAYERS]
