"""The recipe study (issue #34): which recipe buys the most accuracy per CPU-hour.

Four candidate recipes (``metaug_training/recipes/study-*.json``) each train for about the baseline's
124.3 minutes (campaign 1's leg 1, ``benchmarks/campaign.jsonl``; not re-run), one session each,
started like a campaign leg (``bash benchmarks/study_start.sh RECIPE MINUTES``). After a
candidate's run stops, ``bash benchmarks/study_leg.sh NAME RECIPE`` evaluates it and calls:

    python benchmarks/recipe_study.py point --eval benchmarks/recipe_study/NAME-stepS.json   # optional
    python benchmarks/recipe_study.py row --name NAME --recipe RECIPE --eval benchmarks/recipe_study/NAME.json \\
        [--point P.json ...]
    python benchmarks/recipe_study.py results        # RESULTS.md "Recipe study" table + recipe_study.png

``row`` appends (or replaces) the candidate's row in ``benchmarks/recipe_study.jsonl``:

- ``training_minutes``, ``epochs``, ``step`` and ``images_per_s`` from the run's ``log.jsonl``
  up to the evaluated step (the campaign's rule: the sum of every logged interval's steps / rate,
  so data loading, restarts and evaluation do not count);
- ``encoder_gflop_per_image``: forward FLOPs of the encoder over all views (GEMMs and
  convolutions, ``torch.utils.flop_counter``) and ``train_gflop_per_image``: forward + backward,
  the figure docs/METHODS.md section 10 quotes (0.373 at width 0.5);
- weighted k-NN (k = 200, T = 0.07) on ``conv`` and ``fc`` and the fast linear probe on ``conv``
  (and ``fc``) of the 10,000 test images (``benchmarks/evaluate_encoder.py``, the campaign's
  evaluation, so the baseline's numbers are comparable);
- ``points``: k-NN at intermediate checkpoints of the same run (training minutes, epoch, k-NN
  conv/fc), the slope of the curve;
- ``changes``: every recipe key whose value differs from the baseline recipe, as
  ``{key: [baseline, candidate]}`` (``_`` keys and the run's folders left out).

``results`` renders the table and the plot from the rows and the baseline alone. The PNG carries
the SHA-256 of the rows it was drawn from (text chunk ``rows_sha256``), so
``tests/release/test_recipe_study.py`` can check that table, plot and rows agree.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
JSONL = REPO / "benchmarks" / "recipe_study.jsonl"
PNG = REPO / "benchmarks" / "recipe_study.png"
BASELINE_RECIPE = REPO / "metaug_training" / "recipes" / "cifar10-alexnet32-metaug.json"
MARKERS = ("<!-- recipe_study:start -->", "<!-- recipe_study:end -->")
#: Candidates must train within this fraction of the baseline's minutes (the issue's rule).
MINUTES_TOLERANCE = 0.10
#: Recipe keys that name where a run lives, not what it trains.
_NOT_RECIPE = {"run.out_dir", "run.warm_start"}


def _sibling(name: str):
    """Another script of benchmarks/ as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------- inputs
def baseline() -> dict[str, Any]:
    """Campaign 1's leg 1 as a study row: the recipe at equal minutes, never re-run."""
    campaign = _sibling("campaign")
    leg1 = next(r for r in campaign.read_rows() if r["leg"] == 1)
    return {
        "name": "baseline (campaign 1, leg 1)", "recipe": str(BASELINE_RECIPE.relative_to(REPO)),
        "date_utc": leg1["date_utc"], "training_minutes": leg1["training_minutes"], "epochs": leg1["epoch"],
        "step": leg1["step"], "planned_epochs": leg1["planned_epochs"], "images_per_s": leg1["images_per_s"],
        **flops(json.loads(BASELINE_RECIPE.read_text())),
        "knn_conv_k200": leg1["knn_conv_k200"], "knn_fc_k200": leg1["knn_fc_k200"],
        "probe_conv": leg1["probe_conv"], "probe_fc": leg1.get("probe_fc"), "points": [], "changes": {},
        "eval": leg1["eval"],
    }


def flat(recipe: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"section.key": value}`` of a recipe, without ``_`` keys."""
    out: dict[str, Any] = {}
    for k, v in recipe.items():
        if k.startswith("_"):
            continue
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changes(recipe: dict[str, Any]) -> dict[str, list[Any]]:
    """Recipe keys whose value differs from the baseline recipe: ``{key: [baseline, candidate]}``
    (a key missing on one side shows as None there)."""
    base, cand = flat(json.loads(BASELINE_RECIPE.read_text())), flat(recipe)
    return {k: [base.get(k), cand.get(k)] for k in sorted(set(base) | set(cand))
            if k not in _NOT_RECIPE and base.get(k) != cand.get(k)}


def flops(recipe: dict[str, Any]) -> dict[str, float]:
    """Encoder GFLOP per image of a recipe's model: forward, and forward + backward (training).

    Counts GEMMs and convolutions (``FlopCounterMode``) of all views down to the projection head,
    on a batch of 4 in train mode, divided by 4."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from metaug_features.model import build_encoder

    m = recipe["model"]
    enc = build_encoder(architecture=m["architecture"], width=m["width"], views=tuple(m["views"]),
                        ori_space=m.get("ori_space", "lab")).train()
    size = enc.config.input_size
    x = torch.rand(4, enc.config.input_channels, size, size)
    views = enc.split_views(x)
    with FlopCounterMode(display=False) as fwd:
        z = [enc.halves[v](xv, "head") for v, xv in views.items()]  # each view's half down to its head
    with FlopCounterMode(display=False) as bwd:
        sum(t.sum() for t in z).backward()
    return {"encoder_gflop_per_image": round(fwd.get_total_flops() / 4 / 1e9, 4),
            "train_gflop_per_image": round((fwd.get_total_flops() + bwd.get_total_flops()) / 4 / 1e9, 4)}


def point(evaluation: dict[str, Any], run_dir: Path, eval_path: Path | None = None) -> dict[str, Any]:
    """One point of a run's curve: training minutes at the evaluated step and its k-NN on conv/fc
    (``eval``: the evaluation file, relative to the repository)."""
    campaign = _sibling("campaign")
    cfg = json.loads((run_dir / "config.json").read_text())
    step = int(evaluation["encoder"]["provenance"]["steps"])
    upto = [r for r in campaign.log_records(run_dir) if r.get("step", 0) <= step]
    seconds, _ = campaign.training_time(upto, cfg["optim"]["batch_size"], cfg["run"]["ckpt_every"])
    return {"training_minutes": round(seconds / 60, 1), "step": step,
            "epoch": round(float(evaluation["encoder"]["provenance"]["epochs"]), 3),
            "knn_conv_k200": round(evaluation["conv"]["knn"]["k200"]["top1"], 2),
            "knn_fc_k200": round(evaluation["fc"]["knn"]["k200"]["top1"], 2),
            **({"eval": str(eval_path.resolve().relative_to(REPO))} if eval_path is not None else {})}


def make_row(name: str, recipe_path: Path, evaluation: dict[str, Any], eval_path: Path,
             points: list[dict[str, Any]]) -> dict[str, Any]:
    """The study row of one candidate (module docstring) from its evaluation and its run's log."""
    recipe = json.loads(recipe_path.read_text())
    run_dir = REPO / recipe["run"]["out_dir"]
    final = point(evaluation, run_dir)
    row = {
        "name": name, "recipe": str(recipe_path.resolve().relative_to(REPO)),
        "date_utc": evaluation.get("date_utc", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        "training_minutes": final["training_minutes"], "epochs": final["epoch"], "step": final["step"],
        "planned_epochs": recipe["optim"]["epochs"],
        "images_per_s": round(final["step"] * recipe["optim"]["batch_size"] / (final["training_minutes"] * 60), 1),
        **flops(recipe),
        "knn_conv_k200": final["knn_conv_k200"], "knn_fc_k200": final["knn_fc_k200"],
        "probe_conv": round(evaluation["conv"]["probe"]["top1"], 2),
        "probe_fc": round(evaluation["fc"]["probe"]["top1"], 2) if "probe" in evaluation["fc"] else None,
        "points": sorted(points, key=lambda p: p["step"]),
        "changes": changes(recipe),
        "eval": str(eval_path.resolve().relative_to(REPO)),
        "weights_sha256": evaluation["encoder"].get("weights_sha256"),
    }
    return row


# ---------------------------------------------------------------------- the record
def read_rows(path: Path = JSONL) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def write_rows(rows: list[dict[str, Any]], path: Path = JSONL) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def rows_sha256(rows: list[dict[str, Any]]) -> str:
    """The fingerprint the plot carries: SHA-256 of the rows' canonical JSON."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def slope(row: dict[str, Any]) -> float | None:
    """k-NN conv points per training hour over the run's last measured interval (None without an
    intermediate point)."""
    pts = row["points"]
    if not pts:
        return None
    last = pts[-1]
    if row["training_minutes"] <= last["training_minutes"]:
        return None
    return round((row["knn_conv_k200"] - last["knn_conv_k200"]) / ((row["training_minutes"] - last["training_minutes"]) / 60), 2)


def _change_text(row: dict[str, Any]) -> str:
    if not row["changes"]:
        return "campaign 1 recipe"
    # Full dotted keys: metaug.lr and optim.lr would otherwise read alike. A section the
    # candidate's method drops (new value None, e.g. metaug.* for OUCL) is said once by `method`.
    return "; ".join(f"{k} {b} -> {c}" for k, (b, c) in row["changes"].items()
                     if k != "optim.epochs" and c is not None)


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the baseline and the candidates (accuracy in %, 10,000 test images)."""
    from metaug_training.model_card import markdown_table

    def fmt(v: float | None, spec: str = ".2f") -> str:
        return "-" if v is None else format(v, spec)

    return markdown_table([{
        "candidate": r["name"], "recipe": f"`{r['recipe']}`", "differs from campaign 1": _change_text(r),
        "training min": f"{r['training_minutes']:.1f}", "epochs (of planned)": f"{r['epochs']:.2f} of {r['planned_epochs']}",
        "img/s": fmt(r["images_per_s"], ".1f"), "GFLOP/img fwd (train)":
            f"{r['encoder_gflop_per_image']:.3f} ({r['train_gflop_per_image']:.3f})",
        "k-NN conv": fmt(r["knn_conv_k200"]), "k-NN fc": fmt(r["knn_fc_k200"]), "probe conv": fmt(r["probe_conv"]),
        "k-NN conv slope (pts/h, last interval)": fmt(slope(r)),
    } for r in [baseline()] + rows])


def section(rows: list[dict[str, Any]]) -> str:
    """The generated part of RESULTS.md's "Recipe study" (between MARKERS)."""
    base = baseline()
    lines = [
        MARKERS[0],
        "Generated by `python benchmarks/recipe_study.py results` from `benchmarks/recipe_study.jsonl` "
        "(one row per candidate, written by `bash benchmarks/study_leg.sh NAME RECIPE`) and campaign 1's leg 1 "
        "(`benchmarks/campaign.jsonl`, the baseline, not re-run). Weighted k-NN k = 200 (T 0.07) and the fast "
        "linear probe, CIFAR-10 test split (10,000 images), train split as memory / probe data; training "
        "minutes from each run's own log on the 2-core CPU (data loading and evaluation excluded); "
        f"candidates must train within {MINUTES_TOLERANCE:.0%} of the baseline's {base['training_minutes']} minutes.",
        "",
        table(rows),
        "",
        "![recipe study: k-NN against training minutes](recipe_study.png)",
        MARKERS[1],
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path = PNG) -> None:
    """k-NN conv (lines through the intermediate points) and the fast probe (stars) against
    training minutes, for the baseline and every candidate; campaign 1's final k-NN as the ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    campaign = _sibling("campaign")
    ceiling = campaign.training_rows(campaign.read_rows())[-1]
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    for i, r in enumerate([baseline()] + rows):
        colour = f"C{i}"
        pts = r["points"] + [r]
        ax.plot([p["training_minutes"] for p in pts], [p["knn_conv_k200"] for p in pts], "o-", color=colour,
                label=f"{r['name']}: k-NN conv ({r['epochs']:.1f} ep)")
        ax.plot([r["training_minutes"]], [r["probe_conv"]], "*", color=colour, markersize=12)
    ax.plot([], [], "*", color="grey", markersize=12, label="fast linear probe, conv (end of run)")
    ax.axhline(ceiling["knn_conv_k200"], color="grey", linestyle=":", linewidth=1)
    ax.plot([], [], color="grey", linestyle=":",
            label=f"campaign 1 after {ceiling['training_minutes']:.0f} min: k-NN conv {ceiling['knn_conv_k200']:.2f}")
    ax.set_xlabel("training minutes on the 2-core CPU")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    ax.set_title("Recipe study: accuracy at equal training minutes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, metadata={"rows_sha256": rows_sha256(rows)})
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("row", help="append or replace a candidate's row")
    r.add_argument("--name", required=True)
    r.add_argument("--recipe", type=Path, required=True)
    r.add_argument("--eval", type=Path, required=True, help="benchmarks/evaluate_encoder.py JSON of the final weights")
    r.add_argument("--point", type=Path, nargs="*", default=[], help="evaluations of intermediate checkpoints (k-NN)")
    sub.add_parser("results", help="RESULTS.md section and benchmarks/recipe_study.png from the rows")
    args = ap.parse_args(argv)
    if args.cmd == "row":
        recipe = json.loads(args.recipe.read_text())
        run_dir = REPO / recipe["run"]["out_dir"]
        points = [point(json.loads(p.read_text()), run_dir, p) for p in args.point]
        row = make_row(args.name, args.recipe, json.loads(args.eval.read_text()), args.eval, points)
        rows = [x for x in read_rows() if x["name"] != args.name] + [row]
        write_rows(rows)
        print(json.dumps(row, indent=2))
    rows = read_rows()
    _sibling("results_section").replace_section(section(rows), *MARKERS)
    plot(rows)
    print(f"wrote {JSONL.relative_to(REPO)}, the RESULTS.md section and {PNG.relative_to(REPO)}")


if __name__ == "__main__":
    main()
