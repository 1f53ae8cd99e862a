"""Turn measured evaluations into the card-metrics JSON files that ``metaug-export --card-metrics``
renders into the release model cards, and a Markdown summary for ``benchmarks/RESULTS.md``.

Inputs are the JSON outputs of ``benchmarks/evaluate_encoder.py`` (the released MetAug run, its
CMC baseline at equal budget, the random-init floor of the same architecture) and the two
training run folders (``log.jsonl`` and ``config.json``, for the budget). Nothing is typed in by
hand: every number on a card comes from these files.

    python benchmarks/make_release_cards.py \\
        --metaug-eval benchmarks/release/metaug.json --cmc-eval benchmarks/release/cmc.json \\
        --floor-eval benchmarks/release/floor.json \\
        --metaug-run runs/cifar10-release-metaug/full --cmc-run runs/cifar10-release-cmc/full \\
        --recipe metaug_training/recipes/cifar10-release-metaug.json --out benchmarks/release

writes ``card-conv.json``, ``card-fc.json`` and ``summary.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from metaug_features.evaluation.clustering import clustering_in_percent
from metaug_features.hub import MODEL_ALIASES
from metaug_training.model_card import markdown_table

DATASET = "CIFAR-10 (JPEG q75)"
TASK = "image-classification"
#: The Hub repos the cards are written for: those the built-in aliases point to.
REPO_IDS = {layer: MODEL_ALIASES[f"cifar10-{layer}"][0] for layer in ("conv", "fc")}


def run_budget(run_dir: Path) -> dict[str, Any]:
    """Epochs, steps, images/s and wall-clock minutes of a finished training run, from its log."""
    cfg = json.loads((run_dir / "config.json").read_text())
    recs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in recs if "step" in r and "img_per_s" in r]
    if len(steps) < 2:
        raise SystemExit(f"{run_dir}/log.jsonl has too few step records")
    first, last = steps[0], steps[-1]
    batch = cfg["optim"]["batch_size"]
    img_per_s = (last["step"] - first["step"]) * batch / (last["time"] - first["time"])
    return {
        "method": cfg["method"],
        "epochs": round(last["epoch"], 2),
        "steps": last["step"],
        "batch_size": batch,
        "schedule": f"{cfg['optim']['schedule']} over {cfg['optim']['epochs']} epochs, lr {cfg['optim']['lr']}",
        "wall_clock_minutes": cfg["run"]["stop_after_minutes"] or None,
        "images_per_second": round(img_per_s, 1),
        "torch_threads": cfg["run"]["num_threads"],
        "meta_every": cfg.get("metaug", {}).get("meta_every") if cfg["method"] == "metaug" else None,
    }


def layer_metrics(ev: dict[str, Any], layer: str) -> list[dict[str, Any]]:
    """Card metric entries (training.model_card format) of one layer of an evaluation JSON."""
    e = ev[layer]
    base = {"task": TASK, "dataset": DATASET, "dataset_type": "cifar10", "split": "test"}
    out = [
        {**base, "metric": "accuracy", "name": f"weighted k-NN k=200 T=0.07 ({layer})", "value": e["knn"]["k200"]["top1"],
         "args": {"protocol": "knn", "k": 200, "temperature": 0.07, "layer": layer}},
        {**base, "metric": "accuracy", "name": f"weighted k-NN k=20 T=0.07 ({layer})", "value": e["knn"]["k20"]["top1"],
         "args": {"protocol": "knn", "k": 20, "temperature": 0.07, "layer": layer}},
        {**base, "metric": "accuracy", "name": f"fast linear probe ({layer})", "value": e["probe"]["top1"],
         "args": {"protocol": "fast-probe", "layer": layer, "C": e["probe"]["chosen_c"]}},
        {**base, "metric": "nmi", "name": f"k-means NMI in % ({layer})",
         "value": round(clustering_in_percent(e["kmeans"])["nmi_percent"], 2),
         "args": {"protocol": "kmeans", "layer": layer, "scale": "percent"}},
        {**base, "metric": "accuracy", "name": f"k-means accuracy ({layer})", "value": round(e["kmeans"]["accuracy"], 2),
         "args": {"protocol": "kmeans", "layer": layer}},
    ]
    for m in out:
        m["value"] = round(float(m["value"]), 2)
    return out


def comparison_rows(evals: dict[str, dict[str, Any]], budgets: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """One row per (model, layer): k-NN k=200, fast probe, k-means NMI/accuracy, epochs."""
    rows = []
    for name, ev in evals.items():
        b = budgets.get(name)
        for layer in ("conv", "fc"):
            e = ev[layer]
            rows.append({
                "model": name, "layer": layer,
                "k-NN k=200": round(e["knn"]["k200"]["top1"], 2),
                "fast probe": round(e["probe"]["top1"], 2),
                "k-means NMI (%)": round(clustering_in_percent(e["kmeans"])["nmi_percent"], 2),
                "k-means acc": round(e["kmeans"]["accuracy"], 2),
                "epochs": b["epochs"] if b else 0,
            })
    return rows


def floor_and_baseline_notes(evals: dict[str, dict[str, Any]], budgets: dict[str, dict[str, Any] | None],
                             layer: str) -> list[str]:
    """Card limitations that follow from the numbers: where the released model is below the
    random-init floor or behind CMC at equal budget (empty when it beats both)."""
    m, c, f = (evals[k][layer] for k in ("MetAug (this model)", "CMC, equal budget", "random init (floor)"))
    mb, cb = budgets["MetAug (this model)"], budgets["CMC, equal budget"]
    metrics = {"weighted k-NN k=200": lambda e: e["knn"]["k200"]["top1"], "fast linear probe": lambda e: e["probe"]["top1"]}
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metaug-eval", type=Path, required=True)
    ap.add_argument("--cmc-eval", type=Path, required=True)
    ap.add_argument("--floor-eval", type=Path, required=True)
    ap.add_argument("--metaug-run", type=Path, required=True)
    ap.add_argument("--cmc-run", type=Path, required=True)
    ap.add_argument("--recipe", type=Path, required=True, help="the released run's recipe file")
    ap.add_argument("--hardware", default="CPU only: 2 cores (x86_64), 24 GB RAM; the MetAug and CMC runs trained "
                                          "side by side, one core (1 torch thread) each")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    evals = {n: json.loads(p.read_text()) for n, p in
             (("MetAug (this model)", args.metaug_eval), ("CMC, equal budget", args.cmc_eval),
              ("random init (floor)", args.floor_eval))}
    budgets = {"MetAug (this model)": run_budget(args.metaug_run), "CMC, equal budget": run_budget(args.cmc_run),
               "random init (floor)": None}
    mb, cb = budgets["MetAug (this model)"], budgets["CMC, equal budget"]
    if mb["wall_clock_minutes"] != cb["wall_clock_minutes"]:
        raise SystemExit(f"the runs' budgets differ: {mb['wall_clock_minutes']} vs {cb['wall_clock_minutes']} minutes")
    recipe = json.loads(args.recipe.read_text())
    recipe_name = args.recipe.stem
    budget = {
        "command": f"metaug-train --config metaug_training/recipes/{args.recipe.name}",
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
    rows = comparison_rows(evals, budgets)
    args.out.mkdir(parents=True, exist_ok=True)
    for layer in ("conv", "fc"):
        spec = {"metrics": layer_metrics(evals["MetAug (this model)"], layer), "recipe": recipe,
                "budget": budget, "hardware": args.hardware, "comparison": rows, "repo_id": REPO_IDS[layer],
                "license": "mit", "notes": floor_and_baseline_notes(evals, budgets, layer)}
        (args.out / f"card-{layer}.json").write_text(json.dumps(spec, indent=2) + "\n")
    summary = (f"Recipe `{recipe_name}`; budget {mb['wall_clock_minutes']} wall-clock minutes on one core each "
               f"(MetAug {mb['epochs']} epochs at {mb['images_per_second']} img/s, CMC {cb['epochs']} epochs at "
               f"{cb['images_per_second']} img/s).\n\n" + markdown_table(rows) + "\n")
    for layer in ("conv", "fc"):
        summary += "".join(f"\n- {n}" for n in floor_and_baseline_notes(evals, budgets, layer))
    summary += "\n"
    (args.out / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
