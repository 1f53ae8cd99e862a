"""Folders in, one evaluation report out: what ``metaug-eval`` runs, callable from Python.

Each function reads the folders (feature folders written by ``metaug-extract``, or image folders
for the paper's probe), runs the evaluations it is given a config for (``None`` skips one),
describes its inputs (path, SHA-256 of the features file) and returns the report document
(:func:`~.report.build_report`) together with the files it wrote; a command only prints them.

    result = evaluate_split_pair("feats/train", "feats/test", knn=KNNConfig(), probe=ProbeConfig())
    print(format_table(result.report))

``threads=None`` leaves each step at its own default (faiss: all cores; the logistic regression
and t-SNE: 1, see their docstrings); a number applies to every step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EvaluationInputError
from ..feature_files import FeatureSet, read_feature_set
from .clustering import ClusterConfig, cluster_evaluate
from .knn import KNNConfig, knn_evaluate
from .linear_probe import ProbeConfig, fast_linear_probe
from .plots import (
    PlotConfig,
    pair_similarities,
    plot_embedding,
    plot_similarity_histogram,
)
from .report import build_report, input_info, report_entry, write_report

__all__ = ["FolderEvaluation", "evaluate_folder", "evaluate_split_pair", "paper_probe_folders", "plots_entry"]

Log = Callable[[str], None]


@dataclass
class FolderEvaluation:
    """What an evaluation of folders produced.

    report: the report document (version, evaluations with their protocols, inputs).
    written: the files written, in order: the plots, then the report file when one was asked for.
    """

    report: dict[str, Any]
    written: list[Path] = field(default_factory=list)


def _threads(threads: int | None) -> dict[str, int]:
    """``threads=`` for a step, or nothing so that the step keeps its own default."""
    return {} if threads is None else {"threads": threads}


def _finish(entries: list[dict], inputs: dict[str, dict], written: list[Path],
            report_path: str | os.PathLike | None) -> FolderEvaluation:
    doc = build_report(entries, inputs)
    if report_path is not None:
        written = [*written, write_report(report_path, doc)]
    return FolderEvaluation(doc, written)


def _run(steps: list[tuple[str, Callable[[], dict]]], log: Log | None) -> list[dict]:
    """Run the named steps in order and return their entries; with several, say which one starts
    (``log``; one step needs no such line, and an error then stays the only line printed)."""
    entries = []
    for name, step in steps:
        if log is not None and len(steps) > 1:
            log(f"{name} ...")
        entries.append(step())
    return entries


def plots_entry(fs: FeatureSet, out_dir: str | os.PathLike, config: PlotConfig | None = None,
                second: FeatureSet | None = None, threads: int | None = None) -> tuple[dict, list[Path]]:
    """Draw ``embedding.png`` and ``similarity_hist.png`` of ``fs`` into ``out_dir``; return the
    report entry and the two paths.

    Positives are (image, same image under another view) pairs when ``second`` (the same files,
    in the same order, through another view) is given, as in the paper's Figure 2; otherwise
    same-class pairs. ``config`` None: :class:`PlotConfig`'s defaults.
    """
    config = config if config is not None else PlotConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    emb = plot_embedding(fs.features, fs.labels, out / "embedding.png", method=config.method,
                         max_points=config.max_points or None, seed=config.seed, **_threads(threads))
    if second is not None:
        if second.paths != fs.paths:
            raise EvaluationInputError("the second-view folder must hold the same images in the same order "
                                       "(compare the manifests); extract both from the same files")
        pos, neg = pair_similarities(fs.features, second.features, max_pairs=config.max_pairs, seed=config.seed)
        kind = "instance pairs (same image, two views) vs different images"
    else:
        pos, neg = pair_similarities(fs.features, labels=fs.labels, max_pairs=config.max_pairs, seed=config.seed)
        kind = "same-class pairs vs different-class pairs"
    hist = plot_similarity_histogram(pos, neg, out / "similarity_hist.png", title=f"Cosine similarity: {kind}")
    entry = {
        "name": "plots",
        "protocol": f"{emb['method']} embedding of L2-normalised features; histogram of {kind}",
        "params": {"embedding": emb, "histogram_path": hist["path"], "max_pairs": config.max_pairs,
                   "seed": config.seed},
        "metrics": {"mean_sim_positive": hist["mean_positive"], "mean_sim_negative": hist["mean_negative"],
                    "hist_overlap": hist["overlap"]},
    }
    return entry, [Path(emb["path"]), Path(hist["path"])]


def evaluate_split_pair(
    train_dir: str | os.PathLike,
    test_dir: str | os.PathLike,
    *,
    knn: KNNConfig | None = None,
    probe: ProbeConfig | None = None,
    cluster: ClusterConfig | None = None,
    plots: PlotConfig | None = None,
    plot_dir: str | os.PathLike | None = None,
    threads: int | None = None,
    report_path: str | os.PathLike | None = None,
    log: Log | None = None,
) -> FolderEvaluation:
    """Evaluate the feature folder ``test_dir`` against ``train_dir`` (features [N, D] each,
    labels from their manifests): weighted k-NN and the fast linear probe (test vs train),
    k-means of the test split, and its plots into ``plot_dir`` (``plots`` needs ``plot_dir``).

    Steps run in that order, those given a config; the report has one entry per step and the
    inputs ``train`` and ``test``. Raises :class:`EvaluationInputError` on inconsistent folders.
    """
    if plots is not None and plot_dir is None:
        raise EvaluationInputError("plots need a folder to draw into; pass plot_dir (metaug-eval: -o DIR)")
    train, test = read_feature_set(train_dir), read_feature_set(test_dir)
    steps: list[tuple[str, Callable[[], dict]]] = []
    if knn is not None:
        steps.append(("knn", lambda: report_entry(knn_evaluate(
            train.features, train.labels, test.features, test.labels, ks=knn.ks, temperature=knn.temperature,
            chunk_size=knn.chunk_size, **_threads(threads)))))
    if probe is not None:
        steps.append(("probe", lambda: report_entry(fast_linear_probe(
            train.features, train.labels, test.features, test.labels, cs=probe.cs, val_fraction=probe.val_fraction,
            selection_max_train=probe.selection_max_train or None, max_iter=probe.max_iter, tol=probe.tol,
            seed=probe.seed, **_threads(threads)))))
    if cluster is not None:
        steps.append(("cluster", lambda: _cluster_entry(test, cluster, threads)))
    written: list[Path] = []
    if plots is not None:
        steps.append(("plots", lambda: _keep(plots_entry(test, plot_dir, plots, threads=threads), written)))
    entries = _run(steps, log)
    inputs = {"train": input_info(train.features, path=train_dir, meta=train.meta),
              "test": input_info(test.features, path=test_dir, meta=test.meta)}
    return _finish(entries, inputs, written, report_path)


def evaluate_folder(
    features_dir: str | os.PathLike,
    *,
    cluster: ClusterConfig | None = None,
    plots: PlotConfig | None = None,
    plot_dir: str | os.PathLike | None = None,
    second_view: str | os.PathLike | None = None,
    threads: int | None = None,
    report_path: str | os.PathLike | None = None,
    log: Log | None = None,
) -> FolderEvaluation:
    """Evaluate one feature folder on its own: k-means against its labels, and its plots into
    ``plot_dir`` (positives from ``second_view``, a folder of the same images under another
    view, when given). The report's input is ``features``."""
    if plots is not None and plot_dir is None:
        raise EvaluationInputError("plots need a folder to draw into; pass plot_dir (metaug-eval: -o DIR)")
    fs = read_feature_set(features_dir)
    second = read_feature_set(second_view) if second_view is not None else None
    steps: list[tuple[str, Callable[[], dict]]] = []
    if cluster is not None:
        steps.append(("cluster", lambda: _cluster_entry(fs, cluster, threads)))
    written: list[Path] = []
    if plots is not None:
        steps.append(("plots", lambda: _keep(plots_entry(fs, plot_dir, plots, second, threads), written)))
    entries = _run(steps, log)
    return _finish(entries, {"features": input_info(fs.features, path=features_dir, meta=fs.meta)}, written,
                   report_path)


def _cluster_entry(fs: FeatureSet, config: ClusterConfig, threads: int | None) -> dict:
    return report_entry(cluster_evaluate(fs.features, fs.labels, n_clusters=config.n_clusters,
                                         restarts=config.restarts, seed=config.seed, niter=config.niter,
                                         normalize=config.normalize, **_threads(threads)))


def _keep(entry_and_paths: tuple[dict, list[Path]], written: list[Path]) -> dict:
    """The entry of :func:`plots_entry`, its paths appended to ``written``."""
    entry, paths = entry_and_paths
    written.extend(paths)
    return entry


def _image_split(folder: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(paths, labels) of the readable-looking image files under ``folder``, sorted as
    ``metaug-extract`` lists them; labels are the parent folder names."""
    from ..file_list import collect_files

    files = [e for e in collect_files([folder]).entries if e.skip_reason is None]
    if not files:
        raise EvaluationInputError(f"{folder}: no image files found (one sub-folder of images per class)")
    return [e.path for e in files], [e.label for e in files]


def paper_probe_folders(
    model_ref: str | os.PathLike,
    train_images: str | os.PathLike,
    test_images: str | os.PathLike,
    *,
    config: Any = None,
    layer: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    progress: bool = False,
    report_path: str | os.PathLike | None = None,
) -> FolderEvaluation:
    """The paper's linear probe (:mod:`.paper_probe`) of the model ``model_ref`` (folder, alias
    or Hub id) on two image folders with one sub-folder per class. ``config`` is a
    :class:`~.paper_probe.PaperProbeConfig` (None = the paper's settings); ``device`` as
    :func:`~metaug_features.load_encoder`'s (``metaug-eval`` passes its ``--device``); ``threads`` sets
    torch's CPU threads for the run (None: torch's setting), restored after."""
    import torch

    from .. import load_encoder
    from .paper_probe import PaperProbeConfig, paper_linear_probe

    train_paths, train_labels = _image_split(train_images)
    test_paths, test_labels = _image_split(test_images)
    enc = load_encoder(str(model_ref), device=device)
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        res = paper_linear_probe(enc, train_paths, train_labels, test_paths, test_labels, layer=layer,
                                 config=config if config is not None else PaperProbeConfig(), progress=progress)
    finally:
        torch.set_num_threads(before)
    inputs = {"model": {"ref": str(model_ref), "config": enc.config.to_dict()},
              "train": {"path": str(train_images), "num_rows": len(train_paths)},
              "test": {"path": str(test_images), "num_rows": len(test_paths)}}
    return _finish([report_entry(res)], inputs, [], report_path)
