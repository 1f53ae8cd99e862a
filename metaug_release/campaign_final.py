"""The campaign's last leg: the evaluation-only row of the finished run's weights with the
paper-protocol linear probe (``metaug-eval paper-probe`` reports), and RESULTS.md's table of the
released models beside the paper's alexnet224 numbers, the first release and the random-init
floor (``python -m metaug_release campaign final``; ``bash benchmarks/campaign_final.sh LEG [CAMPAIGN]`` runs it).
A later campaign's table also lists the earlier campaigns' final models and compares with them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from metaug_features.errors import MetAugError

from .campaign import (
    CAMPAIGNS,
    DEFAULT_RELEASE_NAME,
    FINAL_KIND,
    METHOD_LABELS,
    Campaign,
    all_rows,
    campaign_of,
    current_release_row,
    final_evaluation,
    get_campaign,
    plot,
    read_rows,
    schedule_complete,
    write_rows,
    write_tables,
)
from .campaign_cards import PAPER_ALEXNET224, write_cards
from .paths import FIRST_RELEASE, REPO, RESULTS, repo_relative
from .records import load_evaluation
from .run_log import run_budget
from .sections import write_section

FINAL_SECTION = "campaign_final"
#: The folder ``campaign_final.sh`` probes: the default pair's, where every campaign's final model was
#: shipped when its last leg ran.
PROBED_FOLDER = f"hub/{DEFAULT_RELEASE_NAME}-fc"


def _folders(c: Campaign) -> str:
    """Where the campaign's final weights are (and, when they moved since, where they were evaluated)."""
    fc, conv = f"hub/{c.alias('fc')}", f"hub/{c.alias('conv')}"
    where = f"`{fc}`, whose `conv` features equal `{conv}`'s"
    if fc != PROBED_FOLDER:
        where += (f"; shipped as `{PROBED_FOLDER}` and `hub/{DEFAULT_RELEASE_NAME}-conv` when this leg ran, "
                  f"until a later campaign's model took those names")
    return where


def final_section(campaign: int) -> str:
    """RESULTS.md's section of the campaign's final table (campaign 1: ``campaign_final``)."""
    return FINAL_SECTION if campaign == 1 else f"campaign{campaign}_final"


def paper_probe_result(path: Path) -> dict[str, Any]:
    """Layer, top-1 and protocol of a ``metaug-eval paper-probe --report`` file.

    Refuses a file that is not a paper-probe report, or one run with other settings than
    docs/METHODS.md section 7's (a reduced-budget timing run must never reach a card)."""
    from metaug_features.evaluation.paper_probe import PaperProbeConfig
    from metaug_features.evaluation.report import find_evaluation, read_report

    report = read_report(path)
    ev = find_evaluation(report, "paper_probe")
    if ev is None:
        raise MetAugError(f"{path}: not a `metaug-eval paper-probe` report")
    params = ev["params"]
    # The library's own definition of the paper budget (only seeds and averaging may differ).
    config = PaperProbeConfig(**{f.name: tuple(params[f.name]) if isinstance(params[f.name], list) else params[f.name]
                                 for f in fields(PaperProbeConfig) if f.name in params})
    if not config.is_paper_budget:
        raise MetAugError(f"{path}: not the paper's protocol (docs/METHODS.md section 7): {ev['protocol']}")
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
        raise MetAugError(f"leg {released['leg']} is at epoch {released['epoch']} of {released['planned_epochs']}: "
                          f"the schedule is not complete, so leg {leg} trains (benchmarks/campaign_leg.sh)")
    if leg <= released["leg"]:
        raise MetAugError(f"the final evaluation's leg ({leg}) must come after the released leg ({released['leg']})")
    if sorted(reports) != ["conv", "fc"]:
        raise MetAugError(f"need paper-probe reports for conv and fc, got {sorted(reports)}")
    results = {layer: paper_probe_result(path) for layer, path in reports.items()}
    evaluation = load_evaluation(REPO / released["eval"])
    for layer, res in results.items():
        if res["layer"] != layer:
            raise MetAugError(f"{reports[layer]} probes layer {res['layer']!r}, not {layer!r}")
        if res["provenance"] != evaluation.provenance:
            raise MetAugError(f"{reports[layer]} probed other weights than the released leg {released['leg']}'s")
    first = results["conv"]
    if any((r["seeds"], r["average_last"]) != (first["seeds"], first["average_last"]) for r in results.values()):
        raise MetAugError("the conv and fc paper probes used different seeds or averaging")
    n = len(first["seeds"])
    summary = (f"{n} seed{'s' if n > 1 else ''}, mean test top-1 of the last {first['average_last']} "
               f"epoch{'s' if first['average_last'] > 1 else ''}")
    return {
        **({"campaign": released["campaign"]} if campaign_of(released) != 1 else {}),
        "leg": leg, "kind": FINAL_KIND,
        # When the evaluation finished (the later report), so that re-running `final` changes nothing.
        "date_utc": date_utc or max(r["created_utc"] for r in results.values()),
        "epoch": released["epoch"], "step": released["step"], "planned_epochs": released["planned_epochs"],
        "training_minutes": released["training_minutes"], "leg_minutes": 0.0, "leg_epochs": 0.0, "images_per_s": None,
        **{k: released[k] for k in ("knn_conv_k200", "knn_fc_k200", "probe_conv", "probe_fc") if k in released},
        "paper_probe_conv": results["conv"]["top1"], "paper_probe_fc": results["fc"]["top1"],
        "paper_probe_epochs": first["epochs"], "paper_probe_summary": summary,
        "paper_probe_minutes": {layer: r["minutes"] for layer, r in results.items()},
        "paper_probe_reports": {layer: repo_relative(reports[layer]) for layer in ("conv", "fc")},
        "weights_sha256": released["weights_sha256"], "released": False, "eval": released["eval"],
    }


def _compute(minutes: float, cores: int) -> str:
    return f"{minutes / 60:.1f} h on {cores} CPU core{'s' if cores > 1 else ''} ({minutes * cores / 60:.1f} core-h)"


def final_table(final: dict[str, Any], released: dict[str, Any], release_dir: Path = FIRST_RELEASE,
                earlier: Sequence[tuple[dict[str, Any], dict[str, Any]]] = ()) -> str:
    """RESULTS.md's table of the released models (the campaign's final one and the first release)
    beside the paper's alexnet224 numbers, the first release's CMC and the random-init floor,
    with each one's training compute, and a reading of it. Every number comes from the row, the
    evaluation reports and the first release's run logs (``PAPER_ALEXNET224`` is quoted).

    ``earlier``: the (final row, released row) pairs of earlier campaigns (:func:`earlier_finals`),
    listed under this campaign's model and compared with it in the reading (campaign 2 against
    campaign 1's final model). Campaign 1's text is unchanged by the parameter's existence."""
    from metaug_training.model_card import markdown_table

    c = get_campaign(campaign_of(released))
    ev = load_evaluation(REPO / released["eval"])
    first = {name: load_evaluation(release_dir / f"{name}.json") for name in ("metaug", "cmc", "floor")}
    budget = {name: run_budget(release_dir / "runs" / name) for name in ("metaug", "cmc")}
    rows = []

    def add(model: str, layer: str, paper: float | None, e: Any, epochs: str, compute: str) -> None:
        e = e[layer] if e is not None else None
        fmt = (lambda v: f"{v:.2f}")
        rows.append({"model": model, "layer": layer, "paper linear probe": fmt(paper) if paper is not None else "not measured",
                     "fast probe": fmt(e.probe) if e else "-",
                     "k-NN k=200": fmt(e.knn[200]) if e else "-",
                     "k-means NMI (%)": fmt(e.nmi_percent) if e else "-",
                     "k-means acc": fmt(e.kmeans_accuracy) if e else "-",
                     "epochs": epochs, "training compute": compute})

    def label(e: Any) -> str:
        return METHOD_LABELS.get(e.provenance.get("method"), "MetAug")

    this = "campaign final" if c.number == 1 else f"campaign {c.number} final"
    for layer in ("conv", "fc"):
        add(f"**{label(ev)}, {this}** (`hub/{c.alias(layer)}`)", layer, final[f"paper_probe_{layer}"], ev,
            f"{final['epoch']:g}", _compute(final["training_minutes"], 2))
    before = [(f0, r0, load_evaluation(REPO / r0["eval"])) for f0, r0 in earlier]
    for f0, r0, ev0 in before:
        c0 = get_campaign(campaign_of(r0))
        for layer in ("conv", "fc"):
            where = f"(`hub/{c0.alias(layer)}`)" if c0.shipped() else "(replaced)"
            add(f"{label(ev0)}, campaign {c0.number} final {where}", layer, f0[f"paper_probe_{layer}"], ev0,
                f"{f0['epoch']:g}", _compute(f0["training_minutes"], 2))
    for layer in ("conv", "fc"):
        add("MetAug paper, `alexnet224` (reference, not like-for-like)", layer, PAPER_ALEXNET224[layer], None, "-",
            "GPU (the paper's schedule)")
    for name, lab in (("metaug", "MetAug, first release v0.1.0 (replaced)"), ("cmc", "CMC, first release (same budget)")):
        b = budget[name]
        for layer in ("conv", "fc"):
            add(lab, layer, None, first[name], f"{b['epochs']:g}", _compute(b["wall_clock_minutes"], b["torch_threads"]))
    for layer in ("conv", "fc"):
        add("random init (floor)", layer, None, first["floor"], "0", "none")

    floor, cmc = first["floor"], first["cmc"]
    gap = {layer: PAPER_ALEXNET224[layer] - final[f"paper_probe_{layer}"] for layer in ("conv", "fc")}
    mins = final["paper_probe_minutes"]
    reports = final["paper_probe_reports"]
    if c.number == 1:
        heading, whose = "## Training campaign: the final model's full evaluation (#18)", "The campaign's run"
    else:
        heading = f"## Training campaign {c.number}: the final model's full evaluation ({c.issues})"
        whose = f"Campaign {c.number}'s run, {label(ev)} with `{c.recipe.relative_to(REPO).as_posix()}`,"
    lines = [
        heading, "",
        f"{whose} finished its {final['planned_epochs']}-epoch schedule in leg {released['leg']} "
        f"(step {released['step']:,}, {final['training_minutes']} training minutes on the 2-core CPU); leg "
        f"{final['leg']} ({final['date_utc'][:10]}) evaluated those weights ({_folders(c)}) on the 10,000 test "
        f"images.", "",
        f"- Paper-protocol linear probe (docs/METHODS.md section 7): frozen encoder in eval mode, one linear layer, SGD lr 0.1 "
        f"momentum 0.9, batch 256, {final['paper_probe_epochs']} epochs, lr x0.2 at 30/40/50, RandomResizedCrop "
        f"(0.2-1) + flip on the 50,000 train images every epoch; {final['paper_probe_summary']}. "
        f"`bash benchmarks/campaign_final.sh {final['leg']}{c.script_arg}` ran `metaug-eval --threads 2 paper-probe --model "
        f"{PROBED_FOLDER} --layer L --average-last 5 ...` ({mins['conv']} min for conv, {mins['fc']} min for fc); "
        f"reports: `{reports['conv']}`, `{reports['fc']}`.",
        f"- The other columns are the fast evaluation of leg {released['leg']} (`{released['eval']}`): weighted "
        f"k-NN (T 0.07), features-once logistic regression, k-means (k 10) NMI in percent and Hungarian accuracy.",
        "- Training compute: wall-clock training minutes times the cores used (the first release ran two "
        "one-thread runs side by side for 90 minutes). The paper's row is quoted, not measured here: "
        "224-px upsampled inputs, wider features, a GPU schedule.", "",
        markdown_table(rows), "",
        f"Reading: on the same protocol the final model is "
        f"{ev['conv'].probe - floor['conv'].probe:.2f} fast-probe points above the random-init "
        f"floor on `conv` ({ev['conv'].probe:.2f} vs {floor['conv'].probe:.2f}) and "
        f"{ev['conv'].knn[200] - cmc['conv'].knn[200]:.2f} k-NN points above the first "
        f"release's CMC ({ev['conv'].knn[200]:.2f} vs {cmc['conv'].knn[200]:.2f}), "
        f"with {final['training_minutes'] * 2 / (budget['cmc']['wall_clock_minutes'] * budget['cmc']['torch_threads']):.0f}x "
        f"its compute. The paper probe gives `conv` {final['paper_probe_conv']:.2f} / `fc` {final['paper_probe_fc']:.2f}, "
        f"{gap['conv']:.2f} / {gap['fc']:.2f} points below the paper's alexnet224: `{ev.model['architecture']}` at width "
        f"{ev.model['width']} on 32-px images, "
        f"trained {final['planned_epochs']} epochs on a CPU, against 224-px inputs on GPUs, so the gap is a "
        f"reference, not a measured shortfall of this implementation.",
    ]
    for f0, r0, ev0 in before:
        lines += ["", _versus(final, ev, f0, r0, ev0, label)]
    lines += [
        "",
        "The paper probe and the fast probe differ in what they train on: the paper probe's linear layer "
        "sees random crops of 20-100% of each image (resized back to 32 px) and plain SGD on raw features, "
        "the fast probe sees the uncropped test-time view with standardised features and a C chosen on "
        "held-out data; on this model they give "
        + ", ".join(f"`{layer}` {final[f'paper_probe_{layer}']:.2f} vs {ev[layer].probe:.2f}"
                    for layer in ("conv", "fc"))
        + " (paper vs fast). Which difference accounts for the gap was not measured.",
    ]
    plots = [layer for layer in ("fc", "conv") if (c.out / f"embedding-{layer}.png").is_file()]
    if plots:
        lines += ["", "t-SNE of the test features (5,000-image seeded subsample, coloured by class; "
                  "`metaug-eval plot`): " + ", ".join(f"`{repo_relative(c.out / f'embedding-{layer}.png')}`"
                                                       for layer in plots)
                  + "; positive-vs-negative similarity histograms beside them (`similarity-{layer}.png`)."]
    return "\n".join(lines) + "\n"


def _versus(final: dict[str, Any], ev: Any, f0: dict[str, Any], r0: dict[str, Any], ev0: Any,
            label: Callable[[Any], str]) -> str:
    """The reading's comparison of this campaign's final model with an earlier campaign's."""
    n0 = campaign_of(r0)
    c0 = get_campaign(n0)
    shipped = (f" and ship as `hub/{c0.alias('conv')}` / `hub/{c0.alias('fc')}`" if c0.shipped() else "")

    def diff(metric: str, get: Callable[[str], tuple[float, float]]) -> str:
        """One metric's clause: metric, then per layer the difference and (ours vs theirs), from
        ``get(layer) -> (ours, theirs)``."""
        return f"{metric} " + ", ".join(f"`{layer}` {a - b:+.2f} ({a:.2f} vs {b:.2f})"
                                       for layer in ("conv", "fc") for a, b in (get(layer),))

    return (f"Against campaign {n0}'s final model ({label(ev0)}, {f0['planned_epochs']} epochs in "
            f"{f0['training_minutes']} training minutes; its weights are in the committed state "
            f"`{repo_relative(c0.state)}`{shipped}): "
            + "; ".join((diff("paper probe", lambda m: (final[f"paper_probe_{m}"], f0[f"paper_probe_{m}"])),
                         diff("fast probe", lambda m: (ev[m].probe, ev0[m].probe)),
                         diff("k-NN k=200", lambda m: (ev[m].knn[200], ev0[m].knn[200]))))
            + f"; with {final['training_minutes'] / f0['training_minutes']:.2f}x its training minutes on the same "
            f"machine, architecture, width and views (one training run each: the seed-to-seed spread was not "
            f"measured).")


def earlier_finals(campaign: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The (final row, released row) pairs of the campaigns before ``campaign`` whose last leg has
    run (for :func:`final_table`'s comparison)."""
    out = []
    for n in sorted(n for n in CAMPAIGNS if n < campaign):
        rows = read_rows(campaign=n)
        final = final_evaluation(rows)
        released = current_release_row(rows)
        if final is not None and released is not None:
            out.append((final, released))
    return out


def record_final(leg: int, paper_probe_conv: Path, paper_probe_fc: Path, campaign: int = 1) -> dict[str, Any]:
    """``python -m metaug_release campaign final``: the last leg's evaluation-only row in campaign.jsonl,
    CAMPAIGN.md's table, the cards with the paper probe, RESULTS.md's final table and the plot
    (then ``campaign recard`` and ``campaign readme``). Returns the row."""
    rows = read_rows(campaign=campaign)
    released = current_release_row(rows)
    if released is None:
        raise MetAugError(f"no released leg of campaign {campaign} in benchmarks/campaign.jsonl")
    final = final_row(leg, released, {"conv": paper_probe_conv, "fc": paper_probe_fc})
    write_rows([x for x in all_rows() if (campaign_of(x), x["leg"]) != (campaign, leg)] + [final])
    write_tables(campaign)
    write_cards(released, final, get_campaign(campaign).out)
    write_section(RESULTS, final_table(final, released, earlier=earlier_finals(campaign)), final_section(campaign))
    plot(all_rows())
    return final
