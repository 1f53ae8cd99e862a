"""``metaug-meta-diagnostics``: plot a MetAug run's meta-step diagnostics over training and judge them.

    metaug-meta-diagnostics runs/cifar10-metaug
    metaug-meta-diagnostics runs/cifar10-metaug/log.jsonl -o diag.png --last 50 --json diag.json

Only parses options and calls :func:`metaug_training.meta_diagnostics_report.make_report`.
"""

from __future__ import annotations

from pathlib import Path

import click

from ._common import command, echo_written, handle_errors, output_option, quiet_option


@command("metaug-meta-diagnostics")
@click.argument("source", metavar="RUN_DIR_OR_LOG", type=click.Path())
@output_option("PNG to draw [default: meta-diagnostics.png beside the log].", file=True)
@click.option("--last", type=click.IntRange(min=1), default=None, metavar="N",
              help="Summarise the last N meta steps [default: the last 10%, at least 1].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the summary and the verdict as JSON here.")
@quiet_option("No warnings, no summary and no 'wrote' lines: print only the verdict.")
@handle_errors()
def main(source: str, output: Path | None, last: int | None, json_path: Path | None, quiet: bool) -> None:
    """Read the meta-step diagnostics of a method=metaug run (RUN_DIR_OR_LOG: the run folder or
    its log.jsonl), draw them against the epoch, print their means over the last meta steps and a
    verdict: is the second-order path inert, are the MAG outputs near-copies of the features
    (collapse) or harder views? Thresholds: docs in metaug_training/meta_diagnostics_report.py."""
    from metaug_training.meta_diagnostics_report import format_summary, make_report

    report = make_report(source, output, last=last, json_path=json_path)
    if not quiet:
        for note in report.notes:
            click.echo(f"warning: {note}", err=True)
        click.echo(format_summary(report.summary))
    click.echo(report.verdict)
    echo_written([p for p in (report.png, report.json_path) if p is not None], quiet=quiet)


if __name__ == "__main__":
    main()
