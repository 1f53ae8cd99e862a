"""``metaug-extract``: frozen features for folders of images (parses options, calls
:func:`metaug_features.extract.extract_features` or :func:`~metaug_features.merge.merge_shards`)."""

from __future__ import annotations

from pathlib import Path

import click

from metaug_features.errors import MetAugError
from metaug_features.extract import ExtractSummary, default_workers, extract_features
from metaug_features.feature_formats import FEATURE_FORMATS
from metaug_features.merge import merge_shards
from metaug_features.preprocess import DEFAULT_MAX_PIXELS

from ._common import (
    command,
    device_option,
    handle_errors,
    normalised,
    output_option,
    quiet_option,
    signature_defaults,
)

#: The one source of the options' defaults: extract_features' keyword arguments.
DEFAULTS = signature_defaults(extract_features)

HELP = f"""Extract frozen features of every image under PATH... into a feature folder.

\b
Files: folders are walked recursively; rows follow the relative paths (relative to the
deepest folder containing all PATHs, '/'-separated) sorted by their bytes. The label of a
row is its parent folder name ("" for files directly in that root). Hidden names (starting
with '.') are ignored; files found in folders without an image extension (jpg jpeg png ppm
bmp pgm tif tiff webp gif) are not decoded but listed in skipped.csv; a file named on the
command line is always decoded.

\b
Output (--output, default ./features):
  features.npy | features.safetensors   float32 [N, D]
  features.parquet  (--format parquet) one table: path, label,
                  feature (fixed-size list of float32 [D]); needs pyarrow
  manifest.csv    row,path,label
  skipped.csv     path,reason  (unreadable, truncated, empty, non-image, too large, ...)
  extract.json    model, config, layer, file-list hash, shard, arguments
Files are written atomically; extract.json last (a folder with it is complete).

\b
Bad files are skipped, never fatal, and listed in skipped.csv with a reason:
  empty file | truncated or corrupt image | not a readable image (e.g. text
  named .jpg) | decompression bomb (too many pixels; limit {DEFAULT_MAX_PIXELS:,}) |
  permission denied | cannot read file | not a regular file (FIFO, device) |
  not an image file extension | decode time limit exceeded (N s; --decode-time-limit) |
  decoder crashed (SIGSEGV, ...; the worker process is replaced, the run goes on) |
  float image out of range (a float TIFF with values outside 0..255, NaN or inf).
Grayscale, palette, RGBA/LA (composited on white), CMYK, 16-bit and EXIF-rotated
images are converted to upright 8-bit RGB; a 32-bit float greyscale TIFF is read as
0..1 when all its values lie in [0, 1] (scaled by 255), else as 0..255 (float RGB TIFFs:
PIL cannot read them, "not a readable image"). Non-UTF-8 file names are kept byte-exact
(CSV files use UTF-8 with surrogate escapes). Errors (exit 2, no output): a missing
PATH, an empty folder, no readable image, an output folder that is not writable or
holds another extraction, an unknown --layer, --strict with any skipped file.

\b
Resume: a run that is killed keeps its finished chunks in OUTPUT/.partial/; the same
command again continues where it stopped and ends with output identical to an
uninterrupted run. Another command into the same folder is refused (use --overwrite or a
new --output).

\b
Scale-out: --shard I/N (I = 0..N-1) computes a contiguous 1/N of the sorted file list
(shard sizes differ by at most one file; with N above the number of files some shards are
empty, written as valid folders of 0 rows that merge like the others), e.g.
in a Slurm array:  metaug-extract --model M --shard $SLURM_ARRAY_TASK_ID/8 --output out/s$SLURM_ARRAY_TASK_ID data/
then join:         metaug-extract --merge --output out/all out/s*
With --merge, PATH... are the shard output folders and --model is not used; the merged
folder is byte-identical to a single run's.
"""


def _report(summary: ExtractSummary, quiet: bool) -> None:
    """Print what the extraction wrote (normalised paths) and the first skipped files."""
    if quiet:
        return
    output = normalised(summary.output)
    if summary.already_complete:
        click.echo(f"{output}: already complete ({summary.num_rows} rows); nothing to do")
        return
    resumed = f", {summary.chunks_resumed} of {summary.chunks_total} chunks resumed" if summary.chunks_resumed else ""
    click.echo(
        f"wrote {summary.num_rows} x {summary.dim} features to {output} "
        f"({summary.num_skipped} skipped{resumed}; {summary.seconds:.1f} s)"
    )
    if summary.skipped:
        for path, reason in summary.skipped[:10]:
            click.echo(f"  skipped {path}: {reason}", err=True)
        more = len(summary.skipped) - 10
        click.echo(f"  {'... and ' + str(more) + ' more; ' if more > 0 else ''}all listed in {output / 'skipped.csv'}", err=True)


class FormatChoice(click.Choice):
    """``--format``: the keys of ``FEATURE_FORMATS``, read when the command runs, so a row added to
    the table is a choice without touching this file."""

    def __init__(self) -> None:
        super().__init__(tuple(FEATURE_FORMATS))

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(FEATURE_FORMATS)

    @choices.setter
    def choices(self, value: object) -> None:  # click's __init__ assigns; the table is the source
        pass


class FormatOption(click.Option):
    """``--format``, whose help lists the rows of ``FEATURE_FORMATS`` when it is shown."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        rows = "; ".join(f"{name}: {row.file}, {row.summary}" for name, row in FEATURE_FORMATS.items())
        self.help = f"Features file ({rows})."
        return super().get_help_record(ctx)


def _resume_hint(output: Path, **_: object) -> str:
    """What an interrupted extraction prints (it resumes)."""
    return f"interrupted; finished chunks are kept in {output / '.partial'}, run the same command again to resume"


@command("metaug-extract", help=HELP)
@click.argument("paths", nargs=-1, required=True)
@click.option("--model", "model_ref", metavar="REF", help="Model folder, alias or Hub id[@revision] (not with --merge).")
@click.option("--layer", default=DEFAULTS["layer"], help="Feature layer (default: the model's default layer).")
@click.option("--batch-size", default=DEFAULTS["batch_size"], show_default=True, type=int, help="Images per forward pass.")
@click.option("--workers", default=DEFAULTS["workers"], type=int,
              help=f"Decoding worker processes; 0 decodes in the main process. [default: min(4, cores) = {default_workers()}]")
@device_option()
@output_option("Feature folder to write.", default="features")
@click.option("--format", "fmt", cls=FormatOption, default=DEFAULTS["fmt"], show_default=True, type=FormatChoice())
@click.option("--strict", is_flag=True, default=DEFAULTS["strict"], help="Fail (exit 2, no output) if any file would be skipped.")
@quiet_option("No progress bar and no summary.")
@click.option("--overwrite", is_flag=True, default=DEFAULTS["overwrite"],
              help="Replace an output folder that holds a different extraction.")
@click.option("--shard", default=DEFAULTS["shard"], metavar="I/N", help="Compute only shard I of N (0 <= I < N) of the sorted file list.")
@click.option("--merge", is_flag=True, help="Join shard output folders (given as PATH...) into --output.")
@click.option("--decode-time-limit", default=DEFAULTS["decode_time_limit"], show_default=True, type=float, metavar="SECONDS",
              help="Skip a file whose decoding takes longer (its worker is killed); 0 = no limit. Needs --workers >= 1.")
@click.option("--chunk-size", default=DEFAULTS["chunk_size"], type=int, hidden=True, help="Files per resume chunk (advanced).")
@handle_errors(on_interrupt=_resume_hint)
def main(paths: tuple[str, ...], model_ref: str | None, layer: str | None, batch_size: int, workers: int | None,
         device: str, output: Path, fmt: str, strict: bool, quiet: bool, overwrite: bool, shard: str | None, merge: bool,
         decode_time_limit: float, chunk_size: int) -> None:
    """Parse the options, extract (or merge shards) and print the summary."""
    if merge:
        if model_ref or shard:
            raise MetAugError("--merge joins finished shard folders; do not pass --model or --shard with it")
        summary = merge_shards(paths, output, fmt=fmt, overwrite=overwrite)
    else:
        if not model_ref:
            raise MetAugError("--model is required (a model folder, alias or Hub id)")
        summary = extract_features(
            model_ref, paths, output, layer=layer, batch_size=batch_size, workers=workers, device=device,
            fmt=fmt, strict=strict, shard=shard, chunk_size=chunk_size, overwrite=overwrite, progress=not quiet,
            decode_time_limit=decode_time_limit or None,
        )
    _report(summary, quiet)


if __name__ == "__main__":  # pragma: no cover
    main()
