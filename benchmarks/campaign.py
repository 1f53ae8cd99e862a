"""The CPU training campaign's record: one row per leg, the learning-curve plot, the release cards.

The flagship run (``training/recipes/cifar10-alexnet32-metaug.json``) trains in legs of one
session each; ``benchmarks/CAMPAIGN.md`` has the plan. After a leg stops:

    python benchmarks/evaluate_encoder.py --model runs/cifar10-alexnet32-metaug/full/export \\
        --data /tmp/cifar/cifar10 --out /tmp/campaign-eval --json benchmarks/campaign/leg1.json --threads 2
    python benchmarks/campaign.py row --leg 1 --eval benchmarks/campaign/leg1.json      # campaign.jsonl + png
    python benchmarks/campaign.py cards --leg 1                                          # card-*.json, summary
    python benchmarks/campaign.py readme --leg 1      # after the release export: README's released-models section

``row`` appends (or replaces) the leg's row in ``benchmarks/campaign.jsonl``: leg, epoch, step,
training minutes so far (from the run's ``log.jsonl``: the sum of every logged interval's
steps / rate, so gaps between legs do not count), the leg's images/s, weighted k-NN k=200 on
``conv`` and ``fc`` and the fast linear probe on ``conv`` (more columns when measured), then
redraws ``benchmarks/campaign.png`` with the random-init floor and the first release's CMC as
reference lines (``benchmarks/release/floor.json`` and ``cmc.json``). ``cards`` writes the
card-metrics files that ``metaug-export --card-metrics`` renders into ``hub/cifar10-{conv,fc}``;
``readme`` rewrites the README's "Released models" table and paragraph (between the
``<!-- release:start -->`` markers) from the released row, its evaluation and the folders' sizes.
Every number comes from these files; nothing is typed in.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "training" / "recipes" / "cifar10-alexnet32-metaug.json"
RUN = REPO / "runs" / "cifar10-alexnet32-metaug" / "full"
JSONL = REPO / "benchmarks" / "campaign.jsonl"
PNG = REPO / "benchmarks" / "campaign.png"
OUT = REPO / "benchmarks" / "campaign"
FIRST_RELEASE = REPO / "benchmarks" / "release"
LEGS = 5


DOC = REPO / "benchmarks" / "CAMPAIGN.md"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
MARKERS = ("<!-- campaign:start -->", "<!-- campaign:end -->")
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


def write_rows(rows: list[dict[str, Any]], path: Path = JSONL) -> None:
    rows = sorted(rows, key=lambda r: r["leg"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def rows_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the legs for CAMPAIGN.md (accuracy in %, 10,000 test images)."""
    from metaug_training.model_card import markdown_table

    return markdown_table([{
        "leg": r["leg"], "date (UTC)": r["date_utc"][:10], "epoch": f"{r['epoch']:.2f} of {r['planned_epochs']}",
        "epochs this leg": f"{r['leg_epochs']:.2f}", "training min (total)": r["training_minutes"],
        "img/s (leg)": r["images_per_s"], "k-NN k=200 conv": f"{r['knn_conv_k200']:.2f}",
        "k-NN k=200 fc": f"{r['knn_fc_k200']:.2f}", "fast probe conv": f"{r['probe_conv']:.2f}",
        "fast probe fc": f"{r['probe_fc']:.2f}" if "probe_fc" in r else "-",
        "released": "yes" if r.get("released") else "no"} for r in rows])


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
    ep = [0.0] + [r["epoch"] for r in rows]
    refs = references()
    floor = refs["random init (floor)"]
    series = (("knn_conv_k200", "k-NN k=200, conv", "C0"), ("knn_fc_k200", "k-NN k=200, fc", "C1"),
              ("probe_conv", "fast linear probe, conv", "C2"))
    for key, label, colour in series:
        # Epoch 0 is the random-init encoder (the floor's numbers: same architecture, untrained).
        ax.plot(ep, [floor[key]] + [r[key] for r in rows], "o-", color=colour, label=label)
    for (name, ref), style in zip(refs.items(), (":", "--")):
        for key, colour in (("knn_conv_k200", "C0"), ("probe_conv", "C2")):
            ax.axhline(ref[key], color=colour, linestyle=style, linewidth=1, alpha=0.8)
        ax.plot([], [], color="grey", linestyle=style, label=f"{name} (k-NN and probe, conv)")
    planned = rows[-1]["planned_epochs"] if rows else None
    ax.set_xlim(0, planned or None)
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
               cmc_run: Path = FIRST_RELEASE / "runs" / "cmc") -> tuple[dict[str, dict[str, Any]], str]:
    """Card-metrics specs for ``conv`` and ``fc`` and a Markdown summary for RESULTS.md."""
    cards = _cards_module()
    recipe = json.loads(recipe_path.read_text())
    cmc_budget = cards.run_budget(cmc_run)
    evals = {"MetAug (this model)": evaluation, "CMC, first release": json.loads(cmc_eval.read_text()),
             "random init (floor)": json.loads(floor_eval.read_text())}
    budgets = {"MetAug (this model)": {"epochs": row["epoch"]}, "CMC, first release": cmc_budget,
               "random init (floor)": None}
    rows = cards.comparison_rows(evals, budgets)
    o = recipe["optim"]
    f = 0.5 * (1 + math.cos(math.pi * min(row["epoch"] / o["epochs"], 1.0)))
    done = schedule_complete(row, o["epochs"])
    budget = {
        "command": f"metaug-train --config training/recipes/{recipe_path.name} --resume (one leg per session)",
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
        if done:
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
        specs[layer] = {"metrics": cards.layer_metrics(evaluation, layer), "recipe": recipe, "budget": budget,
                        "hardware": hardware, "comparison": rows, "repo_id": cards.REPO_IDS[layer], "license": "mit",
                        "notes": notes, "comparison_title": "Comparison with the first release's CMC and the random-init floor"}
    from metaug_training.model_card import markdown_table

    summary = (f"Campaign leg {row['leg']} of {LEGS} (`{recipe_path.name}`): epoch {row['epoch']} of {o['epochs']}, "
               f"{row['training_minutes']} training minutes on 2 cores, {row['images_per_s']} img/s this leg; "
               f"CMC row: the first release's 90-minute run ({cmc_budget['epochs']} epochs).\n\n"
               + markdown_table(rows) + "\n")
    return specs, summary


# ---------------------------------------------------------------------- README
def readme_section(evaluation: dict[str, Any], row: dict[str, Any], folder_bytes: dict[str, int],
                   recipe_path: Path = RECIPE, cmc_eval: Path = FIRST_RELEASE / "cmc.json",
                   floor_eval: Path = FIRST_RELEASE / "floor.json",
                   cmc_run: Path = FIRST_RELEASE / "runs" / "cmc") -> str:
    """The README's "Released models" table and paragraph for the release made from ``row``.

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
        "k-means NMI": f"{100 * evaluation[layer]['kmeans']['nmi']:.2f}"} for layer in ("conv", "fc")])
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
        f"on the shipped weights by `bash benchmarks/campaign_leg.sh {row['leg']}` ({row['date_utc'][:10]}). "
        f"For reference: the random-init floor of the architecture is {knn(floor, 'conv'):.2f} / "
        f"{knn(floor, 'fc'):.2f} (k-NN) and {probe(floor, 'conv'):.2f} / {probe(floor, 'fc'):.2f} (probe); the "
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
        specs, summary = card_specs(json.loads((REPO / row["eval"]).read_text()), row)
        args.out.mkdir(parents=True, exist_ok=True)
        for layer, spec in specs.items():
            (args.out / f"card-{layer}.json").write_text(json.dumps(spec, indent=2) + "\n")
        (args.out / "summary.md").write_text(summary)
        _sibling("train_step").write_section("## Training campaign: the released state (#14-#18)\n\n" + summary,
                                             *MARKERS, path=RESULTS)
        print(summary)
    elif args.cmd == "readme":
        row = next((x for x in rows if x["leg"] == args.leg), None)
        if row is None or not row.get("released"):
            raise SystemExit(f"leg {args.leg} has no released row in {JSONL}")
        section = readme_section(json.loads((REPO / row["eval"]).read_text()), row, folder_bytes())
        text = README.read_text(encoding="utf-8")
        if README_MARKERS[0] not in text or README_MARKERS[1] not in text:
            raise SystemExit(f"{README} lacks the markers {README_MARKERS}: put them around the released-models table")
        _sibling("train_step").write_section(section, *README_MARKERS, path=README)
        print(section)
        return
    plot(read_rows())


if __name__ == "__main__":
    main()
