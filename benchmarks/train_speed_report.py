"""Render the "Training speed" section of RESULTS.md from ``train_speed.py`` JSON files.

Pure formatting: every number comes from the JSON files (one per benchmark run), and the
conclusions (targets met or not, the meta_every that keeps MetAug within 1.5x of CMC) are
computed here from those numbers, never typed in.
"""

from __future__ import annotations

import math
from typing import Any

PHASE_NAMES = ("data", "forward", "loss", "backward", "optimizer", "bank_update", "meta")
MAIN = ("cmc", "oucl")


def _peak(run: dict[str, Any]) -> float:
    return max(run["peaks_gflops"])


def _metrics(run: dict[str, Any], res: dict[str, Any], name: str) -> dict[str, float]:
    v = res["variants"][name]
    batch = res["batch"]
    ips = batch / v["wall_s"]
    return {
        "ms": v["wall_s"] * 1000, "img_s": ips,
        "gflops": v["step_flops"] / v["wall_s"] / 1e9,
        "mfu": res["encoder_flops_per_image"] * ips / (_peak(run) * 1e9),
    }


def _is_main(name: str) -> bool:
    return "," not in name


def main_table(run: dict[str, Any]) -> str:
    rss = run.get("peak_rss_mb", {})
    lines = ["| width | batch | method | ms / step | img/s | epochs / h | step GFLOP | achieved GFLOP/s | MFU | x cmc "
             "| page faults / step | peak RSS MB |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in run["results"]:
        base = res["variants"]["cmc"]["wall_s"]
        for name, v in res["variants"].items():
            if not _is_main(name) or "error" in v:
                continue
            m = _metrics(run, res, name)
            mem = rss.get(f"{res['width']}/{res['batch']}", {}).get(name)
            flt = v.get("minor_faults_per_step")
            lines.append(f"| {res['width']} | {res['batch']} | {name} | {m['ms']:.0f} | {m['img_s']:.0f} | "
                         f"{m['img_s'] * 3600 / run['num_samples']:.1f} | "
                         f"{v['step_flops'] / 1e9:.1f} | {m['gflops']:.0f} | {100 * m['mfu']:.0f}% | "
                         f"{v['wall_s'] / base:.2f} | {'' if flt is None else f'{flt:,.0f}'} | "
                         f"{'' if mem is None else f'{mem:,.0f}'} |")
    return "\n".join(lines)


def phase_table(run: dict[str, Any]) -> str:
    cols = [p for p in PHASE_NAMES if any(p in v.get("phases_s", {}) for r in run["results"] for v in r["variants"].values())]
    lines = ["| width | method | " + " | ".join(cols) + " | sum of phases | wall |",
             "|---|---|" + "---:|" * (len(cols) + 2)]
    for res in run["results"]:
        for name, v in res["variants"].items():
            if not _is_main(name) or "error" in v or not v.get("phases_s"):
                continue
            ph = v["phases_s"]
            cells = [f"{ph[c] * 1000:.0f}" if c in ph else "" for c in cols]
            lines.append(f"| {res['width']} | {name} | " + " | ".join(cells)
                         + f" | {sum(ph.values()) * 1000:.0f} | {v['wall_s'] * 1000:.0f} |")
    return "\n".join(lines)


def ablation_table(run: dict[str, Any]) -> str:
    lines = ["| width | setting | ms / step | x the default | what it says |", "|---|---|---:|---:|---|"]
    for res in run["results"]:
        vs = res["variants"]
        for name, v in vs.items():
            if _is_main(name) and name != "metaug (meta_every 1), double backward":
                continue
            base_name = "metaug (meta_every 1)" if name.startswith("metaug") else "cmc"
            if "error" in v:
                lines.append(f"| {res['width']} | {name} | failed | | {v['error'][:120]} |")
                continue
            ratio = v["wall_s"] / vs[base_name]["wall_s"]
            note = {"cmc, NCHW": "channels_last off", "cmc, prefetch": "next batch prepared in a worker thread",
                    "cmc, no prefetch": "batch prepared inside the step",
                    "cmc, 1 thread": "one torch thread", "cmc, pre-made tensors": "no data path at all",
                    "cmc, torch.compile": f"inductor (first step {v.get('first_step_s', float('nan')):.0f} s)",
                    "metaug (meta_every 1), double backward": "textbook second-order meta step"}.get(name, "")
            lines.append(f"| {res['width']} | {name} | {v['wall_s'] * 1000:.0f} | {ratio:.2f} | {note} |")
    return "\n".join(lines)


def meta_every_for(res: dict[str, Any], limit: float) -> tuple[int, float, float] | None:
    """Smallest meta_every k with (t_no_meta + t_meta / k) <= limit * t_cmc, from the phases
    of the meta_every-1 variant; returns (k, t_no_meta / t_cmc, t_meta / t_cmc)."""
    v = res["variants"].get("metaug (meta_every 1)")
    if not v or "meta" not in v.get("phases_s", {}):
        return None
    cmc = res["variants"]["cmc"]["wall_s"]
    t_meta = v["phases_s"]["meta"]
    t_rest = v["wall_s"] - t_meta
    if t_rest >= limit * cmc:
        return None
    return math.ceil(t_meta / (limit * cmc - t_rest)), t_rest / cmc, t_meta / cmc


def targets(run: dict[str, Any]) -> str:
    out = []
    for res in run["results"]:
        vs = res["variants"]
        w, b = res["width"], res["batch"]
        cmc = _metrics(run, res, "cmc")
        ok = "met" if cmc["mfu"] >= 0.5 else "NOT met"
        out.append(f"- width {w}, batch {b}: cmc MFU **{100 * cmc['mfu']:.0f}%** (target 50%: {ok}).")
        if "metaug (meta_every 1)" in vs:
            r1 = vs["metaug (meta_every 1)"]["wall_s"] / vs["cmc"]["wall_s"]
            out.append(f"  metaug meta_every 1 = **{r1:.2f}x** cmc (target 3x: {'met' if r1 <= 3 else 'NOT met'}).")
        k = meta_every_for(res, 1.5)
        v1 = vs.get("metaug (meta_every 1)", {})
        if k is None and "meta" in v1.get("phases_s", {}):
            rest = (v1["wall_s"] - v1["phases_s"]["meta"]) / vs["cmc"]["wall_s"]
            out.append(f"  No meta_every keeps metaug within 1.5x of cmc here: its step without the meta step (MAG "
                       f"forward, scoring of the MAG outputs, the augmented losses) is already {rest:.2f}x cmc.")
        if k is not None:
            measured = {int(n.split()[-1].rstrip(")")): v["wall_s"] / vs["cmc"]["wall_s"]
                        for n, v in vs.items() if n.startswith("metaug (meta_every") and _is_main(n)}
            meas = ", ".join(f"{m}: {r:.2f}x" for m, r in sorted(measured.items()))
            out.append(f"  Within 1.5x of cmc from meta_every **{k[0]}** (step without the meta step "
                       f"{k[1]:.2f}x cmc, meta step {k[2]:.2f}x; measured {meas}).")
        if "cmc, pre-made tensors" in vs:
            r = vs["cmc"]["wall_s"] / vs["cmc, pre-made tensors"]["wall_s"]
            out.append(f"  Real data path / pre-made tensors: **{r:.2f}x** (target 1.1x: {'met' if r <= 1.1 else 'NOT met'}).")
    return "\n".join(out)


def limits(fast: dict[str, Any]) -> str:
    """Why the unmet targets are unmet, from the phase breakdown."""
    res = next(r for r in fast["results"] if r["width"] == 0.5)
    cmc = res["variants"]["cmc"]
    ph = cmc["phases_s"]
    m1 = res["variants"].get("metaug (meta_every 1)", {})
    meta = m1.get("phases_s", {}).get("meta", float("nan"))
    return (
        f"- cmc at width 0.5: the encoder is {ph['forward'] * 1000:.0f} ms forward of a {cmc['wall_s'] * 1000:.0f} ms step; "
        f"the `loss` phase ({ph['loss'] * 1000:.0f} ms) is almost all memory-bank scoring: six view pairs, each a "
        "[128 x 128] x [128 x 50,000] GEMM (1.6 GFLOP) plus its gather, and a fused gather-and-sum each in the "
        "backward. Those GEMMs are waste by the MFU definition and their cost per image does not shrink with "
        "the batch, so three views at width 0.5 stay under 50% at batch 128 (two views, as docs/METHODS.md section 10's figure, have a "
        "third of the pairs). Batch 256 reaches it (sweep below), width 1.0 is far above it.\n"
        f"- metaug's meta step ({meta * 1000:.0f} ms at width 0.5) holds, exactly as docs/METHODS.md section 6 asks: two encoder "
        "forward+backward passes (at theta' and at theta*), one forward-mode product through the encoder (the jvp "
        "route replaces the encoder's double backward by it), and three scorings of two anchor sets each "
        "(z and MAG(z), z* and MAG(z*), and the second-order pass through the loss head), each with OUCL's five "
        f"terms and R. Nothing in it is computed twice; it is {meta / cmc['wall_s']:.1f} cmc steps of work, so meta_every 1 cannot come "
        "within 3x without changing the maths (a first-order meta step, fewer augmented terms, or shared "
        "negatives would -- none is a default).")


def recommendation(fast: dict[str, Any], sweeps: list[dict[str, Any]]) -> str:
    """The CPU campaign recipe: width 0.5 (the widest that keeps several epochs an hour), the
    measured batch size with the most cmc images/s, and the smallest *measured* meta_every whose
    step is within 1.5x of cmc; epochs per hour from the measured images/s."""
    res = next(r for r in fast["results"] if r["width"] == 0.5)
    vs = res["variants"]
    candidates = {res["batch"]: res["batch"] / vs["cmc"]["wall_s"]}
    for sw in sweeps:
        for r in sw["results"]:
            if r["width"] == 0.5 and "cmc" in r["variants"]:
                candidates[r["batch"]] = r["batch"] / r["variants"]["cmc"]["wall_s"]
    measured = sorted((int(n.split()[-1].rstrip(")")), v["wall_s"]) for n, v in vs.items()
                      if n.startswith("metaug (meta_every") and _is_main(n))
    within = [(m, t) for m, t in measured if t <= 1.5 * vs["cmc"]["wall_s"]]
    m, t = within[0] if within else measured[-1]
    n = fast["num_samples"]
    cmc_ips = res["batch"] / vs["cmc"]["wall_s"]
    met_ips = res["batch"] / t
    wide = [r for r in fast["results"] if r["width"] == 1.0 and r["batch"] == res["batch"]]
    wide_cost = wide[0]["variants"]["cmc"]["wall_s"] / vs["cmc"]["wall_s"] if wide else float("nan")
    batch_note = ", ".join(f"{b}: {ips:.0f} img/s" for b, ips in sorted(candidates.items()))
    return (f"- alexnet32 width **0.5**, views **l, ab, ori**, batch **{res['batch']}** (cmc at width 0.5 by batch: "
            f"{batch_note}: a larger batch buys a little throughput but changes the optimisation -- fewer, larger "
            f"steps -- away from docs/METHODS.md section 10's validated CMC curve at batch 128; width 1.0 costs {wide_cost:.1f}x the time "
            f"per image), `metaug.meta_every` **{m}** ({t / vs['cmc']['wall_s']:.2f}x a cmc step"
            f"{'' if within else ', the cheapest measured'}), one process using both cores, the fast defaults.\n"
            f"- Measured: metaug **{met_ips * 3600 / n:.1f} epochs/h** ({met_ips:.0f} img/s), cmc **{cmc_ips * 3600 / n:.1f} "
            f"epochs/h** ({cmc_ips:.0f} img/s) on CIFAR-10's {n:,} training images; a 5-leg campaign of 125 training "
            f"minutes each reaches about {met_ips * 625 * 60 / n:.0f} MetAug epochs.")


def chosen_defaults(fast: dict[str, Any], reference: dict[str, Any] | None) -> str:
    """Each default with the measured reason (ratios from the ablation rounds, width 0.5)."""
    res = next(r for r in fast["results"] if r["width"] == 0.5)
    vs = res["variants"]

    def ratio(name: str, base: str = "cmc") -> str:
        v = vs.get(name)
        if not v or "error" in v:
            return "not measured" if not v else f"failed ({v['error'][:80]})"
        return f"{v['wall_s'] / vs[base]['wall_s']:.2f}x"

    faults = ""
    if reference is not None:
        ref = next((r for r in reference["results"] if r["width"] == 0.5), None)
        if ref and "minor_faults_per_step" in ref["variants"]["cmc"]:
            pairs = []
            for name in ("cmc", "metaug (meta_every 1)", "metaug (meta_every 4)"):
                a, b = ref["variants"].get(name, {}), vs.get(name, {})
                if "minor_faults_per_step" in a and "minor_faults_per_step" in b:
                    pairs.append(f"{name} {a['minor_faults_per_step']:,.0f} -> {b['minor_faults_per_step']:,.0f}")
            faults = (" Minor page faults per step in steady state, malloc left alone (reference run) -> this "
                      "setting: " + "; ".join(pairs) + ". glibc's adaptive threshold already keeps a fixed-shape "
                      "cmc step fault-free after a few steps; MetAug's varying shapes are where it pays, and every "
                      "run's first steps.")
    compile_first = vs.get("cmc, torch.compile", {}).get("first_step_s")
    return "\n".join([
        f"- `run.channels_last=true`: NCHW takes {ratio('cmc, NCHW')} the step time.",
        f"- `run.keep_freed_memory=true`: glibc otherwise returns every freed block above its mmap threshold to the "
        f"kernel and the next step faults it in again.{faults}",
        f"- `run.meta_grad=jvp`: the double-backward meta step takes {ratio('metaug (meta_every 1), double backward', 'metaug (meta_every 1)')} "
        "the jvp route's whole metaug step (both exact; tests/training/test_train_meta.py pins them to each other at 1e-9 in float64).",
        "- `bank.scoring=full` (docs/METHODS.md section 3(a), the default already) now has a fused backward (`embedding_bag` "
        "instead of a dense [B, N] scatter and a second GEMM) and writes its [B, N] product into a reused buffer.",
        (f"- `run.prefetch=true`: preparing the batch inside the step instead takes {ratio('cmc, no prefetch')} the step "
         f"time; pre-made tensors (no data path at all) take {ratio('cmc, pre-made tensors')}. The data path is a few "
         "per cent of a step, so this is near the run-to-run noise; the worker keeps it off the critical path."
         if "cmc, no prefetch" in vs else
         f"- `run.prefetch=false`: switching it on takes {ratio('cmc, prefetch')} the step time."),
        f"- `run.compile=false`: `torch.compile` takes {ratio('cmc, torch.compile')} the eager step"
        + (f", after a first step of {compile_first:.0f} s of compiling." if compile_first else "."),
        f"- `run.num_threads=0` (all cores, one process): one thread takes {ratio('cmc, 1 thread')} the step time.",
    ])


def before_after(runs: list[dict[str, Any]]) -> str:
    """img/s of each main method in every run, side by side (first run = the "after")."""
    keys: list[tuple[float, int, str]] = []
    for res in runs[0]["results"]:
        keys += [(res["width"], res["batch"], n) for n in res["variants"] if _is_main(n) and "error" not in res["variants"][n]]
    head = ("| width | batch | method | " + " | ".join(f"{r['label']} img/s" for r in runs) + " | "
            + " | ".join(f"speed-up vs {r['label']}" for r in runs[1:]) + " |")
    lines = [head, "|---|---:|---|" + "---:|" * (2 * len(runs) - 1)]
    for w, b, n in keys:
        vals = []
        for r in runs:
            res = next((x for x in r["results"] if x["width"] == w and x["batch"] == b), None)
            v = res["variants"].get(n) if res else None
            vals.append(None if not v or "error" in v else b / v["wall_s"])
        if vals[0] is None:
            continue
        cells = " | ".join("" if x is None else f"{x:.0f}" for x in vals)
        ups = " | ".join("" if x is None else f"{vals[0] / x:.2f}x" for x in vals[1:])
        lines.append(f"| {w} | {b} | {n} | {cells} | {ups} |")
    return "\n".join(lines)


def provenance(run: dict[str, Any]) -> str:
    peaks = ", ".join(f"{p:.0f}" for p in run["peaks_gflops"])
    return (f"- **{run['label']}**: {run['machine']}, {run['cores']} cores, {run['threads']} torch threads, torch "
            f"{run['torch']}; {run['date']}; commit {run['commit']}; {run['wall_s'] / 60:.0f} min; load average after "
            f"{' '.join(run.get('loadavg', []))}. fp32 matmul peak (2048^2, best of 5 x 5, at the start and after "
            f"each width): {peaks} GFLOP/s; MFU uses {_peak(run):.0f}. `{run['command']}`")


def render(runs: list[dict[str, Any]]) -> str:
    """The whole section. ``runs``: the fast-defaults run first, then any others."""
    fast = next(r for r in runs if not r.get("reference") and not r.get("legacy") and r["label"] == "fast defaults")
    others = [r for r in runs if r is not fast]
    compared = [fast] + [r for r in others if r.get("reference") or r.get("legacy")]
    sweeps = [r for r in others if r not in compared]
    flops_note = ", ".join(f"{r['encoder_flops_per_image'] / 1e6:.0f} M at width {r['width']}" for r in fast["results"])
    parts = [
        "## Training speed (benchmarks/train_speed.py)",
        "",
        "One training iteration as `metaug-train` runs it, alexnet32, three views (l, ab, ori), K 4096, "
        "N 50,000 synthetic uint8 images (the step cost does not depend on the pixels), fp32. "
        "Variants are interleaved in rounds in one process (median of the rounds), so ratios within a run share "
        "the machine's conditions; this is a shared VM whose speed drifts by 10-20% over minutes, so compare "
        "absolute figures across runs with care. MFU = encoder forward+backward FLOPs per image "
        f"({flops_note}) "
        "x img/s / the run's matmul peak; the step GFLOP column counts every GEMM and convolution of a step "
        "(bank scoring, MAGs and the meta step included).",
        "",
        "The section \"Training step time\" further down is the older, smaller benchmark (commit 814eb81, batch 64).",
        "",
        "### Runs",
        *[provenance(r) for r in runs],
        "",
        "### Targets (fast defaults)",
        targets(fast),
        "",
        "",
        "What limits the step:",
        limits(fast),
        "",
        "### Fast defaults",
        main_table(fast),
        "",
        "Where a step's time goes (ms per step, mean over the rounds; wall is the median; `loss` = memory-bank "
        "scoring + losses, forward; `backward` includes the scoring's backward; `meta` = the whole meta step):",
        "",
        phase_table(fast),
        "",
        "Each speed setting switched off alone (same rounds):",
        "",
        ablation_table(fast),
        "",
        "### Chosen defaults",
        chosen_defaults(fast, next((r for r in others if r.get("reference")), None)),
        "",
        "### Recommended CPU campaign recipe",
        recommendation(fast, sweeps),
        "",
        "### Before and after",
        before_after(compared),
    ]
    for r in others:
        if r in compared:
            parts += ["", f"{r['label']}:", "", main_table(r)]
    for r in sweeps:
        parts += ["", f"### {r['label']}", "", main_table(r)]
    return "\n".join(parts) + "\n"
