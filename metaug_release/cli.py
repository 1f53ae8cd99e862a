"""``python -m metaug_release``: the release and record tooling (evaluations, campaign rows, cards, the
generated sections of README.md / benchmarks/RESULTS.md / benchmarks/CAMPAIGN.md, reproduction).

    python -m metaug_release evaluate --model DIR --data CIFAR -o FEATS --report benchmarks/campaign/legN.json
    python -m metaug_release campaign row|plot|cards|readme|final|recard|paths [--campaign N] ...
    python -m metaug_release cards --metaug-eval ... -o benchmarks/release        (the first release's card files)
    python -m metaug_release reproduce hub/cifar10-conv hub/cifar10-fc --data ../shared/data/cifar10-jpeg.tar.gz
    python -m metaug_release study row|results ...
    python -m metaug_release view-generators TAG
    python -m metaug_release current-release beats|write ...      (the re-release decision, its record)
    python -m metaug_release view-generators-budget PROBE_DIR ROW... --limit-s S --spent-s S

Each subcommand only parses options and calls one function of :mod:`metaug_release`;
every path it writes is printed (absolute) on stderr. Exit codes as every metaug command
(``metaug_cli/_common.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from metaug_cli._common import (
    Group,
    device_option,
    echo_written,
    group,
    handle_errors,
    output_option,
    quiet_option,
    threads_option,
)

# Option defaults come from the settings dataclass (one source: tests/release/test_release_decisions.py compares them).
from metaug_release.encoder_eval import EvalSettings
from metaug_release.paths import CURRENT_RELEASE, HUB
from metaug_release.reproduce import TOLERANCE

_existing_file = click.Path(exists=True, dir_okay=False, path_type=Path)
_existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)
_campaign_opt = click.option("--campaign", "campaign_no", type=click.IntRange(min=1), default=1, show_default=True,
                             help="Which campaign (metaug_release.campaign.CAMPAIGNS: 1 MetAug, "
                                  "2 MetAug (only OUCL)).")
_report_opt = click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="Write the JSON report here.")


@group("python -m metaug_release")
def main() -> None:
    """Release and record tooling: evaluate encoders, record campaign legs and study rows,
    write model-card files and the generated sections of the docs, reproduce card numbers."""


# ---------------------------------------------------------------------- evaluate
@main.command()
@click.option("--model", default=None, help="Model folder, alias or Hub id to evaluate.")
@click.option("--random-init", type=float, default=None, metavar="WIDTH",
              help="Evaluate an untrained alexnet32 (views l, ab, ori) of this width instead (the random-init floor).")
@click.option("--seed", default=EvalSettings.seed, show_default=True, type=int, help="Torch seed of --random-init.")
@click.option("--data", type=_existing_dir, required=True,
              help="CIFAR-10 folder with train/<class>/*.jpg and test/<class>/*.jpg (the benchmarks/*.sh scripts "
                   "extract ../shared/data/cifar10-jpeg.tar.gz to /tmp/cifar/cifar10).")
@output_option("Folder for the feature folders (train_LAYER, test_LAYER; metaug-eval reads them).",
               required=True, legacy_options=("--out",))
@_report_opt
@click.option("--layers", default=",".join(EvalSettings.layers), show_default=True, help="Comma-separated feature layers.")
@click.option("--per-class-train", type=click.IntRange(min=1), default=None, help="Subset: first N train images per class.")
@click.option("--per-class-test", type=click.IntRange(min=1), default=None, help="Subset: first M test images per class.")
@threads_option("Torch threads (1 is best when other jobs share the cores).", default=EvalSettings.threads)
@click.option("--batch-size", type=click.IntRange(min=1), default=EvalSettings.batch_size, show_default=True)
@click.option("--no-probe", is_flag=True, help="Skip the fast linear probe.")
@click.option("--no-cluster", is_flag=True, help="Skip k-means.")
@click.option("--reuse", is_flag=True, help="Skip extraction when the feature folders exist.")
@quiet_option("Print only the result table.")
@handle_errors()
def evaluate(model, random_init, seed, data, output, report, layers, per_class_train, per_class_test, threads,
             batch_size, no_probe, no_cluster, reuse, quiet):
    """Weighted k-NN (k 200 and 20, T 0.07), fast linear probe and k-means of an encoder's conv and
    fc features on CIFAR-10, as one metaug-eval report (the evaluation behind cards and records)."""
    from metaug_features.evaluation import format_table
    from metaug_release.encoder_eval import run_evaluation

    settings = EvalSettings(data=data, output=output, model=model, random_init=random_init, seed=seed,
                            layers=tuple(x for x in layers.split(",") if x), per_class_train=per_class_train,
                            per_class_test=per_class_test, threads=threads, batch_size=batch_size,
                            probe=not no_probe, cluster=not no_cluster, reuse=reuse, quiet=quiet)
    doc = run_evaluation(settings, report, log=(lambda s: None) if quiet else (lambda s: click.echo(s, err=True)))
    click.echo(format_table(doc))
    echo_written([report] if report is not None else [], quiet)


# ---------------------------------------------------------------------- first-release cards
@main.command()
@click.option("--metaug-eval", type=_existing_file, required=True, help="Evaluation report of the MetAug run.")
@click.option("--cmc-eval", type=_existing_file, required=True, help="Evaluation report of the CMC run.")
@click.option("--floor-eval", type=_existing_file, required=True, help="Evaluation report of the random-init floor.")
@click.option("--metaug-run", type=_existing_dir, required=True, help="The MetAug run folder (log.jsonl, config.json).")
@click.option("--cmc-run", type=_existing_dir, required=True, help="The CMC run folder.")
@click.option("--recipe", type=_existing_file, required=True, help="The released run's recipe file.")
@click.option("--hardware", default=None, help="Hardware line of the cards (default: the first release's).")
@output_option("Folder for card-conv.json, card-fc.json and summary.md.", required=True, legacy_options=("--out",))
@handle_errors()
def cards(metaug_eval, cmc_eval, floor_eval, metaug_run, cmc_run, recipe, hardware, output):
    """Card-metrics files of a release made from a MetAug run, its CMC baseline at equal budget
    and the random-init floor (metaug-export --card-metrics renders them)."""
    from metaug_release.cards import FirstReleaseInputs, first_release_cards

    inputs = FirstReleaseInputs(metaug_eval, cmc_eval, floor_eval, metaug_run, cmc_run, recipe,
                                **({"hardware": hardware} if hardware else {}))
    echo_written(first_release_cards(inputs, output))


# ---------------------------------------------------------------------- reproduce
@main.command()
@click.argument("folders", nargs=-1, required=True, type=_existing_dir)
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="CIFAR-10 folder (train/, test/) or .tar.gz.")
@click.option("--tolerance", default=TOLERANCE, show_default=True, type=float, help="Allowed |measured - card| in points.")
@output_option("Work folder for the features (and the extracted archive); default a temporary folder.",
               legacy_options=("--work-dir",))
@click.option("--batch-size", default=EvalSettings.batch_size, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default=None, type=click.IntRange(min=0), help="Decode workers (0 = in-process).")
@device_option()
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the rows as JSON here.")
@handle_errors()
def reproduce(folders, data, tolerance, output, batch_size, workers, device, report):
    """Re-measure the weighted k-NN numbers each FOLDER's card claims; a difference above
    --tolerance is a failed check (exit 2)."""
    from metaug_features.errors import MetAugError
    from metaug_release.reproduce import failures, format_rows, reproduce_folders

    rows = reproduce_folders(list(folders), data, output, tolerance, report, batch_size=batch_size, workers=workers,
                             device=device, progress=sys.stderr.isatty())
    for line in format_rows(rows, tolerance):
        click.echo(line)
    echo_written([report] if report is not None else [])
    failed = failures(rows, tolerance)
    if failed:
        raise MetAugError(failed)


# ---------------------------------------------------------------------- campaign
@main.group(cls=Group)
def campaign() -> None:
    """The CPU training campaign's record (benchmarks/campaign.jsonl, CAMPAIGN.md, campaign.png,
    the release cards, RESULTS.md's campaign sections and the README's released-models section)."""


@campaign.command(name="row")
@_campaign_opt
@click.option("--leg", type=click.IntRange(min=1), required=True, help="The leg within the campaign.")
@click.option("--eval", "eval_path", type=_existing_file, required=True,
              help="python -m metaug_release evaluate report of the leg's encoder.")
@click.option("--run", "run_dir", type=_existing_dir, default=None,
              help="The run folder whose log.jsonl gives the minutes (default: the campaign's run/full when it is "
                   "on this machine, else its committed log; campaign 2's leg 1 is the recipe study's run).")
@click.option("--released", is_flag=True, help="Mark the row as re-released.")
@handle_errors()
def campaign_row(campaign_no, leg, eval_path, run_dir, released):
    """Append (or replace) the leg's row in campaign.jsonl; rewrite the campaign's tables (CAMPAIGN.md;
    RESULTS.md for campaign 2 on) and campaign.png."""
    from metaug_release import campaign as c

    row = c.record_row(leg, eval_path, run_dir, released, campaign=campaign_no)
    click.echo(json.dumps(row))
    echo_written([c.JSONL, c.DOC, c.PNG])


@campaign.command(name="paths")
@_campaign_opt
@click.option("--leg", type=click.IntRange(min=1), default=1, show_default=True)
@handle_errors()
def campaign_paths(campaign_no, leg):
    """Print the campaign's paths as shell assignments (benchmarks/campaign_leg.sh evaluates them):
    RECIPE, RUN (the trainer's folder), STATE, COMMITTED (where log and config are committed),
    OUTDIR (records), EVAL (the leg's evaluation report)."""
    from metaug_release.campaign import get_campaign
    from metaug_release.paths import repo_relative

    c = get_campaign(campaign_no)
    for name, path in (("RECIPE", c.recipe), ("RUN", c.full), ("STATE", c.state), ("COMMITTED", c.run_dir),
                       ("OUTDIR", c.out), ("EVAL", c.eval_path(leg))):
        click.echo(f"{name}={repo_relative(path)}")


@campaign.command(name="plot")
@_campaign_opt
@handle_errors()
def campaign_plot(campaign_no):
    """Redraw campaign.png from campaign.jsonl (every campaign's rows) and rewrite the campaign's tables."""
    from metaug_release.campaign import get_campaign, redraw, write_tables

    get_campaign(campaign_no)
    echo_written([*write_tables(campaign_no), redraw()])


@campaign.command(name="cards")
@_campaign_opt
@click.option("--leg", type=click.IntRange(min=1), required=True)
@output_option("Folder for card-conv.json, card-fc.json and summary.md (default: the campaign's records folder, "
               "benchmarks/campaign or benchmarks/campaign/c2).", legacy_options=("--out",))
@handle_errors()
def campaign_cards(campaign_no, leg, output):
    """Card-metrics files of the release made from the leg's row (with the meta-diagnostics section when
    the campaign has its record), and RESULTS.md's released-state section when the campaign made the
    default pair hub/cifar10-{conv,fc}."""
    from metaug_release.campaign_cards import cards_for_leg

    echo_written(cards_for_leg(leg, output, campaign=campaign_no))


@campaign.command(name="readme")
@_campaign_opt
@click.option("--leg", type=click.IntRange(min=1), default=None,
              help="The released leg (default: the campaign's last released leg).")
@handle_errors()
def campaign_readme(campaign_no, leg):
    """Rewrite the README's released-models section (after the release export): the campaign's pair
    from the leg's row, and every other shipped pair from its campaign's last released row."""
    from metaug_release.readme import write_readme

    echo_written([write_readme(leg, campaign=campaign_no)])


@campaign.command(name="final")
@_campaign_opt
@click.option("--leg", type=click.IntRange(min=1), required=True)
@click.option("--paper-probe", type=_existing_file, nargs=2, required=True, metavar="CONV_REPORT FC_REPORT",
              help="metaug-eval paper-probe --report files of conv and fc.")
@handle_errors()
def campaign_final(campaign_no, leg, paper_probe):
    """The last leg: evaluation-only row, plot, cards with the paper probe, RESULTS.md's final
    table (then `campaign recard` and `campaign readme`)."""
    from metaug_release import campaign as c
    from metaug_release.campaign_final import record_final
    from metaug_release.paths import RESULTS

    click.echo(json.dumps(record_final(leg, *paper_probe, campaign=campaign_no)))
    echo_written([c.JSONL, c.DOC, c.PNG, RESULTS])


@campaign.command(name="recard")
@_campaign_opt
@click.option("--hub", type=_existing_dir, default=None,
              help="Folder holding the campaign's shipped folders (default: hub/).")
@handle_errors()
def campaign_recard(campaign_no, hub):
    """Re-render the campaign's shipped cards from its card files: campaign 1 (MetAug)
    hub/cifar10-metaug-{conv,fc}, campaign 2 (MetAug (only OUCL)) hub/cifar10-{conv,fc}. No
    checkpoint needed; the weights are not touched."""
    from metaug_release.campaign_cards import recard_shipped

    echo_written(recard_shipped(campaign_no, hub or HUB))


# ---------------------------------------------------------------------- re-release decisions
@main.group(name="current-release", cls=Group)
def current_release() -> None:
    """benchmarks/current_release.json: the record the shipped default folders come from, and the
    decision whether a new evaluation replaces it (benchmarks/campaign_leg.sh, benchmarks/release.sh)."""


@current_release.command(name="beats")
@click.argument("evaluation", type=_existing_file)
@click.option("--current", type=_existing_file, default=CURRENT_RELEASE,
              show_default="benchmarks/current_release.json",
              help="The current-release record naming the evaluation to beat.")
@handle_errors()
def current_release_beats(evaluation, current):
    """Print "yes" when EVALUATION beats the current release (weighted k-NN k=200 and fast linear
    probe on conv both strictly higher), else "no"; the numbers go to stderr."""
    from metaug_release.release_record import beats_current

    comparison = beats_current(evaluation, current)
    for line in comparison.lines():
        click.echo(line, err=True)
    click.echo("yes" if comparison.beats else "no")


@current_release.command(name="write")
@click.option("--record", type=_existing_dir, required=True, help="The record folder (card-*.json, reproduce.json).")
@click.option("--evaluation", type=_existing_file, required=True, help="The evaluation report of the shipped weights.")
@click.option("--recipe", type=_existing_file, required=True, help="The recipe the weights were trained with.")
@click.option("--evaluated-folder", type=_existing_dir, default=HUB / "cifar10-fc",
              show_default="hub/cifar10-fc",
              help="The shipped folder that evaluation measured.")
@handle_errors()
def current_release_write(record, evaluation, recipe, evaluated_folder):
    """Point benchmarks/current_release.json at a new release's records (keeps its _comment)."""
    from metaug_release.release_record import write_current_release

    echo_written([write_current_release(record, evaluation, recipe, evaluated_folder)])


# ---------------------------------------------------------------------- recipe study
@main.group(cls=Group)
def study() -> None:
    """The recipe study (#34): benchmarks/recipe_study.jsonl, RESULTS.md's table, recipe_study.png."""


@study.command(name="row")
@click.option("--name", required=True, help="The candidate's name (a row per name).")
@click.option("--recipe", type=_existing_file, required=True)
@click.option("--eval", "eval_path", type=_existing_file, required=True,
              help="python -m metaug_release evaluate report of the final weights.")
@click.option("--point", "points", type=_existing_file, multiple=True,
              help="Report of an intermediate checkpoint (k-NN); repeatable.")
@handle_errors()
def study_row(name, recipe, eval_path, points):
    """Append or replace a candidate's row, then rewrite the table and the plot."""
    from metaug_release import study as s

    click.echo(json.dumps(s.record_row(name, recipe, eval_path, list(points)), indent=2))
    echo_written([s.JSONL, s.RESULTS, s.PNG])


@study.command(name="results")
@handle_errors()
def study_results():
    """RESULTS.md's "Recipe study" section and benchmarks/recipe_study.png from the rows."""
    from metaug_release.study import write_results

    echo_written(write_results())


# ---------------------------------------------------------------------- view generators
@main.command(name="view-generators")
@click.argument("tag")
@click.option("--no-write", is_flag=True, help="Print the section only.")
@click.option("--machine", default=None, help="Where the rows were trained (kept in summary.json).")
@handle_errors()
def view_generators(tag, no_write, machine):
    """The IDAA / A2 comparison table of benchmarks/view_generators/TAG/ (summary.json and the
    RESULTS.md section)."""
    from metaug_release.view_generators import write_table

    text, written = write_table(tag, machine, write=not no_write)
    click.echo(text)
    echo_written(written)


@main.command(name="view-generators-budget")
@click.argument("probe_dir", type=_existing_dir)
@click.argument("rows", nargs=-1, required=True)
@click.option("--limit-s", type=float, required=True, help="The whole run's wall-clock limit, seconds.")
@click.option("--spent-s", type=float, required=True, help="Seconds already spent (VAE, probe).")
@click.option("--images", type=click.IntRange(min=0), default=0, show_default=True,
              help="Training images per epoch (the run's data.limit; 0: all 50,000 CIFAR-10 train images).")
@handle_errors()
def view_generators_budget(probe_dir, rows, limit_s, spent_s, images):
    """Print the epochs every ROW can train in the time left, from the speed its probe run in
    PROBE_DIR/ROW/log.jsonl measured (benchmarks/view_generators_train.sh step 2); rates go to stderr."""
    from metaug_release.view_generator_budget import budget_from_probe

    epochs, rates = budget_from_probe(probe_dir, list(rows), limit_s, spent_s, images)
    click.echo(json.dumps(rates), err=True)
    click.echo(epochs)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="python -m metaug_release")
