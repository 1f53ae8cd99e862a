"""The CPU training campaign's record: one row per leg (``benchmarks/campaign.jsonl``), the
table of ``benchmarks/CAMPAIGN.md`` and the learning-curve plot ``benchmarks/campaign.png``.

The flagship run (``metaug_training/recipes/cifar10-alexnet32-metaug.json``) trains in legs of
one session each; ``benchmarks/CAMPAIGN.md`` has the plan. After a leg stops
(``bash benchmarks/campaign_leg.sh LEG`` runs these):

    metaug-release evaluate --model runs/cifar10-alexnet32-metaug/full/export \\
        --data /tmp/cifar/cifar10 -o /tmp/campaign-eval --report benchmarks/campaign/leg1.json --threads 2
    metaug-release campaign row --leg 1 --eval benchmarks/campaign/leg1.json   # campaign.jsonl + png
    metaug-release campaign cards --leg 1                                      # card-*.json, summary
    metaug-release campaign readme --leg 1      # after the release export: README's released-models section

A row holds: leg, epoch, step, training minutes so far (from the run's ``log.jsonl``: the sum of
every logged interval's steps / rate, so gaps between legs do not count), the leg's images/s,
weighted k-NN k=200 on ``conv`` and ``fc`` and the fast linear probe on ``conv`` (more columns
when measured). The plot has the random-init floor and the first release's CMC as reference
lines (``benchmarks/release/floor.json`` and ``cmc.json``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from metaug_features.atomic import atomic_write_text
from metaug_features.errors import MetAugError

from .paths import BENCHMARKS, FIRST_RELEASE, REPO, RECIPES, repo_relative
from .records import EncoderEvaluation, load_evaluation
from .run_log import log_records, run_config, training_time
from .sections import write_section

RECIPE = RECIPES / "cifar10-alexnet32-metaug.json"
RUN = REPO / "runs" / "cifar10-alexnet32-metaug" / "full"
JSONL = BENCHMARKS / "campaign.jsonl"
PNG = BENCHMARKS / "campaign.png"
OUT = BENCHMARKS / "campaign"
DOC = BENCHMARKS / "CAMPAIGN.md"
LEGS = 5
#: The section of CAMPAIGN.md (the rows' table) and of RESULTS.md (the released state).
SECTION = "campaign"
#: Marks the last leg's row: an evaluation of the finished run's weights, no training.
FINAL_KIND = "final-evaluation"


# ---------------------------------------------------------------------- rows
def read_rows(path: Path = JSONL) -> list[dict[str, Any]]:
    """The campaign's rows (none when the file does not exist yet)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def write_rows(rows: list[dict[str, Any]], path: Path = JSONL) -> None:
    """Write the rows sorted by leg, atomically."""
    rows = sorted(rows, key=lambda r: r["leg"])
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def row_of(rows: list[dict[str, Any]], leg: int) -> dict[str, Any]:
    """The row of ``leg`` (an error that says what to run when there is none)."""
    row = next((x for x in rows if x["leg"] == leg), None)
    if row is None:
        raise MetAugError(f"no row for leg {leg} in {JSONL}; run `metaug-release campaign row` first")
    return row


def make_row(leg: int, evaluation: EncoderEvaluation, run_dir: Path, previous: list[dict[str, Any]]) -> dict[str, Any]:
    """The campaign row of ``leg`` from its evaluation and the run's log."""
    cfg = run_config(run_dir)
    batch, ckpt_every = cfg["optim"]["batch_size"], cfg["run"]["ckpt_every"]
    records = log_records(run_dir)
    prov = evaluation.provenance
    step = int(prov["steps"])
    steps_per_epoch = int(prov["num_samples"]) // batch
    last_leg_step = max((r["step"] for r in previous if r["leg"] < leg), default=0)
    upto = [r for r in records if r.get("step", 0) <= step]
    total_s, _ = training_time(upto, batch, ckpt_every)
    leg_s, leg_steps = training_time(upto, batch, ckpt_every, last_leg_step)
    row = {
        "leg": leg,
        "date_utc": evaluation.date_utc or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "epoch": round(float(prov["epochs"]), 3),
        "step": step,
        "planned_epochs": cfg["optim"]["epochs"],
        "training_minutes": round(total_s / 60, 1),
        "leg_minutes": round(leg_s / 60, 1),
        "leg_epochs": round((step - last_leg_step) / steps_per_epoch, 3),
        "images_per_s": round(leg_steps * batch / leg_s, 1) if leg_s else None,
        "knn_conv_k200": round(evaluation["conv"].knn[200], 2),
        "knn_fc_k200": round(evaluation["fc"].knn[200], 2),
        "probe_conv": round(_probe(evaluation, "conv"), 2),
    }
    if evaluation["fc"].probe is not None:
        row["probe_fc"] = round(evaluation["fc"].probe, 2)
    row["weights_sha256"] = evaluation.weights_sha256
    return row


def _probe(evaluation: EncoderEvaluation, layer: str) -> float:
    value = evaluation[layer].probe
    if value is None:
        raise MetAugError(f"{evaluation.source}: no fast probe on {layer!r}; a campaign row needs one")
    return value


def training_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of legs that trained (all but the last leg's evaluation-only row)."""
    return [r for r in rows if r.get("kind") != FINAL_KIND]


def final_evaluation(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last leg's evaluation-only row, if it has run."""
    return next((r for r in reversed(rows) if r.get("kind") == FINAL_KIND), None)


def schedule_complete(row: dict[str, Any], planned_epochs: float) -> bool:
    """True when the leg's row is at the end of the planned schedule (the final model)."""
    return row["epoch"] >= planned_epochs - 1e-3


def rows_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the legs for CAMPAIGN.md (accuracy in %, 10,000 test images)."""
    from metaug_training.model_card import markdown_table

    def released(r: dict[str, Any]) -> str:
        if r.get("kind") == FINAL_KIND:
            return (f"cards gain the paper probe: conv {r['paper_probe_conv']:.2f}, fc {r['paper_probe_fc']:.2f} "
                    f"(evaluation only)")
        return "yes" if r.get("released") else "no"

    return markdown_table([{
        "leg": r["leg"], "date (UTC)": r["date_utc"][:10], "epoch": f"{r['epoch']:.2f} of {r['planned_epochs']}",
        "epochs this leg": f"{r['leg_epochs']:.2f}", "training min (total)": r["training_minutes"],
        "img/s (leg)": r["images_per_s"] if r["images_per_s"] is not None else "-",
        "k-NN k=200 conv": f"{r['knn_conv_k200']:.2f}",
        "k-NN k=200 fc": f"{r['knn_fc_k200']:.2f}", "fast probe conv": f"{r['probe_conv']:.2f}",
        "fast probe fc": f"{r['probe_fc']:.2f}" if "probe_fc" in r else "-",
        "released": released(r)} for r in rows])


# ---------------------------------------------------------------------- plot
def references(release_dir: Path = FIRST_RELEASE) -> dict[str, dict[str, float]]:
    """Reference accuracies: the random-init floor and the first release's CMC (conv, fc)."""
    out = {}
    for name, file in (("random init (floor)", "floor.json"), ("CMC, first release", "cmc.json")):
        ev = load_evaluation(release_dir / file)
        out[name] = {"knn_conv_k200": ev["conv"].knn[200], "knn_fc_k200": ev["fc"].knn[200],
                     "probe_conv": _probe(ev, "conv")}
    return out


def plot(rows: list[dict[str, Any]], path: Path = PNG) -> Path:
    """Draw the legs' accuracies against epochs (with the references) into ``path``, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    finals = [r for r in rows if r.get("kind") == FINAL_KIND]
    rows = training_rows(rows)
    ep = [0.0] + [r["epoch"] for r in rows]
    refs = references()
    floor = refs["random init (floor)"]
    series = (("knn_conv_k200", "k-NN k=200, conv", "C0"), ("knn_fc_k200", "k-NN k=200, fc", "C1"),
              ("probe_conv", "fast linear probe, conv", "C2"))
    for key, label, colour in series:
        # Epoch 0 is the random-init encoder (the floor's numbers: same architecture, untrained).
        ax.plot(ep, [floor[key]] + [r[key] for r in rows], "o-", color=colour, label=label)
    for r in finals:  # the last leg's paper-protocol probe of the final model
        for layer, colour in (("conv", "C3"), ("fc", "C4")):
            ax.plot([r["epoch"]], [r[f"paper_probe_{layer}"]], "*", color=colour, markersize=12,
                    label=f"paper linear probe, {layer} (leg {r['leg']})")
    for (name, ref), style in zip(refs.items(), (":", "--")):
        for key, colour in (("knn_conv_k200", "C0"), ("probe_conv", "C2")):
            ax.axhline(ref[key], color=colour, linestyle=style, linewidth=1, alpha=0.8)
        ax.plot([], [], color="grey", linestyle=style, label=f"{name} (k-NN and probe, conv)")
    planned = rows[-1]["planned_epochs"] if rows else None
    ax.set_xlim(0, planned * 1.03 if planned else None)
    ax.set_xlabel(f"epoch (of {planned} planned)" if planned else "epoch")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    ax.set_title("MetAug alexnet32 w0.5 on the 2-core CPU: campaign legs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------- operations
def record_row(leg: int, eval_path: Path, run_dir: Path = RUN, released: bool = False) -> dict[str, Any]:
    """``metaug-release campaign row``: append (or replace) the leg's row in campaign.jsonl,
    rewrite CAMPAIGN.md's table and redraw campaign.png; return the row."""
    rows = read_rows()
    row = make_row(leg, load_evaluation(eval_path), run_dir, rows)
    row["released"] = bool(released)
    row["eval"] = repo_relative(eval_path)
    write_rows([x for x in rows if x["leg"] != leg] + [row])
    write_section(DOC, rows_table(read_rows()), SECTION)
    plot(read_rows())
    return row


def redraw() -> Path:
    """``metaug-release campaign plot``: redraw campaign.png from campaign.jsonl."""
    return plot(read_rows())
