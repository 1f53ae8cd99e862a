"""The CPU training campaign's record: one row per leg, the learning-curve plot, the release cards.

The flagship run (``metaug_training/recipes/cifar10-alexnet32-metaug.json``) trains in legs of one
session each; ``benchmarks/CAMPAIGN.md`` has the plan. After a leg stops:

    python benchmarks/evaluate_encoder.py --model runs/cifar10-alexnet32-metaug/full/export \\
        --data /tmp/cifar/cifar10 --out /tmp/campaign-eval --json benchmarks/campaign/leg1.json --threads 2
    python benchmarks/campaign.py row --leg 1 --eval benchmarks/campaign/leg1.json      # campaign.jsonl + png
    python benchmarks/campaign.py cards --leg 1                                          # card-*.json, summary
    python benchmarks/campaign.py readme --leg 1      # after the release export: README's released-models section

The last leg, once the schedule is complete, runs the full evaluation of the final model
(``bash benchmarks/campaign_final.sh 5``: the paper-protocol linear probe, t-SNE plots), then

    python benchmarks/campaign.py final --leg 5 --paper-probe P_CONV.json P_FC.json   # row, cards, RESULTS
    python benchmarks/campaign.py recard                 # re-render the shipped cards (weights untouched)

``row`` appends (or replaces) the leg's row in ``benchmarks/campaign.jsonl``: leg, epoch, step,
training minutes so far (from the run's ``log.jsonl``: the sum of every logged interval's
steps / rate, so gaps between legs do not count), the leg's images/s, weighted k-NN k=200 on
``conv`` and ``fc`` and the fast linear probe on ``conv`` (more columns when measured), then
redraws ``benchmarks/campaign.png`` with the random-init floor and the first release's CMC as
reference lines (``benchmarks/release/floor.json`` and ``cmc.json``). ``cards`` writes the
card-metrics files that ``metaug-export --card-metrics`` renders into ``hub/cifar10-{conv,fc}``;
``readme`` rewrites the README's "Released models" table and paragraph (between the
``<!-- release:start -->`` markers) from the released row, its evaluation and the folders' sizes.
``final`` records the evaluation-only row of the last leg (no epochs: the schedule is complete),
adds the paper-probe numbers to the cards and writes RESULTS.md's table of the released models
beside the paper's alexnet224 numbers, the first release and the random-init floor. Every number
comes from these files; nothing is typed in except the paper's two quoted accuracies.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

from metaug_training.schedule import cosine_factor

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "metaug_training" / "recipes" / "cifar10-alexnet32-metaug.json"
RUN = REPO / "runs" / "cifar10-alexnet32-metaug" / "full"
JSONL = REPO / "benchmarks" / "campaign.jsonl"
PNG = REPO / "benchmarks" / "campaign.png"
OUT = REPO / "benchmarks" / "campaign"
FIRST_RELEASE = REPO / "benchmarks" / "release"
LEGS = 5


DOC = REPO / "benchmarks" / "CAMPAIGN.md"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
MARKERS = ("<!-- campaign:start -->", "<!-- campaign:end -->")
FINAL_MARKERS = ("<!-- campaign_final:start -->", "<!-- campaign_final:end -->")
#: Marks the last leg's row: an evaluation of the finished run's weights, no training.
FINAL_KIND = "final-evaluation"
#: The MetAug paper's linear-probe accuracies for alexnet224 on CIFAR-10 (Li et al., ICML 2022),
#: as quoted by issue #18 and ../shared/docs/GPU-QUEUE.md: a reference, not like-for-like (224-px
#: upsampled inputs, 13,824-d conv / 6,144-d fc features, the paper's GPU schedule).
PAPER_ALEXNET224 = {"conv": 87.87, "fc": 88.12}
README = REPO / "README.md"
README_MARKERS = ("<!-- release:start -->", "<!-- release:end -->")
HUB = REPO / "hub"


def _sibling(name: str):
    """Another script of benchmarks/ as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cards_module():
    return _sibling("make_release_cards")


# ---------------------------------------------------------------------- the run's log
def log_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]


def interval_steps(step: int, prev_step: int | None, ckpt_every: int) -> int:
    """Steps a logged interval covers. After a restart the first record's step does not exceed
    the last one written before (a kill lost the steps after the last checkpoint), and the
    process resumed from the checkpoint below it: a multiple of ``ckpt_every``."""
    if prev_step is not None and step > prev_step:
        return step - prev_step
    return step - ckpt_every * ((step - 1) // ckpt_every) if prev_step is not None else step


def training_time(records: list[dict[str, Any]], batch_size: int, ckpt_every: int,
                  after_step: int = 0) -> tuple[float, int]:
    """(seconds, steps) of training in the logged intervals (each: steps * batch / images/s),
    counting only records past ``after_step`` (0 = the whole run)."""
    seconds, steps, prev = 0.0, 0, None
    for r in records:
        if "img_per_s" not in r:
            continue
        n = interval_steps(r["step"], prev, ckpt_every)
        prev = r["step"]
        if r["step"] > after_step:
            seconds += n * batch_size / r["img_per_s"]
            steps += n
    return seconds, steps


# ---------------------------------------------------------------------- rows
def read_rows(path: Path = JSONL) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def make_row(leg: int, evaluation: dict[str, Any], run_dir: Path, previous: list[dict[str, Any]]) -> dict[str, Any]:
    """The campaign row of ``leg`` from its evaluation JSON and the run's log."""
    cfg = json.loads((run_dir / "config.json").read_text())
    batch, ckpt_every = cfg["optim"]["batch_size"], cfg["run"]["ckpt_every"]
    records = log_records(run_dir)
    prov = evaluation["encoder"]["provenance"]
    step = int(prov["steps"])
    steps_per_epoch = int(prov["num_samples"]) // batch
    last_leg_step = max((r["step"] for r in previous if r["leg"] < leg), default=0)
    upto = [r for r in records if r.get("step", 0) <= step]
    total_s, _ = training_time(upto, batch, ckpt_every)
    leg_s, leg_steps = training_time(upto, batch, ckpt_every, last_leg_step)
    row = {
        "leg": leg,
        "date_utc": evaluation.get("date_utc", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        "epoch": round(float(prov["epochs"]), 3),
        "step": step,
        "planned_epochs": cfg["optim"]["epochs"],
        "training_minutes": round(total_s / 60, 1),
        "leg_minutes": round(leg_s / 60, 1),
        "leg_epochs": round((step - last_leg_step) / steps_per_epoch, 3),
        "images_per_s": round(leg_steps * batch / leg_s, 1) if leg_s else None,
        "knn_conv_k200": round(evaluation["conv"]["knn"]["k200"]["top1"], 2),
        "knn_fc_k200": round(evaluation["fc"]["knn"]["k200"]["top1"], 2),
        "probe_conv": round(evaluation["conv"]["probe"]["top1"], 2),
    }
    if "probe" in evaluation["fc"]:
        row["probe_fc"] = round(evaluation["fc"]["probe"]["top1"], 2)
    row["weights_sha256"] = evaluation["encoder"].get("weights_sha256")
    return row


def training_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of legs that trained (all but the last leg's evaluation-only row)."""
    return [r for r in rows if r.get("kind") != FINAL_KIND]


def final_evaluation(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last leg's evaluation-only row, if it has run."""
    return next((r for r in reversed(rows) if r.get("kind") == FINAL_KIND), None)


def write_rows(rows: list[dict[str, Any]], path: Path = JSONL) -> None:
    rows = sorted(rows, key=lambda r: r["leg"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


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
def references() -> dict[str, dict[str, float]]:
    """Reference accuracies: the random-init floor and the first release's CMC (conv, fc)."""
    out = {}
    for name, file in (("random init (floor)", "floor.json"), ("CMC, first release", "cmc.json")):
        ev = json.loads((FIRST_RELEASE / file).read_text())
        out[name] = {"knn_conv_k200": ev["conv"]["knn"]["k200"]["top1"], "knn_fc_k200": ev["fc"]["knn"]["k200"]["top1"],
                     "probe_conv": ev["conv"]["probe"]["top1"]}
    return out


def plot(rows: list[dict[str, Any]], path: Path = PNG) -> None:
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


# ---------------------------------------------------------------------- cards
def schedule_complete(row: dict[str, Any], planned_epochs: float) -> bool:
    """True when the leg's row is at the end of the planned schedule (the final model)."""
    return row["epoch"] >= planned_epochs - 1e-3


def card_specs(evaluation: dict[str, Any], row: dict[str, Any], recipe_path: Path = RECIPE,
               cmc_eval: Path = FIRST_RELEASE / "cmc.json", floor_eval: Path = FIRST_RELEASE / "floor.json",
               cmc_run: Path = FIRST_RELEASE / "runs" / "cmc",
               final: dict[str, Any] | None = None) -> tuple[dict[str, dict[str, Any]], str]:
    """Card-metrics specs for ``conv`` and ``fc`` and a Markdown summary for RESULTS.md.

    ``final``: the last leg's evaluation-only row (:func:`final_row`), when it has run: each card
    gains its layer's paper-probe metric and the final note quotes both layers."""
    cards = _cards_module()
    recipe = json.loads(recipe_path.read_text())
    cmc_budget = cards.run_budget(cmc_run)
    evals = {"MetAug (this model)": evaluation, "CMC, first release": json.loads(cmc_eval.read_text()),
             "random init (floor)": json.loads(floor_eval.read_text())}
    budgets = {"MetAug (this model)": {"epochs": row["epoch"]}, "CMC, first release": cmc_budget,
               "random init (floor)": None}
    rows = cards.comparison_rows(evals, budgets)
    o = recipe["optim"]
    f = cosine_factor(row["epoch"] / o["epochs"])
    done = schedule_complete(row, o["epochs"])
    budget = {
        "command": f"metaug-train --config metaug_training/recipes/{recipe_path.name} --resume (one leg per session)",
        "campaign": f"leg {row['leg']} of {LEGS}; epoch {row['epoch']} of the planned {o['epochs']} "
                    f"(benchmarks/CAMPAIGN.md)",
        "training time": f"{row['training_minutes']} minutes on 2 CPU cores ({2 * row['training_minutes'] / 60:.1f} core-hours)",
        "steps": row["step"],
        "batch size": o["batch_size"],
        "learning-rate schedule": f"{o['schedule']} over {o['epochs']} epochs, lr {o['lr']} "
                                  + ("(complete)" if done else f"(now at {f:.2f} of its peak)"),
        "meta step": f"every {recipe['metaug']['meta_every']} iterations (metaug.meta_every)",
        "throughput": f"{row['images_per_s']} images/s (leg {row['leg']})",
    }
    hardware = "CPU only: 2 cores (x86_64, AMD EPYC), 24 GB RAM; 2 torch threads"
    specs = {}
    for layer in ("conv", "fc"):
        m, c, fl = (evals[k][layer] for k in ("MetAug (this model)", "CMC, first release", "random init (floor)"))
        if done and final is not None:
            notes = [f"**Final model of the CPU training campaign**: the {o['epochs']}-epoch schedule finished in leg "
                     f"{row['leg']} of {LEGS}; leg {final['leg']} evaluated it in full. Paper-protocol linear probe "
                     f"(docs/METHODS.md section 7: {final['paper_probe_epochs']} epochs of SGD on a linear layer with train-time "
                     f"augmentation; {final['paper_probe_summary']}): `conv` {final['paper_probe_conv']:.2f}, "
                     f"`fc` {final['paper_probe_fc']:.2f}. The MetAug paper reports {PAPER_ALEXNET224['conv']} / "
                     f"{PAPER_ALEXNET224['fc']} for its "
                     f"`alexnet224` after a GPU schedule: a reference, not like-for-like (`benchmarks/RESULTS.md`)."]
        elif done:
            notes = [f"**Final model of the CPU training campaign**: the {o['epochs']}-epoch schedule finished in leg "
                     f"{row['leg']} of {LEGS}. The numbers here are the fast evaluation every leg runs; the last leg "
                     f"adds the paper-protocol linear probe (`benchmarks/RESULTS.md`)."]
        else:
            notes = [f"**Training in progress**: this release is the state after leg {row['leg']} of {LEGS} of the CPU "
                     f"training campaign (epoch {row['epoch']} of {o['epochs']}; the learning rate is still "
                     f"{f:.2f} of its peak). Later legs replace it."]
        for name, get in (("weighted k-NN k=200", lambda e: e["knn"]["k200"]["top1"]),
                          ("fast linear probe", lambda e: e["probe"]["top1"])):
            if get(m) < get(fl):
                notes.append(f"**Below the random-init floor** on `{layer}` for {name} ({get(m):.2f} vs {get(fl):.2f}).")
        metrics = cards.layer_metrics(evaluation, layer)
        if final is not None:
            metrics.append(paper_probe_metric(final, layer))
        specs[layer] = {"metrics": metrics, "recipe": recipe, "budget": budget,
                        "hardware": hardware, "comparison": rows, "repo_id": cards.REPO_IDS[layer], "license": "mit",
                        "notes": notes, "comparison_title": "Comparison with the first release's CMC and the random-init floor"}
    from metaug_training.model_card import markdown_table

    summary = (f"Campaign leg {row['leg']} of {LEGS} (`{recipe_path.name}`): epoch {row['epoch']} of {o['epochs']}, "
               f"{row['training_minutes']} training minutes on 2 cores, {row['images_per_s']} img/s this leg; "
               f"CMC row: the first release's 90-minute run ({cmc_budget['epochs']} epochs).\n\n"
               + markdown_table(rows) + "\n")
    return specs, summary


# ---------------------------------------------------------------------- the last leg: full evaluation
def paper_probe_result(path: Path) -> dict[str, Any]:
    """Layer, top-1 and protocol of a ``metaug-eval paper-probe --report`` file.

    Refuses a file that is not a paper-probe report, or one run with other settings than
    docs/METHODS.md section 7's (a reduced-budget timing run must never reach a card)."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"cannot read paper-probe report {path}: {e}") from None
    ev = next((e for e in report.get("evaluations", []) if e.get("name") == "paper_probe"), None)
    if ev is None:
        raise SystemExit(f"{path}: not a `metaug-eval paper-probe` report")
    params = ev["params"]
    # The library's own definition of the paper budget (only seeds and averaging may differ).
    from dataclasses import fields

    from metaug_features.evaluation.paper_probe import PaperProbeConfig

    config = PaperProbeConfig(**{f.name: tuple(params[f.name]) if isinstance(params[f.name], list) else params[f.name]
                                 for f in fields(PaperProbeConfig) if f.name in params})
    if not config.is_paper_budget:
        raise SystemExit(f"{path}: not the paper's protocol (docs/METHODS.md section 7): {ev['protocol']}")
    return {"layer": params["layer"], "top1": round(float(ev["metrics"]["top1_mean"]), 2),
            "epochs": params["epochs"], "seeds": list(params["seeds"]), "average_last": params["average_last"],
            "minutes": round(params["seconds"] / 60, 1), "created_utc": report.get("created_utc"),
            "provenance": report["inputs"]["model"]["config"].get("provenance")}


def final_row(leg: int, released: dict[str, Any], reports: dict[str, Path], date_utc: str | None = None) -> dict[str, Any]:
    """The last leg's evaluation-only row: the released (final) weights, no training added, and
    the paper-protocol linear probe of ``conv`` and ``fc`` (``reports``: layer -> report file).

    Refuses when the schedule is not complete (that leg must train), when a report is of another
    layer or of other weights than the released row's."""
    if not schedule_complete(released, released["planned_epochs"]):
        raise SystemExit(f"leg {released['leg']} is at epoch {released['epoch']} of {released['planned_epochs']}: "
                         f"the schedule is not complete, so leg {leg} trains (benchmarks/campaign_leg.sh)")
    if leg <= released["leg"]:
        raise SystemExit(f"the final evaluation's leg ({leg}) must come after the released leg ({released['leg']})")
    if sorted(reports) != ["conv", "fc"]:
        raise SystemExit(f"need paper-probe reports for conv and fc, got {sorted(reports)}")
    results = {layer: paper_probe_result(path) for layer, path in reports.items()}
    evaluation = json.loads((REPO / released["eval"]).read_text())
    for layer, res in results.items():
        if res["layer"] != layer:
            raise SystemExit(f"{reports[layer]} probes layer {res['layer']!r}, not {layer!r}")
        if res["provenance"] != evaluation["encoder"]["provenance"]:
            raise SystemExit(f"{reports[layer]} probed other weights than the released leg {released['leg']}'s")
    first = results["conv"]
    if any((r["seeds"], r["average_last"]) != (first["seeds"], first["average_last"]) for r in results.values()):
        raise SystemExit("the conv and fc paper probes used different seeds or averaging")
    n = len(first["seeds"])
    summary = (f"{n} seed{'s' if n > 1 else ''}, mean test top-1 of the last {first['average_last']} "
               f"epoch{'s' if first['average_last'] > 1 else ''}")

    def rel(path: Path) -> str:
        path = Path(path).resolve()
        return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)

    return {
        "leg": leg, "kind": FINAL_KIND,
        # When the evaluation finished (the later report), so that re-running `final` changes nothing.
        "date_utc": date_utc or max(r["created_utc"] for r in results.values()),
        "epoch": released["epoch"], "step": released["step"], "planned_epochs": released["planned_epochs"],
        "training_minutes": released["training_minutes"], "leg_minutes": 0.0, "leg_epochs": 0.0, "images_per_s": None,
        **{k: released[k] for k in ("knn_conv_k200", "knn_fc_k200", "probe_conv", "probe_fc") if k in released},
        "paper_probe_conv": results["conv"]["top1"], "paper_probe_fc": results["fc"]["top1"],
        "paper_probe_epochs": first["epochs"], "paper_probe_summary": summary,
        "paper_probe_minutes": {layer: r["minutes"] for layer, r in results.items()},
        "paper_probe_reports": {layer: rel(reports[layer]) for layer in ("conv", "fc")},
        "weights_sha256": released["weights_sha256"], "released": False, "eval": released["eval"],
    }


def paper_probe_metric(final: dict[str, Any], layer: str) -> dict[str, Any]:
    """The card metric entry (training.model_card format) of the final row's paper probe on ``layer``."""
    return {"task": "image-classification", "dataset": "CIFAR-10 (JPEG q75)", "dataset_type": "cifar10",
            "split": "test", "metric": "accuracy",
            "name": f"paper linear probe, {final['paper_probe_epochs']} epochs ({layer})",
            "value": round(float(final[f"paper_probe_{layer}"]), 2),
            "args": {"protocol": "paper-probe", "layer": layer, "epochs": final["paper_probe_epochs"],
                     "summary": final["paper_probe_summary"]}}


def _nmi_percent(layer_eval: dict[str, Any]) -> float:
    """k-means NMI in percent of one layer of an evaluate_encoder.py record (old records hold a
    fraction under ``nmi``; the unit rule of metaug_features.evaluation.clustering)."""
    from metaug_features.evaluation.clustering import clustering_in_percent

    return clustering_in_percent(layer_eval["kmeans"])["nmi_percent"]


def _compute(minutes: float, cores: int) -> str:
    return f"{minutes / 60:.1f} h on {cores} CPU core{'s' if cores > 1 else ''} ({minutes * cores / 60:.1f} core-h)"


def final_table(final: dict[str, Any], released: dict[str, Any], release_dir: Path = FIRST_RELEASE) -> str:
    """RESULTS.md's table of the released models (the campaign's final one and the first release)
    beside the paper's alexnet224 numbers, the first release's CMC and the random-init floor,
    with each one's training compute, and a reading of it. Every number comes from the row, the
    evaluation JSONs and the first release's run logs (``PAPER_ALEXNET224`` is quoted)."""
    from metaug_training.model_card import markdown_table

    cards = _cards_module()
    evaluation = json.loads((REPO / released["eval"]).read_text())
    first = {name: json.loads((release_dir / f"{name}.json").read_text()) for name in ("metaug", "cmc", "floor")}
    budget = {name: cards.run_budget(release_dir / "runs" / name) for name in ("metaug", "cmc")}
    rows = []

    def add(model: str, layer: str, paper: float | None, ev: dict[str, Any] | None, epochs: str, compute: str) -> None:
        e = ev[layer] if ev is not None else None
        fmt = (lambda v: f"{v:.2f}")
        rows.append({"model": model, "layer": layer, "paper linear probe": fmt(paper) if paper is not None else "not measured",
                     "fast probe": fmt(e["probe"]["top1"]) if e else "-",
                     "k-NN k=200": fmt(e["knn"]["k200"]["top1"]) if e else "-",
                     "k-means NMI (%)": fmt(_nmi_percent(e)) if e else "-",
                     "k-means acc": fmt(e["kmeans"]["accuracy"]) if e else "-",
                     "epochs": epochs, "training compute": compute})

    for layer in ("conv", "fc"):
        add(f"**MetAug, campaign final** (`hub/cifar10-{layer}`)", layer, final[f"paper_probe_{layer}"], evaluation,
            f"{final['epoch']:g}", _compute(final["training_minutes"], 2))
    for layer in ("conv", "fc"):
        add("MetAug paper, `alexnet224` (reference, not like-for-like)", layer, PAPER_ALEXNET224[layer], None, "-",
            "GPU (the paper's schedule)")
    for name, label in (("metaug", "MetAug, first release v0.1.0 (replaced)"), ("cmc", "CMC, first release (same budget)")):
        b = budget[name]
        for layer in ("conv", "fc"):
            add(label, layer, None, first[name], f"{b['epochs']:g}", _compute(b["wall_clock_minutes"], b["torch_threads"]))
    for layer in ("conv", "fc"):
        add("random init (floor)", layer, None, first["floor"], "0", "none")

    ev, floor, cmc = evaluation, first["floor"], first["cmc"]
    gap = {layer: PAPER_ALEXNET224[layer] - final[f"paper_probe_{layer}"] for layer in ("conv", "fc")}
    mins = final["paper_probe_minutes"]
    reports = final["paper_probe_reports"]
    lines = [
        "## Training campaign: the final model's full evaluation (#18)", "",
        f"The campaign's run finished its {final['planned_epochs']}-epoch schedule in leg {released['leg']} "
        f"(step {released['step']:,}, {final['training_minutes']} training minutes on the 2-core CPU); leg "
        f"{final['leg']} ({final['date_utc'][:10]}) evaluated those weights (`hub/cifar10-fc`, whose `conv` features "
        f"equal `hub/cifar10-conv`'s) on the 10,000 test images.", "",
        f"- Paper-protocol linear probe (docs/METHODS.md section 7): frozen encoder in eval mode, one linear layer, SGD lr 0.1 "
        f"momentum 0.9, batch 256, {final['paper_probe_epochs']} epochs, lr x0.2 at 30/40/50, RandomResizedCrop "
        f"(0.2-1) + flip on the 50,000 train images every epoch; {final['paper_probe_summary']}. "
        f"`bash benchmarks/campaign_final.sh {final['leg']}` ran `metaug-eval --threads 2 paper-probe --model "
        f"hub/cifar10-fc --layer L --average-last 5 ...` ({mins['conv']} min for conv, {mins['fc']} min for fc); "
        f"reports: `{reports['conv']}`, `{reports['fc']}`.",
        f"- The other columns are the fast evaluation of leg {released['leg']} (`{released['eval']}`): weighted "
        f"k-NN (T 0.07), features-once logistic regression, k-means (k 10) NMI in percent and Hungarian accuracy.",
        "- Training compute: wall-clock training minutes times the cores used (the first release ran two "
        "one-thread runs side by side for 90 minutes). The paper's row is quoted, not measured here: "
        "224-px upsampled inputs, wider features, a GPU schedule.", "",
        markdown_table(rows), "",
        f"Reading: on the same protocol the final model is "
        f"{ev['conv']['probe']['top1'] - floor['conv']['probe']['top1']:.2f} fast-probe points above the random-init "
        f"floor on `conv` ({ev['conv']['probe']['top1']:.2f} vs {floor['conv']['probe']['top1']:.2f}) and "
        f"{ev['conv']['knn']['k200']['top1'] - cmc['conv']['knn']['k200']['top1']:.2f} k-NN points above the first "
        f"release's CMC ({ev['conv']['knn']['k200']['top1']:.2f} vs {cmc['conv']['knn']['k200']['top1']:.2f}), "
        f"with {final['training_minutes'] * 2 / (budget['cmc']['wall_clock_minutes'] * budget['cmc']['torch_threads']):.0f}x "
        f"its compute. The paper probe gives `conv` {final['paper_probe_conv']:.2f} / `fc` {final['paper_probe_fc']:.2f}, "
        f"{gap['conv']:.2f} / {gap['fc']:.2f} points below the paper's alexnet224: `{ev['encoder']['architecture']}` at width "
        f"{ev['encoder']['width']} on 32-px images, "
        f"trained {final['planned_epochs']} epochs on a CPU, against 224-px inputs on GPUs, so the gap is a "
        f"reference, not a measured shortfall of this implementation.",
        "",
        "The paper probe and the fast probe differ in what they train on: the paper probe's linear layer "
        "sees random crops of 20-100% of each image (resized back to 32 px) and plain SGD on raw features, "
        "the fast probe sees the uncropped test-time view with standardised features and a C chosen on "
        "held-out data; on this model they give "
        + ", ".join(f"`{layer}` {final[f'paper_probe_{layer}']:.2f} vs {ev[layer]['probe']['top1']:.2f}"
                    for layer in ("conv", "fc"))
        + " (paper vs fast). Which difference accounts for the gap was not measured.",
    ]
    plots = [layer for layer in ("fc", "conv") if (OUT / f"embedding-{layer}.png").is_file()]
    if plots:
        lines += ["", "t-SNE of the test features (5,000-image seeded subsample, coloured by class; "
                  "`metaug-eval plot`): " + ", ".join(f"`benchmarks/campaign/embedding-{layer}.png`" for layer in plots)
                  + "; positive-vs-negative similarity histograms beside them (`similarity-{layer}.png`)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- README
def readme_section(evaluation: dict[str, Any], row: dict[str, Any], folder_bytes: dict[str, int],
                   recipe_path: Path = RECIPE, cmc_eval: Path = FIRST_RELEASE / "cmc.json",
                   floor_eval: Path = FIRST_RELEASE / "floor.json",
                   cmc_run: Path = FIRST_RELEASE / "runs" / "cmc", final: dict[str, Any] | None = None) -> str:
    """The README's "Released models" table and paragraph for the release made from ``row``
    (with ``final``, the last leg's evaluation-only row, a paper-probe column too).

    ``folder_bytes``: the shipped size of ``hub/cifar10-{conv,fc}`` (layer -> bytes), measured
    after the export. Every number comes from the evaluation JSON, the row, the recipe and the
    first release's reference evaluations, so the README cannot drift from the cards."""
    import textwrap

    from metaug_training.model_card import markdown_table

    recipe = json.loads(recipe_path.read_text())
    floor, cmc = (json.loads(p.read_text()) for p in (floor_eval, cmc_eval))
    cmc_epochs = _cards_module().run_budget(cmc_run)["epochs"]
    table = markdown_table([{
        "folder (alias)": f"`hub/cifar10-{layer}` (`cifar10-{layer}`)",
        "default feature": f"`{layer}`, {evaluation[layer]['dim']}-d",
        "size": f"{folder_bytes[layer] / 1e6:.1f} MB",
        "k-NN k=200": f"{evaluation[layer]['knn']['k200']['top1']:.2f}",
        "fast linear probe": f"{evaluation[layer]['probe']['top1']:.2f}",
        **({"paper linear probe": f"{final[f'paper_probe_{layer}']:.2f}"} if final is not None else {}),
        "k-means NMI (%)": f"{_nmi_percent(evaluation[layer]):.2f}"} for layer in ("conv", "fc")])
    m, o = recipe["model"], recipe["optim"]
    legs = "leg 1" if row["leg"] == 1 else f"legs 1-{row['leg']}"
    views = "/".join("L" if v == "l" else v for v in m["views"])
    knn, probe = (lambda e, layer: e[layer]["knn"]["k200"]["top1"]), (lambda e, layer: e[layer]["probe"]["top1"])
    if schedule_complete(row, o["epochs"]):
        trained = f"trained the whole {o['epochs']}-epoch schedule"
        status = "the campaign's final model"
    else:
        trained = f"trained {row['epoch']:.1f} of a planned {o['epochs']} epochs"
        status = "later legs replace it"
    paragraph = (
        f"Both folders hold the same network (float16 weights, identical `conv` features): MetAug, "
        f"`{m['architecture']}` width {m['width']}, views {views}, batch {o['batch_size']}, meta step every "
        f"{recipe['metaug']['meta_every']} iterations, {trained} "
        f"on the CIFAR-10 (JPEG q75) train split in {row['training_minutes']:.0f} minutes on the 2-core CPU: "
        f"{legs} of {LEGS} of the CPU training campaign (recipe `{recipe_path.relative_to(REPO).as_posix()}`, "
        f"`benchmarks/CAMPAIGN.md`; {status}). Accuracy in % on the 10,000 test images, measured "
        f"on the shipped weights by `bash benchmarks/campaign_leg.sh {row['leg']}` ({row['date_utc'][:10]})"
        + (f"; the paper linear probe (docs/METHODS.md section 7, {final['paper_probe_epochs']} epochs, "
           f"{final['paper_probe_summary']}) by `bash benchmarks/campaign_final.sh {final['leg']}` "
           f"({final['date_utc'][:10]}). " if final is not None else ". ") +
        f"For reference: the random-init floor of the architecture is {knn(floor, 'conv'):.2f} / "
        f"{knn(floor, 'fc'):.2f} (k-NN) and {probe(floor, 'conv'):.2f} / {probe(floor, 'fc'):.2f} (fast probe); the "
        f"first release's CMC run ({cmc_epochs} epochs) reached {knn(cmc, 'conv'):.2f} / {probe(cmc, 'conv'):.2f} "
        f"on `conv`. Details: `benchmarks/RESULTS.md` (\"Training campaign\") and the model cards in each folder.")
    return table + "\n\n" + textwrap.fill(paragraph, width=100, break_on_hyphens=False) + "\n"


def folder_bytes(hub: Path = HUB) -> dict[str, int]:
    """Bytes of each shipped release folder (all its files)."""
    return {layer: sum(p.stat().st_size for p in (hub / f"cifar10-{layer}").iterdir() if p.is_file())
            for layer in ("conv", "fc")}


# ---------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("row", help="append the leg's row to campaign.jsonl and redraw campaign.png")
    r.add_argument("--leg", type=int, required=True)
    r.add_argument("--eval", type=Path, required=True, help="benchmarks/evaluate_encoder.py JSON of the leg's encoder")
    r.add_argument("--run", type=Path, default=RUN, help="the run folder (log.jsonl, config.json)")
    r.add_argument("--released", action="store_true", help="mark the row as re-released")
    sub.add_parser("plot", help="redraw campaign.png from campaign.jsonl")
    c = sub.add_parser("cards", help="write card-conv.json, card-fc.json and summary.md into benchmarks/campaign/")
    c.add_argument("--leg", type=int, required=True)
    c.add_argument("--out", type=Path, default=OUT)
    rd = sub.add_parser("readme", help="rewrite the README's released-models section (after the export)")
    rd.add_argument("--leg", type=int, required=True)
    fi = sub.add_parser("final", help="the last leg: evaluation-only row, plot, cards with the paper probe, "
                                      "RESULTS.md's final table (then `recard` and `readme`)")
    fi.add_argument("--leg", type=int, required=True)
    fi.add_argument("--paper-probe", type=Path, nargs=2, required=True, metavar=("CONV_REPORT", "FC_REPORT"),
                    help="metaug-eval paper-probe --report files of conv and fc")
    rc = sub.add_parser("recard", help="re-render hub/cifar10-{conv,fc}/README.md from the card files "
                                       "(no checkpoint needed; the weights are not touched)")
    rc.add_argument("--hub", type=Path, default=HUB)
    args = ap.parse_args(argv)

    rows = read_rows()
    if args.cmd == "row":
        row = make_row(args.leg, json.loads(args.eval.read_text()), args.run, rows)
        row["released"] = bool(args.released)
        ev = args.eval.resolve()
        row["eval"] = ev.relative_to(REPO).as_posix() if ev.is_relative_to(REPO) else str(ev)
        rows = [x for x in rows if x["leg"] != args.leg] + [row]
        write_rows(rows)
        _sibling("train_step").write_section(rows_table(read_rows()), *MARKERS, path=DOC)
        print(json.dumps(row))
    elif args.cmd == "cards":
        row = next((x for x in rows if x["leg"] == args.leg), None)
        if row is None:
            raise SystemExit(f"no row for leg {args.leg} in {JSONL}; run `row` first")
        write_cards(row, final_evaluation(rows), args.out)
    elif args.cmd == "readme":
        row = next((x for x in rows if x["leg"] == args.leg), None)
        if row is None or not row.get("released"):
            raise SystemExit(f"leg {args.leg} has no released row in {JSONL}")
        section = readme_section(json.loads((REPO / row["eval"]).read_text()), row, folder_bytes(),
                                 final=final_evaluation(rows))
        text = README.read_text(encoding="utf-8")
        if README_MARKERS[0] not in text or README_MARKERS[1] not in text:
            raise SystemExit(f"{README} lacks the markers {README_MARKERS}: put them around the released-models table")
        _sibling("train_step").write_section(section, *README_MARKERS, path=README)
        print(section)
        return
    elif args.cmd == "final":
        released = [x for x in training_rows(rows) if x.get("released")]
        if not released:
            raise SystemExit(f"no released leg in {JSONL}")
        final = final_row(args.leg, released[-1], {"conv": args.paper_probe[0], "fc": args.paper_probe[1]})
        rows = [x for x in rows if x["leg"] != args.leg] + [final]
        write_rows(rows)
        _sibling("train_step").write_section(rows_table(read_rows()), *MARKERS, path=DOC)
        write_cards(released[-1], final, OUT)
        _sibling("train_step").write_section(final_table(final, released[-1]), *FINAL_MARKERS, path=RESULTS)
        print(json.dumps(final))
    elif args.cmd == "recard":
        for layer in ("conv", "fc"):
            print(recard(args.hub / f"cifar10-{layer}", OUT / f"card-{layer}.json"))
        return
    plot(read_rows())


def write_cards(row: dict[str, Any], final: dict[str, Any] | None, out: Path) -> None:
    """card-conv.json, card-fc.json and summary.md of the release made from ``row`` (with the
    final evaluation's paper probe when it has run), and RESULTS.md's campaign section."""
    specs, summary = card_specs(json.loads((REPO / row["eval"]).read_text()), row, final=final)
    from metaug_features.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    for layer, spec in specs.items():
        atomic_write_text(out / f"card-{layer}.json", json.dumps(spec, indent=2) + "\n")
    atomic_write_text(out / "summary.md", summary)
    _sibling("train_step").write_section("## Training campaign: the released state (#14-#18)\n\n" + summary,
                                         *MARKERS, path=RESULTS)
    print(summary)


def recard(folder: Path, card_json: Path) -> Path:
    """Re-render ``folder``'s model card from ``card_json`` and the folder's own config, as
    ``metaug-export --card-metrics`` would (the same renderer), without the training checkpoint;
    the weights are not read or written. Atomic: the old card stays until the new one is whole."""
    from metaug_features import load_encoder
    from metaug_features.atomic import atomic_write_text
    from metaug_training.model_card import card_renderer_from_json

    text = card_renderer_from_json(card_json)(load_encoder(folder).config, None)
    atomic_write_text(folder / "README.md", text)
    return folder / "README.md"


if __name__ == "__main__":
    main()
