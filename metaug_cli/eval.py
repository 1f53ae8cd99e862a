"""``metaug-eval``: evaluate frozen features written by ``metaug-extract``.

Subcommands (each prints a table on stdout and, with ``--report FILE``, writes a JSON report):

    metaug-eval knn     --train DIR --test DIR [--k K,K...] [--temperature T]
    metaug-eval probe   --train DIR --test DIR [--c-grid C,C...] [--val-fraction F]
    metaug-eval cluster --features DIR [--n-clusters K] [--restarts R]
    metaug-eval plot    --features DIR --output DIR [--method tsne|umap|auto] [--second-view DIR]
    metaug-eval all     --train DIR --test DIR [--output DIR]         (knn + probe + cluster [+ plots])
    metaug-eval paper-probe --model REF --train-images DIR --test-images DIR [--epochs E]

DIR is a feature folder (features + manifest.csv + extract.json); labels come from the
manifest (the images' parent folder names). Only ``paper-probe`` loads a network: it is the
paper's protocol, which trains a linear layer on augmented images through the frozen encoder.

Every option's default is the field of the same name of the library's settings dataclass
(:class:`~metaug_features.evaluation.KNNConfig`, ``ProbeConfig``, ``ClusterConfig``,
``PlotConfig``, ``PaperProbeConfig``; tests/cli/test_click_defaults.py compares them). Each
subcommand parses, calls one function of :mod:`metaug_features.evaluation.folders` and prints.
Exit codes follow the convention of every metaug command (``metaug_cli/_common.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from metaug_features.evaluation import (
    ClusterConfig,
    FolderEvaluation,
    KNNConfig,
    PlotConfig,
    ProbeConfig,
)
from metaug_features.evaluation.paper_probe import PaperProbeConfig

from ._common import (
    device_option,
    echo_written,
    group,
    handle_errors,
    output_option,
    quiet_option,
    threads_option,
)


def _csv(values: Sequence[Any]) -> str:
    """A tuple default as the comma-separated text the option parses (``(200, 20)`` -> ``"200,20"``)."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _list_of(kind: Callable[[str], Any], what: str) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """A click callback: comma-separated ``kind`` values -> a tuple (None stays None)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
        if value is None:
            return None
        try:
            out = tuple(kind(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"expected comma-separated {what}, got {value!r}") from None
        if not out:
            raise click.BadParameter("give at least one value")
        return out

    return parse


_int_list = _list_of(int, "integers")
_float_list = _list_of(float, "numbers")

_train_opt = click.option("--train", "train_dir", type=click.Path(path_type=Path), required=True,
                          help="Feature folder of the train split (metaug-extract output).")
_test_opt = click.option("--test", "test_dir", type=click.Path(path_type=Path), required=True,
                         help="Feature folder of the test split.")
_features_opt = click.option("--features", "features_dir", type=click.Path(path_type=Path), required=True,
                             help="Feature folder (labels from its manifest).")
_report_opt = click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="Write the JSON report (metrics, protocol, parameters, feature hashes) here.")
_quiet_opt = quiet_option("No step lines, progress bars or 'wrote' lines: print only the result table.")
_threads_opt = threads_option("CPU threads of every step. Default: each step's own (faiss: all cores; the logistic "
                              "regression and t-SNE: 1, much faster than spinning OpenMP/BLAS workers on a busy "
                              "machine; the paper probe: torch's).")


def _knn_options(f):
    f = click.option("--k", "ks", default=_csv(KNNConfig.ks), show_default=True, callback=_int_list,
                     help="Neighbour counts, comma-separated.")(f)
    f = click.option("--temperature", default=KNNConfig.temperature, show_default=True, type=float,
                     help="T in exp(sim / T).")(f)
    f = click.option("--chunk-size", default=KNNConfig.chunk_size, show_default=True, type=int,
                     help="Test rows per faiss search (bounds memory).")(f)
    return f


def _probe_options(f):
    f = click.option("--c-grid", "cs", default=_csv(ProbeConfig.cs), show_default=True, callback=_float_list,
                     help="Inverse regularisation strengths to choose from (on held-out train rows).")(f)
    f = click.option("--val-fraction", default=ProbeConfig.val_fraction, show_default=True, type=float,
                     help="Share of the train split held out to choose C.")(f)
    f = click.option("--selection-max-train", default=ProbeConfig.selection_max_train, show_default=True, type=int,
                     help="Fit at most this many rows while choosing C (0 = all).")(f)
    f = click.option("--max-iter", default=ProbeConfig.max_iter, show_default=True, type=int,
                     help="lbfgs iteration limit.")(f)
    f = click.option("--seed", default=ProbeConfig.seed, show_default=True, type=int,
                     help="Seeds the held-out split (and, in 'all', the plots).")(f)
    return f


def _cluster_options(f):
    f = click.option("--n-clusters", type=int, default=ClusterConfig.n_clusters,
                     help="k of k-means (default: number of classes).")(f)
    f = click.option("--restarts", default=ClusterConfig.restarts, show_default=True, type=int,
                     help="Seeded k-means runs; the lowest objective wins.")(f)
    f = click.option("--niter", default=ClusterConfig.niter, show_default=True, type=int,
                     help="Lloyd iterations per run.")(f)
    f = click.option("--cluster-seed", default=ClusterConfig.seed, show_default=True, type=int,
                     help="Seed of the first run.")(f)
    return f


_plot_method_opt = click.option("--method", type=click.Choice(["tsne", "umap", "auto"]), default=PlotConfig.method,
                                show_default=True, help="2-D embedding (umap needs umap-learn).")
_max_points_opt = click.option("--max-points", default=PlotConfig.max_points, show_default=True, type=int,
                               help="Embed at most this many rows (seeded subsample; 0 = all).")


def _log(quiet: bool) -> Callable[[str], None] | None:
    """Where step lines go: stderr, or nowhere with --quiet."""
    return None if quiet else (lambda line: click.echo(f"[metaug-eval] {line}", err=True))


def _print(result: FolderEvaluation, quiet: bool) -> None:
    """The table on stdout, then (unless quiet) every file written on stderr."""
    from metaug_features.evaluation import format_table

    click.echo(format_table(result.report))
    echo_written(result.written, quiet)


@group("metaug-eval")
def main() -> None:
    """Evaluate frozen features: weighted k-NN, linear probes, clustering, plots.

    Every number is reported with the protocol that produced it.
    """


@main.command()
@_train_opt
@_test_opt
@_knn_options
@_report_opt
@_threads_opt
@_quiet_opt
@handle_errors()
def knn(train_dir, test_dir, ks, temperature, chunk_size, report, threads, quiet):
    """Weighted k-NN (InstDisc/DINO): cosine similarity, votes exp(sim/T)."""
    from metaug_features.evaluation import evaluate_split_pair

    cfg = KNNConfig(ks=ks, temperature=temperature, chunk_size=chunk_size)
    _print(evaluate_split_pair(train_dir, test_dir, knn=cfg, threads=threads, report_path=report, log=_log(quiet)),
           quiet)


@main.command()
@_train_opt
@_test_opt
@_probe_options
@_report_opt
@_threads_opt
@_quiet_opt
@handle_errors()
def probe(train_dir, test_dir, cs, val_fraction, selection_max_train, max_iter, seed, report, threads, quiet):
    """Fast linear probe (features-once logistic regression; not the paper's protocol)."""
    from metaug_features.evaluation import evaluate_split_pair

    cfg = ProbeConfig(cs=cs, val_fraction=val_fraction, selection_max_train=selection_max_train, max_iter=max_iter,
                      seed=seed)
    _print(evaluate_split_pair(train_dir, test_dir, probe=cfg, threads=threads, report_path=report, log=_log(quiet)),
           quiet)


@main.command()
@_features_opt
@_cluster_options
@_report_opt
@_threads_opt
@_quiet_opt
@handle_errors()
def cluster(features_dir, n_clusters, restarts, niter, cluster_seed, report, threads, quiet):
    """k-means (faiss) scored by NMI, ARI and Hungarian accuracy."""
    from metaug_features.evaluation import evaluate_folder

    cfg = ClusterConfig(n_clusters=n_clusters, restarts=restarts, niter=niter, seed=cluster_seed)
    _print(evaluate_folder(features_dir, cluster=cfg, threads=threads, report_path=report, log=_log(quiet)), quiet)


@main.command()
@_features_opt
@output_option("Folder for embedding.png and similarity_hist.png.", required=True, legacy_options=("--out-dir",))
@click.option("--second-view", "second_dir", type=click.Path(path_type=Path), default=None,
              help="Feature folder of the same images under another view/augmentation: positives are "
                   "then (image, same image) pairs, as in the paper's Figure 2; otherwise same-class pairs.")
@_plot_method_opt
@_max_points_opt
@click.option("--seed", default=PlotConfig.seed, show_default=True, type=int,
              help="Seeds the subsample, the embedding and the pairs.")
@_report_opt
@_threads_opt
@_quiet_opt
@handle_errors()
def plot(features_dir, output, second_dir, method, max_points, seed, report, threads, quiet):
    """t-SNE/UMAP scatter by label and the positive-vs-negative similarity histogram (PNG);
    prints the path of each file it writes."""
    from metaug_features.evaluation import evaluate_folder

    cfg = PlotConfig(method=method, max_points=max_points, seed=seed)
    _print(evaluate_folder(features_dir, plots=cfg, plot_dir=output, second_view=second_dir, threads=threads,
                           report_path=report, log=_log(quiet)), quiet)


@main.command(name="all")
@_train_opt
@_test_opt
@_knn_options
@_probe_options
@_cluster_options
@output_option("Also draw the plots of the test split (embedding.png, similarity_hist.png) into this folder.",
               legacy_options=("--plots",))
@_plot_method_opt
@_max_points_opt
@_report_opt
@_threads_opt
@_quiet_opt
@handle_errors()
def all_(train_dir, test_dir, ks, temperature, chunk_size, cs, val_fraction, selection_max_train, max_iter,
         seed, n_clusters, restarts, niter, cluster_seed, output, method, max_points, report, threads, quiet):
    """k-NN, fast probe and clustering of the test split (and plots) in one report."""
    from metaug_features.evaluation import evaluate_split_pair

    result = evaluate_split_pair(
        train_dir, test_dir,
        knn=KNNConfig(ks=ks, temperature=temperature, chunk_size=chunk_size),
        probe=ProbeConfig(cs=cs, val_fraction=val_fraction, selection_max_train=selection_max_train,
                          max_iter=max_iter, seed=seed),
        cluster=ClusterConfig(n_clusters=n_clusters, restarts=restarts, niter=niter, seed=cluster_seed),
        plots=PlotConfig(method=method, max_points=max_points, seed=seed) if output is not None else None,
        plot_dir=output, threads=threads, report_path=report, log=_log(quiet))
    _print(result, quiet)


@main.command(name="paper-probe")
@click.option("--model", "model_ref", required=True, help="Model folder, alias or Hub id[@rev].")
@click.option("--train-images", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Image folder of the train split, one sub-folder per class.")
@click.option("--test-images", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Image folder of the test split, one sub-folder per class.")
@click.option("--layer", default=None, help="Feature layer (default: the model's).")
@click.option("--epochs", default=PaperProbeConfig.epochs, show_default=True, type=int)
@click.option("--lr", default=PaperProbeConfig.lr, show_default=True, type=float)
@click.option("--momentum", default=PaperProbeConfig.momentum, show_default=True, type=float)
@click.option("--weight-decay", default=PaperProbeConfig.weight_decay, show_default=True, type=float)
@click.option("--batch-size", default=PaperProbeConfig.batch_size, show_default=True, type=int)
@click.option("--milestones", default=_csv(PaperProbeConfig.milestones), show_default=True, callback=_int_list,
              help="Epochs after which the learning rate is multiplied by --gamma.")
@click.option("--gamma", default=PaperProbeConfig.gamma, show_default=True, type=float)
@click.option("--average-last", default=PaperProbeConfig.average_last, show_default=True, type=int,
              help="Average test top-1 over the last N epochs.")
@click.option("--seeds", default=_csv(PaperProbeConfig.seeds), show_default=True, callback=_int_list,
              help="One probe per seed; several give a mean and a 95% interval.")
@device_option()
@_report_opt
@_threads_opt
@_quiet_opt
@handle_errors()
def paper_probe(model_ref, train_images, test_images, layer, epochs, lr, momentum, weight_decay, batch_size,
                milestones, gamma, average_last, seeds, device, report, threads, quiet):
    """The paper's linear probe (docs/METHODS.md section 7): SGD on a linear layer over the frozen encoder,
    with train-time augmentation. Slow: every epoch runs the encoder on every train image."""
    from metaug_features.evaluation import paper_probe_folders

    cfg = PaperProbeConfig(epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay, batch_size=batch_size,
                           milestones=milestones, gamma=gamma, average_last=average_last, seeds=seeds)
    _print(paper_probe_folders(model_ref, train_images, test_images, config=cfg, layer=layer, device=device,
                               threads=threads, progress=not quiet and sys.stderr.isatty(), report_path=report),
           quiet)


if __name__ == "__main__":  # pragma: no cover
    main()
