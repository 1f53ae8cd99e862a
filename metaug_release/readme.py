"""The README's "Released models" table and paragraphs (the ``release`` section): one row per
shipped folder and one paragraph per shipped pair, from each pair's released campaign row, its
evaluation, its recipe, the first release's references and the shipped folders' sizes
(``python -m metaug_release campaign readme``).

The pairs are the campaigns' shipped folders (:func:`.campaign.shipped_campaigns`): the default
``hub/cifar10-{conv,fc}`` first (MetAug (only OUCL), campaign 2), then ``hub/cifar10-metaug-{conv,fc}``
(MetAug, campaign 1). Each row and paragraph says which method trained the weights."""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaug_features.errors import MetAugError

from .campaign import (
    DEFAULT_RELEASE_NAME,
    RELEASE_LAYERS,
    Campaign,
    campaign_of,
    current_release_row,
    final_evaluation,
    get_campaign,
    method_label,
    read_rows,
    schedule_complete,
    shipped_campaigns,
)
from .paths import FIRST_RELEASE, HUB, README, REPO, repo_relative
from .records import EncoderEvaluation, load_evaluation
from .run_log import run_budget
from .sections import write_section

SECTION = "release"
#: The official MetAug code's meta-step values (docs/METHODS.md; issue #54): a paragraph says
#: "the official code's values" only for a recipe that has exactly these.
OFFICIAL_METAUG = {"delta": 1e-5, "alpha": 1e-11, "inner_lr": 1e-3}


@dataclass(frozen=True)
class ShippedPair:
    """One shipped pair of folders (``conv`` and ``fc``) and the records it was made from.

    row: the campaign's released row; evaluation: its evaluation report; final: the campaign's
    evaluation-only last row (paper probe), when it has run; sizes: layer -> bytes of the shipped
    folder; recipe_path: the recipe (default the campaign's)."""

    row: dict[str, Any]
    evaluation: EncoderEvaluation
    final: dict[str, Any] | None
    sizes: dict[str, int]
    recipe_path: Path | None = None

    @property
    def campaign(self) -> Campaign:
        return get_campaign(campaign_of(self.row))

    @property
    def recipe(self) -> dict[str, Any]:
        return json.loads((self.recipe_path or self.campaign.recipe).read_text())


def table_rows(pair: ShippedPair, paper_column: bool) -> list[dict[str, str]]:
    """The table's rows of one pair (``paper_column``: the table has a paper-probe column)."""
    c, ev, final = pair.campaign, pair.evaluation, pair.final
    return [{
        "folder (alias)": f"`hub/{c.alias(layer)}` (`{c.alias(layer)}`)",
        "method": method_label(pair.recipe["method"]),
        "default feature": f"`{layer}`, {ev[layer].dim}-d",
        "size": f"{pair.sizes[layer] / 1e6:.1f} MB",
        "k-NN k=200": f"{ev[layer].knn[200]:.2f}",
        "fast linear probe": f"{ev[layer].probe:.2f}",
        **({"paper linear probe": f"{final[f'paper_probe_{layer}']:.2f}" if final is not None else "not measured"}
           if paper_column else {}),
        "k-means NMI (%)": f"{ev[layer].nmi_percent:.2f}"} for layer in RELEASE_LAYERS]


def _method_text(recipe: dict[str, Any]) -> str:
    """The method and its meta step, as the paragraph says them."""
    method = recipe["method"]
    if method == "metaug":
        mt = recipe["metaug"]
        values = f"delta {mt['delta']:g}, alpha {mt['alpha']:g}, inner lr {mt['inner_lr']:g}"
        official = all(math.isclose(mt[k], v, rel_tol=1e-9) for k, v in OFFICIAL_METAUG.items())
        return (f"**MetAug** (meta feature augmentation; meta step every {mt['meta_every']} iterations, {values}"
                + (": the official code's values)" if official else ")"))
    if method == "oucl":
        return ("**MetAug (only OUCL)** (the MetAug paper's Table 1 name for its unified contrastive loss OUCL on its "
                "own: no meta feature augmentation, no meta step)")
    return f"**{method_label(method)}**"


def pair_paragraph(pair: ShippedPair) -> str:
    """The paragraph of one pair: folders and aliases, method, recipe, training, where each number came from."""
    c, row, final, recipe = pair.campaign, pair.row, pair.final, pair.recipe
    m, o = recipe["model"], recipe["optim"]
    legs = "leg 1" if row["leg"] == 1 else f"legs 1-{row['leg']}"
    views = "/".join("L" if v == "l" else v for v in m["views"])
    if schedule_complete(row, o["epochs"]):
        trained = f"trained the whole {o['epochs']}-epoch schedule"
        status = "the campaign's final model" if c.number == 1 else f"campaign {c.number}'s final model"
    else:
        trained = f"trained {row['epoch']:.1f} of a planned {o['epochs']} epochs"
        status = "later legs replace it"
    which = "the CPU training campaign" if c.number == 1 else f"CPU training campaign {c.number}"
    conv, fc = c.alias("conv"), c.alias("fc")
    default = " (the default aliases)" if c.release_name == DEFAULT_RELEASE_NAME else ""
    recipe_path = pair.recipe_path or c.recipe
    text = (
        f"`hub/{conv}` and `hub/{fc}`{default} hold the same network (float16 weights, identical `conv` features): "
        f"{_method_text(recipe)}, `{m['architecture']}` width {m['width']}, views {views}, batch {o['batch_size']}, "
        f"{trained} on the CIFAR-10 (JPEG q75) train split in {row['training_minutes']:.0f} minutes on the 2-core "
        f"CPU: {legs} of {c.legs} of {which} (recipe `{recipe_path.relative_to(REPO).as_posix()}`, "
        f"`benchmarks/CAMPAIGN.md`; {status}). Measured on the shipped weights by `bash benchmarks/campaign_leg.sh "
        f"{row['leg']}{c.script_arg}` ({row['date_utc'][:10]})"
        + (f"; the paper linear probe (docs/METHODS.md section 7, {final['paper_probe_epochs']} epochs, "
           f"{final['paper_probe_summary']}) by `bash benchmarks/campaign_final.sh {final['leg']}{c.script_arg}` "
           f"({final['date_utc'][:10]})." if final is not None else "."))
    if c.diagnostics is not None and c.diagnostics.is_file():
        text += (f" Its cards say what the meta diagnostics measured on its MAGs "
                 f"(`{repo_relative(c.diagnostics)}`).")
    return textwrap.fill(text, width=100, break_on_hyphens=False)


def readme_section(pairs: Sequence[ShippedPair], cmc_eval: Path = FIRST_RELEASE / "cmc.json",
                   floor_eval: Path = FIRST_RELEASE / "floor.json", cmc_run: Path = FIRST_RELEASE / "runs" / "cmc") -> str:
    """The README's "Released models" table (a paper-probe column when any pair has its final row)
    and one paragraph per pair, then the references (random-init floor, the first release's CMC).
    Every number comes from the pairs' records and the first release's reference evaluations, so
    the README cannot drift from the cards."""
    from metaug_training.model_card import markdown_table

    if not pairs:
        raise MetAugError("no shipped pair to list")
    paper = any(p.final is not None for p in pairs)
    table = markdown_table([r for p in pairs for r in table_rows(p, paper)])
    floor, cmc = load_evaluation(floor_eval), load_evaluation(cmc_eval)
    cmc_epochs = run_budget(cmc_run)["epochs"]
    closing = textwrap.fill(
        f"Accuracy in % on the 10,000 test images. For reference: the random-init floor of the architecture is "
        f"{floor['conv'].knn[200]:.2f} / {floor['fc'].knn[200]:.2f} (k-NN) and {floor['conv'].probe:.2f} / "
        f"{floor['fc'].probe:.2f} (fast probe); the first release's CMC run ({cmc_epochs} epochs) reached "
        f"{cmc['conv'].knn[200]:.2f} / {cmc['conv'].probe:.2f} on `conv`. Details: `benchmarks/RESULTS.md` "
        f"(\"Training campaign\") and the model cards in each folder.", width=100, break_on_hyphens=False)
    return "\n\n".join([table, *(pair_paragraph(p) for p in pairs), closing]) + "\n"


def folder_bytes(hub: Path = HUB, release_name: str = DEFAULT_RELEASE_NAME) -> dict[str, int]:
    """Bytes of each folder (all its files) of the shipped pair ``hub/<release_name>-{conv,fc}``."""
    return {layer: sum(p.stat().st_size for p in (hub / f"{release_name}-{layer}").iterdir() if p.is_file())
            for layer in RELEASE_LAYERS}


def released_row(leg: int, campaign: int = 1) -> dict[str, Any]:
    """The released row of ``leg`` of ``campaign`` (an error when the leg was not released)."""
    row = next((x for x in read_rows(campaign=campaign) if x["leg"] == leg), None)
    if row is None or not row.get("released"):
        raise MetAugError(f"leg {leg} has no released row in benchmarks/campaign.jsonl")
    return row


def shipped_pair(c: Campaign, row: dict[str, Any] | None = None, hub: Path = HUB) -> ShippedPair:
    """The campaign's shipped pair: its last released row (or ``row``), evaluation, final row and sizes."""
    rows = read_rows(campaign=c.number)
    row = row or current_release_row(rows)
    if row is None:
        raise MetAugError(f"campaign {c.number} has no released leg in benchmarks/campaign.jsonl")
    return ShippedPair(row=row, evaluation=load_evaluation(REPO / row["eval"]), final=final_evaluation(rows),
                       sizes=folder_bytes(hub, c.release_name))


def shipped_pairs(hub: Path = HUB) -> list[ShippedPair]:
    """Every shipped pair, the default first (:func:`.campaign.shipped_campaigns`)."""
    return [shipped_pair(c, hub=hub) for c in shipped_campaigns(hub)]


def write_readme(leg: int | None = None, readme: Path = README, campaign: int = 1) -> Path:
    """``python -m metaug_release campaign readme``: rewrite the README's released-models section
    (between the ``<!-- release:start -->`` markers, which must be there) for the release of ``leg``
    of ``campaign`` (default: its last released leg) and the other shipped pairs."""
    c = get_campaign(campaign)
    if not c.shipped():
        raise MetAugError(f"campaign {campaign}'s folders hub/{c.alias('conv')} and hub/{c.alias('fc')} are not there")
    mine = shipped_pair(c, released_row(leg, campaign) if leg is not None else None)
    pairs = [mine if p.campaign.number == campaign else p for p in shipped_pairs()]
    return write_section(readme, readme_section(pairs), SECTION, append=False)
