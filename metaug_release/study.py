"""The recipe study (issue #34): which recipe buys the most accuracy per CPU-hour.

Four candidate recipes (``metaug_training/recipes/study-*.json``) each train for about the
baseline's 124.3 minutes (campaign 1's leg 1, ``benchmarks/campaign.jsonl``; not re-run), one
session each, started like a campaign leg (``bash benchmarks/study_start.sh RECIPE MINUTES``).
After a candidate's run stops, ``bash benchmarks/study_leg.sh NAME RECIPE`` evaluates it and calls:

    python -m metaug_release study row --name NAME --recipe RECIPE --eval benchmarks/recipe_study/NAME.json \\
        [--point P.json ...]
    python -m metaug_release study results      # RESULTS.md "Recipe study" table + recipe_study.png

``row`` appends (or replaces) the candidate's row in ``benchmarks/recipe_study.jsonl``:

- ``training_minutes``, ``epochs``, ``step`` and ``images_per_s`` from the run's ``log.jsonl``
  up to the evaluated step (the campaign's rule: :mod:`.run_log`);
- ``encoder_gflop_per_image``: forward FLOPs of the encoder over all views (GEMMs and
  convolutions, ``torch.utils.flop_counter``) and ``train_gflop_per_image``: forward + backward,
  the figure docs/METHODS.md section 10 quotes (0.373 at width 0.5);
- weighted k-NN (k = 200, T = 0.07) on ``conv`` and ``fc`` and the fast linear probe on ``conv``
  (and ``fc``) of the 10,000 test images (``python -m metaug_release evaluate``, the campaign's
  evaluation, so the baseline's numbers are comparable);
- ``points``: k-NN at intermediate checkpoints of the same run, the slope of the curve;
- ``changes``: every recipe key whose value differs from the baseline recipe, as
  ``{key: [baseline, candidate]}`` (``_`` keys and the run's folders left out).

``results`` renders the table and the plot from the rows and the baseline alone. The PNG carries
the SHA-256 of the rows it was drawn from (text chunk ``rows_sha256``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from metaug_features.errors import MetAugError

from . import campaign
from .paths import BENCHMARKS, RESULTS, repo_relative
from .records import EncoderEvaluation, load_evaluation
from .row_files import read_jsonl, rows_sha256, save_plot, write_jsonl  # noqa: F401 (rows_sha256: the plot's fingerprint, named here)
from .run_log import minutes_up_to
from .sections import write_section

JSONL = BENCHMARKS / "recipe_study.jsonl"
PNG = BENCHMARKS / "recipe_study.png"
BASELINE_RECIPE = campaign.RECIPE
SECTION = "recipe_study"
#: Candidates must train within this fraction of the baseline's minutes (the issue's rule).
MINUTES_TOLERANCE = 0.10
#: Recipe keys that name where a run lives, not what it trains.
_NOT_RECIPE = {"run.out_dir", "run.warm_start"}


# ---------------------------------------------------------------------- inputs
def baseline() -> dict[str, Any]:
    """Campaign 1's leg 1 as a study row: the recipe at equal minutes, never re-run."""
    leg1 = campaign.row_of(campaign.read_rows(), 1)
    return {
        "name": "baseline (campaign 1, leg 1)", "recipe": repo_relative(BASELINE_RECIPE),
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


def point(evaluation: EncoderEvaluation, run_dir: Path, eval_path: Path | None = None) -> dict[str, Any]:
    """One point of a run's curve: training minutes at the evaluated step and its k-NN on conv/fc
    (``eval``: the evaluation file, relative to the repository)."""
    step = int(evaluation.provenance["steps"])
    return {"training_minutes": minutes_up_to(run_dir, step), "step": step,
            "epoch": round(float(evaluation.provenance["epochs"]), 3),
            "knn_conv_k200": round(evaluation["conv"].knn[200], 2),
            "knn_fc_k200": round(evaluation["fc"].knn[200], 2),
            **({"eval": repo_relative(eval_path)} if eval_path is not None else {})}


def make_row(name: str, recipe_path: Path, evaluation: EncoderEvaluation, eval_path: Path,
             points: list[dict[str, Any]]) -> dict[str, Any]:
    """The study row of one candidate (module docstring) from its evaluation and its run's log."""
    recipe = json.loads(recipe_path.read_text())
    run_dir = campaign.REPO / recipe["run"]["out_dir"]
    final = point(evaluation, run_dir)
    if evaluation["conv"].probe is None:
        raise MetAugError(f"{eval_path}: the final evaluation needs the fast probe on conv")
    return {
        "name": name, "recipe": repo_relative(recipe_path),
        "date_utc": evaluation.date_utc or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "training_minutes": final["training_minutes"], "epochs": final["epoch"], "step": final["step"],
        "planned_epochs": recipe["optim"]["epochs"],
        "images_per_s": round(final["step"] * recipe["optim"]["batch_size"] / (final["training_minutes"] * 60), 1),
        **flops(recipe),
        "knn_conv_k200": final["knn_conv_k200"], "knn_fc_k200": final["knn_fc_k200"],
        "probe_conv": round(evaluation["conv"].probe, 2),
        "probe_fc": round(evaluation["fc"].probe, 2) if evaluation["fc"].probe is not None else None,
        "points": sorted(points, key=lambda p: p["step"]),
        "changes": changes(recipe),
        "eval": repo_relative(eval_path),
        "weights_sha256": evaluation.weights_sha256,
    }


# ---------------------------------------------------------------------- the record
def read_rows(path: Path = JSONL) -> list[dict[str, Any]]:
    """The candidates' rows (none when the file does not exist yet)."""
    return read_jsonl(path)


def write_rows(rows: list[dict[str, Any]], path: Path = JSONL) -> None:
    """Write the rows, atomically."""
    write_jsonl(rows, path)



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
    """The generated part of RESULTS.md's "Recipe study" (the body between the section's markers)."""
    base = baseline()
    return "\n".join([
        "Generated by `python -m metaug_release study results` from `benchmarks/recipe_study.jsonl` "
        "(one row per candidate, written by `bash benchmarks/study_leg.sh NAME RECIPE`) and campaign 1's leg 1 "
        "(`benchmarks/campaign.jsonl`, the baseline, not re-run). Weighted k-NN k = 200 (T 0.07) and the fast "
        "linear probe, CIFAR-10 test split (10,000 images), train split as memory / probe data; training "
        "minutes from each run's own log on the 2-core CPU (data loading and evaluation excluded); "
        f"candidates must train within {MINUTES_TOLERANCE:.0%} of the baseline's {base['training_minutes']} minutes.",
        "",
        table(rows),
        "",
        "![recipe study: k-NN against training minutes](recipe_study.png)",
    ])


def plot(rows: list[dict[str, Any]], path: Path = PNG) -> Path:
    """k-NN conv (lines through the intermediate points) and the fast probe (stars) against
    training minutes, for the baseline and every candidate; campaign 1's final k-NN as the ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    return save_plot(fig, path, rows)


# ---------------------------------------------------------------------- operations
def record_row(name: str, recipe_path: Path, eval_path: Path, point_paths: list[Path]) -> dict[str, Any]:
    """``python -m metaug_release study row``: append or replace the candidate's row, then :func:`write_results`."""
    try:
        recipe = json.loads(recipe_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise MetAugError(f"cannot read the recipe {recipe_path}: {e}") from None
    run_dir = campaign.REPO / recipe["run"]["out_dir"]
    points = [point(load_evaluation(p), run_dir, p) for p in point_paths]
    row = make_row(name, recipe_path, load_evaluation(eval_path), eval_path, points)
    write_rows([x for x in read_rows() if x["name"] != name] + [row])
    write_results()
    return row


def write_results() -> list[Path]:
    """``python -m metaug_release study results``: RESULTS.md's section and recipe_study.png from the rows."""
    rows = read_rows()
    write_section(RESULTS, section(rows), SECTION)
    return [RESULTS, plot(rows)]
