"""``metaug-eval``: evaluate frozen features written by ``metaug-extract``.

Subcommands (each prints a table on stdout and, with ``--report FILE``, writes a JSON report):

    metaug-eval knn     --train DIR --test DIR [--k 200,20] [--temperature 0.07]
    metaug-eval probe   --train DIR --test DIR [--c-grid 0.0001,0.001,0.01,0.1,1] [--val-fraction 0.1]
    metaug-eval cluster --features DIR [--n-clusters K] [--restarts 5]
    metaug-eval plot    --features DIR --output DIR [--method tsne] [--second-view DIR]
    metaug-eval all     --train DIR --test DIR [--output DIR]         (knn + probe + cluster [+ plots])
    metaug-eval paper-probe --model REF --train-images DIR --test-images DIR [--epochs 60]

DIR is a feature folder (features + manifest.csv + extract.json); labels come from the
manifest (the images' parent folder names). Only ``paper-probe`` loads a network: it is the
paper's protocol, which trains a linear layer on augmented images through the frozen encoder.

Exit codes follow the convention of every metaug command (``metaug_cli/_common.py``): errors the user
can fix (bad folders, inconsistent arrays, ...) print one line and exit with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from metaug_features.errors import MetAugError

from ._common import device_option, echo_written, group, handle_errors, output_option


def _int_list(ctx, param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out:
        raise click.BadParameter("give at least one value")
    return out


def _float_list(ctx, param, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        out = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
    if not out:
        raise click.BadParameter("give at least one value")
    return out


def _load(folder: Path):
    from metaug_features.feature_files import read_feature_set

    return read_feature_set(folder)


def _inputs(**sets) -> dict[str, dict]:
    from metaug_features.evaluation import input_info

    return {name: input_info(fs.features, path=path, meta=fs.meta) for name, (path, fs) in sets.items()}


def _finish(entries: list[dict], inputs: dict[str, dict], report: Path | None, quiet: bool) -> None:
    from metaug_features.evaluation import build_report, format_table, write_report

    doc = build_report(entries, inputs)
    if report is not None:
        write_report(report, doc)
    click.echo(format_table(doc))
    if report is not None:
        echo_written([report], quiet)


_train_opt = click.option("--train", "train_dir", type=click.Path(path_type=Path), required=True,
                          help="Feature folder of the train split (metaug-extract output).")
_test_opt = click.option("--test", "test_dir", type=click.Path(path_type=Path), required=True,
                         help="Feature folder of the test split.")
_report_opt = click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="Write the JSON report (metrics, protocol, parameters, feature hashes) here.")
_quiet_opt = click.option("--quiet", "-q", is_flag=True, help="Print only the result table.")


def _knn_options(f):
    f = click.option("--k", "ks", default="200,20", show_default=True, callback=_int_list,
                     help="Neighbour counts, comma-separated.")(f)
    f = click.option("--temperature", default=0.07, show_default=True, type=float, help="T in exp(sim / T).")(f)
    f = click.option("--chunk-size", default=4096, show_default=True, type=int,
                     help="Test rows per faiss search (bounds memory).")(f)
    return f


def _probe_options(f):
    f = click.option("--c-grid", default="0.0001,0.001,0.01,0.1,1", show_default=True, callback=_float_list,
                     help="Inverse regularisation strengths to choose from (on held-out train rows).")(f)
    f = click.option("--val-fraction", default=0.1, show_default=True, type=float,
                     help="Share of the train split held out to choose C.")(f)
    f = click.option("--selection-max-train", default=10000, show_default=True, type=int,
                     help="Fit at most this many rows while choosing C (0 = all).")(f)
    f = click.option("--max-iter", default=300, show_default=True, type=int, help="lbfgs iteration limit.")(f)
    f = click.option("--seed", default=0, show_default=True, type=int, help="Seeds the held-out split.")(f)
    return f


def _cluster_options(f):
    f = click.option("--n-clusters", type=int, default=None, help="k of k-means (default: number of classes).")(f)
    f = click.option("--restarts", default=5, show_default=True, type=int,
                     help="Seeded k-means runs; the lowest objective wins.")(f)
    f = click.option("--niter", default=50, show_default=True, type=int, help="Lloyd iterations per run.")(f)
    f = click.option("--cluster-seed", default=0, show_default=True, type=int, help="Seed of the first run.")(f)
    return f


@group("metaug-eval")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for every step. Default: faiss uses all cores; the logistic regression "
                   "and t-SNE use 1, which is much faster than spinning OpenMP/BLAS workers on a busy "
                   "machine (see the library docstrings).")
@click.pass_context
def main(ctx: click.Context, threads: int | None) -> None:
    """Evaluate frozen features: weighted k-NN, linear probes, clustering, plots.

    Every number is reported with the protocol that produced it.
    """
    ctx.ensure_object(dict)
    ctx.obj["threads"] = threads


def _threads(default: int | None) -> int | None:
    """The --threads of the group, or ``default`` when it was not given."""
    ctx = click.get_current_context()
    t = (ctx.find_root().obj or {}).get("threads")
    return t if t is not None else default


def _run_knn(train, test, ks, temperature, chunk_size):
    from metaug_features.evaluation import knn_evaluate, report_entry

    return report_entry(knn_evaluate(train.features, train.labels, test.features, test.labels,
                                     ks=ks, temperature=temperature, chunk_size=chunk_size,
                                     threads=_threads(None)))


def _run_probe(train, test, c_grid, val_fraction, selection_max_train, max_iter, seed):
    from metaug_features.evaluation import fast_linear_probe, report_entry

    return report_entry(fast_linear_probe(train.features, train.labels, test.features, test.labels,
                                          cs=c_grid, val_fraction=val_fraction,
                                          selection_max_train=selection_max_train or None,
                                          max_iter=max_iter, seed=seed, threads=_threads(1)))


def _run_cluster(fs, n_clusters, restarts, niter, cluster_seed):
    from metaug_features.evaluation import cluster_evaluate, report_entry

    return report_entry(cluster_evaluate(fs.features, fs.labels, n_clusters=n_clusters, restarts=restarts,
                                         seed=cluster_seed, niter=niter, threads=_threads(None)))


@main.command()
@_train_opt
@_test_opt
@_knn_options
@_report_opt
@_quiet_opt
@handle_errors()
def knn(train_dir, test_dir, ks, temperature, chunk_size, report, quiet):
    """Weighted k-NN (InstDisc/DINO): cosine similarity, votes exp(sim/T)."""
    train, test = _load(train_dir), _load(test_dir)
    entry = _run_knn(train, test, ks, temperature, chunk_size)
    _finish([entry], _inputs(train=(train_dir, train), test=(test_dir, test)), report, quiet)


@main.command()
@_train_opt
@_test_opt
@_probe_options
@_report_opt
@_quiet_opt
@handle_errors()
def probe(train_dir, test_dir, c_grid, val_fraction, selection_max_train, max_iter, seed, report, quiet):
    """Fast linear probe (features-once logistic regression; not the paper's protocol)."""
    train, test = _load(train_dir), _load(test_dir)
    entry = _run_probe(train, test, c_grid, val_fraction, selection_max_train, max_iter, seed)
    _finish([entry], _inputs(train=(train_dir, train), test=(test_dir, test)), report, quiet)


@main.command()
@click.option("--features", "features_dir", type=click.Path(path_type=Path), required=True,
              help="Feature folder to cluster (labels from its manifest).")
@_cluster_options
@_report_opt
@_quiet_opt
@handle_errors()
def cluster(features_dir, n_clusters, restarts, niter, cluster_seed, report, quiet):
    """k-means (faiss) scored by NMI, ARI and Hungarian accuracy."""
    fs = _load(features_dir)
    entry = _run_cluster(fs, n_clusters, restarts, niter, cluster_seed)
    _finish([entry], _inputs(features=(features_dir, fs)), report, quiet)


def _make_plots(fs, out_dir: Path, method: str, max_points: int, seed: int, second=None, max_pairs: int = 200_000,
                quiet: bool = False):
    """Draw embedding.png and similarity_hist.png into ``out_dir``, print their paths (unless
    ``quiet``) and return the report entry."""
    from metaug_features.evaluation import pair_similarities, plot_embedding, plot_similarity_histogram

    out_dir.mkdir(parents=True, exist_ok=True)
    emb = plot_embedding(fs.features, fs.labels, out_dir / "embedding.png", method=method,
                         max_points=max_points or None, seed=seed, threads=_threads(1))
    if second is not None:
        if second.paths != fs.paths:
            raise MetAugError("--second-view folder must hold the same images in the same order (compare manifests)")
        pos, neg = pair_similarities(fs.features, second.features, max_pairs=max_pairs, seed=seed)
        kind = "instance pairs (same image, two views) vs different images"
    else:
        pos, neg = pair_similarities(fs.features, labels=fs.labels, max_pairs=max_pairs, seed=seed)
        kind = "same-class pairs vs different-class pairs"
    hist = plot_similarity_histogram(pos, neg, out_dir / "similarity_hist.png",
                                     title=f"Cosine similarity: {kind}")
    echo_written([emb["path"], hist["path"]], quiet)
    return {
        "name": "plots",
        "protocol": f"{emb['method']} embedding of L2-normalised features; histogram of {kind}",
        "params": {"embedding": emb, "histogram_path": hist["path"], "max_pairs": max_pairs, "seed": seed},
        "metrics": {"mean_sim_positive": hist["mean_positive"], "mean_sim_negative": hist["mean_negative"],
                    "hist_overlap": hist["overlap"]},
    }


_plot_method_opt = click.option("--method", type=click.Choice(["tsne", "umap", "auto"]), default="tsne",
                                show_default=True, help="2-D embedding (umap needs umap-learn).")
_max_points_opt = click.option("--max-points", default=5000, show_default=True, type=int,
                               help="Embed at most this many rows (seeded subsample; 0 = all).")


@main.command()
@click.option("--features", "features_dir", type=click.Path(path_type=Path), required=True,
              help="Feature folder to plot (labels from its manifest).")
@output_option("Folder for embedding.png and similarity_hist.png.", required=True, legacy_options=("--out-dir",))
@click.option("--second-view", "second_dir", type=click.Path(path_type=Path), default=None,
              help="Feature folder of the same images under another view/augmentation: positives are "
                   "then (image, same image) pairs, as in the paper's Figure 2; otherwise same-class pairs.")
@_plot_method_opt
@_max_points_opt
@click.option("--seed", default=0, show_default=True, type=int)
@_report_opt
@_quiet_opt
@handle_errors()
def plot(features_dir, output, second_dir, method, max_points, seed, report, quiet):
    """t-SNE/UMAP scatter by label and the positive-vs-negative similarity histogram (PNG);
    prints the path of each file it writes."""
    fs = _load(features_dir)
    second = _load(second_dir) if second_dir is not None else None
    entry = _make_plots(fs, output, method, max_points, seed, second, quiet=quiet)
    _finish([entry], _inputs(features=(features_dir, fs)), report, quiet)


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
@_quiet_opt
@handle_errors()
def all_(train_dir, test_dir, ks, temperature, chunk_size, c_grid, val_fraction, selection_max_train, max_iter,
         seed, n_clusters, restarts, niter, cluster_seed, output, method, max_points, report, quiet):
    """k-NN, fast probe and clustering of the test split (and plots) in one report."""
    train, test = _load(train_dir), _load(test_dir)
    steps = [
        ("knn", lambda: _run_knn(train, test, ks, temperature, chunk_size)),
        ("probe", lambda: _run_probe(train, test, c_grid, val_fraction, selection_max_train, max_iter, seed)),
        ("cluster", lambda: _run_cluster(test, n_clusters, restarts, niter, cluster_seed)),
    ]
    if output is not None:
        steps.append(("plots", lambda: _make_plots(test, output, method, max_points, seed, quiet=quiet)))
    entries = []
    for name, run in steps:
        if not quiet:
            click.echo(f"[metaug-eval] {name} ...", err=True)
        entries.append(run())
    _finish(entries, _inputs(train=(train_dir, train), test=(test_dir, test)), report, quiet)


@main.command(name="paper-probe")
@click.option("--model", "model_ref", required=True, help="Model folder, alias or Hub id[@rev].")
@click.option("--train-images", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Image folder of the train split, one sub-folder per class.")
@click.option("--test-images", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--layer", default=None, help="Feature layer (default: the model's).")
@click.option("--epochs", default=60, show_default=True, type=int)
@click.option("--lr", default=0.1, show_default=True, type=float)
@click.option("--momentum", default=0.9, show_default=True, type=float)
@click.option("--weight-decay", default=0.0, show_default=True, type=float)
@click.option("--batch-size", default=256, show_default=True, type=int)
@click.option("--milestones", default="30,40,50", show_default=True, callback=_int_list)
@click.option("--gamma", default=0.2, show_default=True, type=float)
@click.option("--average-last", default=1, show_default=True, type=int,
              help="Average test top-1 over the last N epochs.")
@click.option("--seeds", default="0", show_default=True, callback=_int_list)
@device_option()
@_report_opt
@_quiet_opt
@handle_errors()
def paper_probe(model_ref, train_images, test_images, layer, epochs, lr, momentum, weight_decay, batch_size,
                milestones, gamma, average_last, seeds, device, report, quiet):
    """The paper's linear probe (docs/METHODS.md section 7): SGD on a linear layer over the frozen encoder,
    with train-time augmentation. Slow: every epoch runs the encoder on every train image."""
    from metaug_features.evaluation import report_entry
    from metaug_features.evaluation.paper_probe import PaperProbeConfig, paper_linear_probe
    from metaug_features.file_list import collect_files
    from metaug_features import load_encoder

    enc = load_encoder(str(model_ref), device=device)
    splits = {}
    for name, folder in (("train", train_images), ("test", test_images)):
        files = [e for e in collect_files([folder]).entries if e.skip_reason is None]
        if not files:
            raise MetAugError(f"{folder}: no image files found")
        splits[name] = ([e.path for e in files], [e.label for e in files])
    cfg = PaperProbeConfig(epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay, batch_size=batch_size,
                           milestones=tuple(milestones), gamma=gamma, average_last=average_last, seeds=tuple(seeds))
    res = paper_linear_probe(enc, splits["train"][0], splits["train"][1], splits["test"][0], splits["test"][1],
                             layer=layer, config=cfg, progress=not quiet and sys.stderr.isatty())
    inputs = {"model": {"ref": str(model_ref), "config": enc.config.to_dict()},
              "train": {"path": str(train_images), "num_rows": len(splits["train"][0])},
              "test": {"path": str(test_images), "num_rows": len(splits["test"][0])}}
    _finish([report_entry(res)], inputs, report, quiet)


if __name__ == "__main__":  # pragma: no cover
    main()
