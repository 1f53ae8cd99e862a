"""The README's "Released models" table and paragraph (the ``release`` section), from the
released campaign row, its evaluation, the recipe, the first release's references and the
shipped folders' sizes (``metaug-release campaign readme``)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from metaug_features.errors import MetAugError

from .campaign import METHOD_LABELS, campaign_of, final_evaluation, get_campaign, read_rows, schedule_complete
from .paths import FIRST_RELEASE, HUB, README, REPO
from .records import EncoderEvaluation, load_evaluation
from .run_log import run_budget
from .sections import write_section

SECTION = "release"


def readme_section(evaluation: EncoderEvaluation, row: dict[str, Any], folder_bytes: dict[str, int],
                   recipe_path: Path | None = None, cmc_eval: Path = FIRST_RELEASE / "cmc.json",
                   floor_eval: Path = FIRST_RELEASE / "floor.json",
                   cmc_run: Path = FIRST_RELEASE / "runs" / "cmc", final: dict[str, Any] | None = None) -> str:
    """The README's "Released models" table and paragraph for the release made from ``row``
    (with ``final``, the last leg's evaluation-only row, a paper-probe column too).

    ``folder_bytes``: the shipped size of ``hub/cifar10-{conv,fc}`` (layer -> bytes), measured
    after the export. Every number comes from the evaluation, the row, the recipe and the
    first release's reference evaluations, so the README cannot drift from the cards."""
    from metaug_training.model_card import markdown_table

    c = get_campaign(campaign_of(row))
    recipe_path = recipe_path or c.recipe
    recipe = json.loads(recipe_path.read_text())
    floor, cmc = load_evaluation(floor_eval), load_evaluation(cmc_eval)
    cmc_epochs = run_budget(cmc_run)["epochs"]
    table = markdown_table([{
        "folder (alias)": f"`hub/cifar10-{layer}` (`cifar10-{layer}`)",
        "default feature": f"`{layer}`, {evaluation[layer].dim}-d",
        "size": f"{folder_bytes[layer] / 1e6:.1f} MB",
        "k-NN k=200": f"{evaluation[layer].knn[200]:.2f}",
        "fast linear probe": f"{evaluation[layer].probe:.2f}",
        **({"paper linear probe": f"{final[f'paper_probe_{layer}']:.2f}"} if final is not None else {}),
        "k-means NMI (%)": f"{evaluation[layer].nmi_percent:.2f}"} for layer in ("conv", "fc")])
    m, o = recipe["model"], recipe["optim"]
    legs = "leg 1" if row["leg"] == 1 else f"legs 1-{row['leg']}"
    views = "/".join("L" if v == "l" else v for v in m["views"])
    if schedule_complete(row, o["epochs"]):
        trained = f"trained the whole {o['epochs']}-epoch schedule"
        status = "the campaign's final model" if c.number == 1 else f"campaign {c.number}'s final model"
    else:
        trained = f"trained {row['epoch']:.1f} of a planned {o['epochs']} epochs"
        status = "later legs replace it"
    method = METHOD_LABELS.get(recipe["method"], recipe["method"])
    step = (f"meta step every {recipe['metaug']['meta_every']} iterations" if recipe["method"] == "metaug"
            else "no meta step")
    which = "the CPU training campaign" if c.number == 1 else f"CPU training campaign {c.number}"
    paragraph = (
        f"Both folders hold the same network (float16 weights, identical `conv` features): {method}, "
        f"`{m['architecture']}` width {m['width']}, views {views}, batch {o['batch_size']}, {step}, {trained} "
        f"on the CIFAR-10 (JPEG q75) train split in {row['training_minutes']:.0f} minutes on the 2-core CPU: "
        f"{legs} of {c.legs} of {which} (recipe `{recipe_path.relative_to(REPO).as_posix()}`, "
        f"`benchmarks/CAMPAIGN.md`; {status}). Accuracy in % on the 10,000 test images, measured "
        f"on the shipped weights by `bash benchmarks/campaign_leg.sh {row['leg']}{c.script_arg}` ({row['date_utc'][:10]})"
        + (f"; the paper linear probe (docs/METHODS.md section 7, {final['paper_probe_epochs']} epochs, "
           f"{final['paper_probe_summary']}) by `bash benchmarks/campaign_final.sh {final['leg']}{c.script_arg}` "
           f"({final['date_utc'][:10]}). " if final is not None else ". ") +
        f"For reference: the random-init floor of the architecture is {floor['conv'].knn[200]:.2f} / "
        f"{floor['fc'].knn[200]:.2f} (k-NN) and {floor['conv'].probe:.2f} / {floor['fc'].probe:.2f} (fast probe); the "
        f"first release's CMC run ({cmc_epochs} epochs) reached {cmc['conv'].knn[200]:.2f} / {cmc['conv'].probe:.2f} "
        f"on `conv`. Details: `benchmarks/RESULTS.md` (\"Training campaign\") and the model cards in each folder.")
    return table + "\n\n" + textwrap.fill(paragraph, width=100, break_on_hyphens=False) + "\n"


def folder_bytes(hub: Path = HUB) -> dict[str, int]:
    """Bytes of each shipped release folder (all its files)."""
    return {layer: sum(p.stat().st_size for p in (hub / f"cifar10-{layer}").iterdir() if p.is_file())
            for layer in ("conv", "fc")}


def released_row(leg: int, campaign: int = 1) -> dict[str, Any]:
    """The released row of ``leg`` of ``campaign`` (an error when the leg was not released)."""
    row = next((x for x in read_rows(campaign=campaign) if x["leg"] == leg), None)
    if row is None or not row.get("released"):
        raise MetAugError(f"leg {leg} has no released row in benchmarks/campaign.jsonl")
    return row


def write_readme(leg: int, readme: Path = README, campaign: int = 1) -> Path:
    """``metaug-release campaign readme``: rewrite the README's released-models section (between
    the ``<!-- release:start -->`` markers, which must be there) for the release of ``leg``."""
    row = released_row(leg, campaign)
    section = readme_section(load_evaluation(REPO / row["eval"]), row, folder_bytes(),
                             final=final_evaluation(read_rows(campaign=campaign)))
    return write_section(readme, section, SECTION, append=False)
