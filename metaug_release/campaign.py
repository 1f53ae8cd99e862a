"""The CPU training campaigns' record: one row per leg (``benchmarks/campaign.jsonl``), the
tables of ``benchmarks/CAMPAIGN.md`` and the learning-curve plot ``benchmarks/campaign.png``.

:data:`CAMPAIGNS` defines every campaign (recipe, run folder, legs, where its records go); each
``python -m metaug_release campaign`` subcommand takes ``--campaign N`` (default 1). Rows of campaign 1
carry no ``campaign`` field; rows of a later campaign carry ``"campaign": N`` and their leg
number within it. Campaign 2 continues the recipe study's ``oucl-shared`` run: the study's
candidate run is its leg 1 (``python -m metaug_release campaign row --campaign 2 --leg 1 --eval
benchmarks/recipe_study/oucl-shared.json``), and its training minutes count from that run's start.

The flagship run (``metaug_training/recipes/cifar10-alexnet32-metaug.json``) trains in legs of
one session each; ``benchmarks/CAMPAIGN.md`` has the plan. After a leg stops
(``bash benchmarks/campaign_leg.sh LEG`` runs these):

    python -m metaug_release evaluate --model runs/cifar10-alexnet32-metaug/full/export \\
        --data /tmp/cifar/cifar10 -o /tmp/campaign-eval --report benchmarks/campaign/leg1.json --threads 2
    python -m metaug_release campaign row --leg 1 --eval benchmarks/campaign/leg1.json   # campaign.jsonl + png
    python -m metaug_release campaign cards --leg 1                                      # card-*.json, summary
    python -m metaug_release campaign readme --leg 1      # after the release export: README's released-models section

A campaign-2 leg runs the same with ``--campaign 2`` (``bash benchmarks/campaign_leg.sh LEG 2``;
its reports and card files go to ``benchmarks/campaign/c2/``).

A row holds: leg, epoch, step, training minutes so far (from the run's ``log.jsonl``: the sum of
every logged interval's steps / rate, so gaps between legs do not count), the leg's images/s,
weighted k-NN k=200 on ``conv`` and ``fc`` and the fast linear probe on ``conv`` (more columns
when measured). The plot shows every campaign against training minutes, with the random-init
floor and the first release's CMC (``benchmarks/release/floor.json`` and ``cmc.json``) and
campaign 1's final model as reference lines."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from metaug_features.errors import MetAugError

from .paths import BENCHMARKS, FIRST_RELEASE, HUB, RECIPES, REPO, repo_relative
from .records import EncoderEvaluation, load_evaluation
from .row_files import read_jsonl, rows_sha256, save_plot, write_jsonl  # noqa: F401 (rows_sha256: the plot's fingerprint, named here)
from .run_log import log_records, run_config, training_time
from .sections import write_section

JSONL = BENCHMARKS / "campaign.jsonl"
PNG = BENCHMARKS / "campaign.png"
OUT = BENCHMARKS / "campaign"
DOC = BENCHMARKS / "CAMPAIGN.md"
#: Marks the last leg's row: an evaluation of the finished run's weights, no training.
FINAL_KIND = "final-evaluation"
#: Display names of the training methods (``method`` of a recipe / a folder's provenance). OUCL on
#: its own is what the MetAug paper's Table 1 calls "MetAug (only OUCL)": every generated text that
#: names the method of OUCL-trained weights uses that name, never plain "MetAug".
METHOD_LABELS = {"metaug": "MetAug", "oucl": "MetAug (only OUCL)", "cmc": "CMC"}
#: The layers of a shipped pair: ``hub/<release_name>-conv`` and ``hub/<release_name>-fc``.
RELEASE_LAYERS = ("conv", "fc")
#: Meta-diagnostics records of finished runs (``benchmarks/meta_diagnostics.py``), one JSON per model.
META_DIAGNOSTICS = BENCHMARKS / "meta_diagnostics"


def method_label(method: str | None) -> str:
    """How generated text names a training method (:data:`METHOD_LABELS`; the key itself when unknown)."""
    return METHOD_LABELS.get(method, str(method))


@dataclass(frozen=True)
class Campaign:
    """One training campaign: a recipe trained in legs of one session each.

    run_dir: the run's committed folder (``log.jsonl``, ``config.json``, ``state/``); the trainer
    writes into ``run_dir/full`` (git-ignored). out: where its evaluation reports
    (``legN.json``) and card files go. section: the CAMPAIGN.md / RESULTS.md section of its
    rows' table. issues: the issues of its legs (headings). release_name: its shipped pair is
    ``hub/<release_name>-{conv,fc}``, loaded by the aliases of the same names
    (``metaug_features.hub.MODEL_ALIASES``). diagnostics: the meta-diagnostics record of its final
    weights, rendered on its cards when the file exists (None: the method has no meta step)."""

    number: int
    recipe: Path
    run_dir: Path
    legs: int
    out: Path
    section: str
    issues: str
    release_name: str
    diagnostics: Path | None = None

    @property
    def full(self) -> Path:
        return self.run_dir / "full"

    @property
    def state(self) -> Path:
        return self.run_dir / "state"

    def eval_path(self, leg: int) -> Path:
        return self.out / f"leg{leg}.json"

    @cached_property
    def method(self) -> str:
        return json.loads(self.recipe.read_text())["method"]

    @property
    def script_arg(self) -> str:
        """The CAMPAIGN argument of ``campaign_leg.sh`` / ``campaign_final.sh`` as docs quote it
        (" 2"; empty for campaign 1, the scripts' default)."""
        return f" {self.number}" if self.number != 1 else ""

    @property
    def label(self) -> str:
        """How tables and plots name it: "campaign 2, MetAug (only OUCL)"."""
        return f"campaign {self.number}, {method_label(self.method)}"

    def alias(self, layer: str) -> str:
        """The built-in alias (and hub/ folder name) of the campaign's shipped ``layer`` folder."""
        return f"{self.release_name}-{layer}"

    def folder(self, layer: str, hub: Path = HUB) -> Path:
        """The campaign's shipped ``layer`` folder under ``hub``."""
        return hub / self.alias(layer)

    def shipped(self, hub: Path = HUB) -> bool:
        """True when both of the campaign's folders are in ``hub`` (with a config)."""
        return all((self.folder(layer, hub) / "config.json").is_file() for layer in RELEASE_LAYERS)

    def default_run(self) -> Path:
        """The folder a row's training minutes come from: the trainer's own folder when it is on
        this machine, else the committed copy of its log and config."""
        return self.full if (self.full / "log.jsonl").is_file() else self.run_dir


CAMPAIGNS = {
    1: Campaign(number=1, recipe=RECIPES / "cifar10-alexnet32-metaug.json",
                run_dir=REPO / "runs" / "cifar10-alexnet32-metaug", legs=5, out=OUT, section="campaign",
                issues="#14-#18", release_name="cifar10-metaug",
                diagnostics=META_DIAGNOSTICS / "campaign1-final.json"),
    2: Campaign(number=2, recipe=RECIPES / "study-oucl-shared.json",
                run_dir=REPO / "runs" / "study" / "oucl-shared", legs=6, out=OUT / "c2", section="campaign2",
                issues="#34, #36-#40", release_name="cifar10"),
}

# Campaign 1's names, as the tooling used them before there were several campaigns.
RECIPE = CAMPAIGNS[1].recipe
RUN = CAMPAIGNS[1].full
LEGS = CAMPAIGNS[1].legs
#: The section of CAMPAIGN.md (the rows' table) and of RESULTS.md (the released state).
SECTION = CAMPAIGNS[1].section


#: The release name of the default aliases ``cifar10-conv`` / ``cifar10-fc`` (the best model).
DEFAULT_RELEASE_NAME = "cifar10"


def shipped_campaigns(hub: Path = HUB) -> list[Campaign]:
    """The campaigns whose pair of folders is in ``hub``: the default pair's first, then by number."""
    shipped = [c for c in CAMPAIGNS.values() if c.shipped(hub)]
    return sorted(shipped, key=lambda c: (c.release_name != DEFAULT_RELEASE_NAME, c.number))


def get_campaign(number: int) -> Campaign:
    """The campaign ``number`` (an error naming the defined ones otherwise)."""
    if number not in CAMPAIGNS:
        raise MetAugError(f"no campaign {number}; defined: {sorted(CAMPAIGNS)}")
    return CAMPAIGNS[number]


def campaign_of(row: dict[str, Any]) -> int:
    """The campaign a row belongs to (rows without the field are campaign 1's)."""
    return int(row.get("campaign", 1))


# ---------------------------------------------------------------------- rows
def all_rows(path: Path = JSONL) -> list[dict[str, Any]]:
    """Every campaign's rows, in file order (none when the file does not exist yet)."""
    return read_jsonl(path)


def read_rows(path: Path = JSONL, campaign: int = 1) -> list[dict[str, Any]]:
    """The rows of one campaign (default campaign 1), in leg order."""
    return [r for r in all_rows(path) if campaign_of(r) == campaign]


def write_rows(rows: list[dict[str, Any]], path: Path = JSONL) -> None:
    """Write every campaign's rows, sorted by campaign and leg, atomically."""
    write_jsonl(sorted(rows, key=lambda r: (campaign_of(r), r["leg"])), path)



def row_of(rows: list[dict[str, Any]], leg: int) -> dict[str, Any]:
    """The row of ``leg`` among one campaign's ``rows`` (an error that says what to run when there is none)."""
    row = next((x for x in rows if x["leg"] == leg), None)
    if row is None:
        raise MetAugError(f"no row for leg {leg} in {JSONL}; run `python -m metaug_release campaign row` first")
    return row


def make_row(leg: int, evaluation: EncoderEvaluation, run_dir: Path, previous: list[dict[str, Any]],
             campaign: int = 1) -> dict[str, Any]:
    """The row of ``leg`` of ``campaign`` from its evaluation and the run's log (``previous``: the
    campaign's rows so far; the leg's own minutes and epochs count from the last earlier leg)."""
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
    if step > max((r.get("step", 0) for r in records), default=0):
        raise MetAugError(f"the evaluated weights are at step {step}, past the last step of {run_dir}/log.jsonl")
    row = {
        **({"campaign": campaign} if campaign != 1 else {}),
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


def current_release_row(rows: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The row the default shipped folders (``hub/cifar10-{conv,fc}``) come from: the last released
    training row of any campaign (rows in file order: by campaign, then leg), or None when no leg
    was released. Given one campaign's rows: the row its own shipped pair comes from."""
    released = [r for r in training_rows(all_rows() if rows is None else rows) if r.get("released")]
    return released[-1] if released else None


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
    """Draw every campaign's legs against training minutes into ``path``, atomically: k-NN k=200
    on conv and fc and the fast probe on conv (campaign 1 solid, later ones dashed), the last
    leg's paper probe, the random-init floor and the first release's CMC, and campaign 1's final
    model as a horizontal line. The PNG carries :func:`rows_sha256` of ``rows`` (text chunk
    ``rows_sha256``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    refs = references()
    floor = refs["random init (floor)"]
    series = (("knn_conv_k200", "k-NN k=200, conv", "C0"), ("knn_fc_k200", "k-NN k=200, fc", "C1"),
              ("probe_conv", "fast linear probe, conv", "C2"))
    styles = {1: ("o", "-"), 2: ("s", "--")}
    # The final rows' paper probe: one marker per campaign, as their points sit a few minutes apart.
    paper_markers = {1: "*", 2: "P"}
    numbers = sorted({campaign_of(r) for r in rows})
    xmax = 0.0
    for n in numbers:
        own = [r for r in rows if campaign_of(r) == n]
        train = training_rows(own)
        marker, line = styles.get(n, ("^", "-."))
        c = CAMPAIGNS.get(n)
        name = c.label if c else f"campaign {n}"
        x = [0.0] + [r["training_minutes"] for r in train]
        xmax = max([xmax] + x)
        for key, label, colour in series:
            # Minute 0 is the random-init encoder (the floor's numbers: same architecture, untrained).
            ax.plot(x, [floor[key]] + [r[key] for r in train], marker=marker, linestyle=line, color=colour,
                    label=f"{name}: {label}")
        for r in own:
            if r.get("kind") != FINAL_KIND:
                continue
            for layer, colour in (("conv", "C3"), ("fc", "C4")):
                ax.plot([r["training_minutes"]], [r[f"paper_probe_{layer}"]], paper_markers.get(n, "X"), color=colour,
                        markersize=12 if n == 1 else 10, markeredgecolor="black" if n != 1 else colour,
                        label=f"{name}: paper linear probe, {layer} (leg {r['leg']})")
    for (name, ref), style in zip(refs.items(), (":", (0, (1, 3)))):
        for key, colour in (("knn_conv_k200", "C0"), ("probe_conv", "C2")):
            ax.axhline(ref[key], color=colour, linestyle=style, linewidth=1, alpha=0.8)
        ax.plot([], [], color="grey", linestyle=style, label=f"{name} (k-NN and probe, conv)")
    first = training_rows([r for r in rows if campaign_of(r) == 1])
    if first:
        last = first[-1]
        for key, colour in (("knn_conv_k200", "C0"), ("probe_conv", "C2")):
            ax.axhline(last[key], color=colour, linestyle="-", linewidth=2.5, alpha=0.25)
        ax.plot([], [], color="grey", linestyle="-", linewidth=2.5, alpha=0.4,
                label=f"campaign 1's final model (leg {last['leg']}, {last['training_minutes']:.0f} min): "
                      f"k-NN conv {last['knn_conv_k200']:.2f}, probe conv {last['probe_conv']:.2f}")
    ax.set_xlim(0, max(xmax, 1.0) * 1.03)
    ax.set_xlabel("training minutes on the 2-core CPU (each campaign from its run's start)")
    ax.set_ylabel("CIFAR-10 test accuracy (%)")
    ax.set_title("alexnet32 w0.5 on the 2-core CPU: campaign legs against training minutes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return save_plot(fig, path, rows)


# ---------------------------------------------------------------------- operations
def results_section(campaign: int, rows: list[dict[str, Any]]) -> str:
    """RESULTS.md's section of a later campaign's legs (campaign 1's table is in CAMPAIGN.md only)."""
    c = get_campaign(campaign)
    return (f"## Training campaign {campaign}: the legs ({c.issues})\n\n"
            f"`{c.recipe.relative_to(REPO).as_posix()}`, {method_label(c.method)}, {c.legs} legs "
            f"planned, continuing the run in `{c.run_dir.relative_to(REPO).as_posix()}`; training minutes from its "
            f"log since the run's start. Generated by `python -m metaug_release campaign row --campaign {campaign}` from "
            f"`benchmarks/campaign.jsonl` (accuracy in %, 10,000 test images; `benchmarks/CAMPAIGN.md`, "
            f"\"Campaign {campaign}\").\n\n" + rows_table(rows) + "\n\n"
            "![campaign legs against training minutes](campaign.png)\n")


def write_tables(campaign: int = 1) -> list[Path]:
    """Rewrite the campaign's rows table in CAMPAIGN.md (and, for a later campaign, in RESULTS.md)."""
    from .paths import RESULTS

    c = get_campaign(campaign)
    rows = read_rows(campaign=campaign)
    written = [write_section(DOC, rows_table(rows), c.section)]
    if campaign != 1 and rows:
        written.append(write_section(RESULTS, results_section(campaign, rows), c.section))
    return written


def record_row(leg: int, eval_path: Path, run_dir: Path | None = None, released: bool = False,
               campaign: int = 1) -> dict[str, Any]:
    """``python -m metaug_release campaign row``: append (or replace) the leg's row of ``campaign`` in
    campaign.jsonl, rewrite its tables and redraw campaign.png; return the row. ``run_dir``: the
    run folder whose log gives the training minutes (default :meth:`Campaign.default_run`)."""
    c = get_campaign(campaign)
    row = make_row(leg, load_evaluation(eval_path), run_dir or c.default_run(), read_rows(campaign=campaign), campaign)
    row["released"] = bool(released)
    row["eval"] = repo_relative(eval_path)
    write_rows([x for x in all_rows() if (campaign_of(x), x["leg"]) != (campaign, leg)] + [row])
    write_tables(campaign)
    plot(all_rows())
    return row


def redraw() -> Path:
    """``python -m metaug_release campaign plot``: redraw campaign.png from campaign.jsonl (every campaign)."""
    return plot(all_rows())
