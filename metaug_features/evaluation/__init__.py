"""Evaluation of frozen features: arrays in, numbers out (no network is ever loaded here,
except by :mod:`.paper_probe`, which by definition trains on top of a given encoder and is
imported explicitly).

- :func:`knn_evaluate`        weighted k-NN (InstDisc / DINO protocol), faiss exact search
- :func:`fast_linear_probe`   standardised logistic regression, C chosen on held-out train rows
- :func:`cluster_evaluate`    faiss k-means + NMI / ARI / Hungarian accuracy (all in percent)
- :func:`plot_embedding`, :func:`pair_similarities`, :func:`plot_similarity_histogram`
- :func:`build_report`, :func:`write_report`, :func:`read_report`, :func:`find_evaluation`, :func:`format_table`
- :func:`evaluate_split_pair`, :func:`evaluate_folder`, :func:`paper_probe_folders`: folders in, one report out
  (what ``metaug-eval`` runs)

Each protocol's settings are one frozen dataclass (:class:`KNNConfig`, :class:`ProbeConfig`,
:class:`ClusterConfig`, :class:`PlotConfig`, ``paper_probe.PaperProbeConfig``): the one place their
defaults are written; the functions and the command-line options read them from there.
"""

from .checks import (
    EncodedSplits,
    check_features,
    check_labels,
    check_pair,
    encode_splits,
    l2_normalize,
)
from .clustering import (
    ClusterConfig,
    ClusteringResult,
    cluster_evaluate,
    cluster_metrics,
    clustering_in_percent,
    hungarian_accuracy,
    kmeans,
)
from .folders import (
    FolderEvaluation,
    evaluate_folder,
    evaluate_split_pair,
    paper_probe_folders,
    plots_entry,
)
from .knn import KNNConfig, KNNResult, knn_evaluate, knn_search, knn_vote
from .linear_probe import (
    ProbeConfig,
    ProbeResult,
    SelectionResult,
    fast_linear_probe,
    select_regularization,
)
from .plots import (
    PlotConfig,
    embedding_2d,
    pair_similarities,
    plot_embedding,
    plot_similarity_histogram,
)
from .report import (
    array_sha256,
    build_report,
    find_evaluation,
    format_table,
    input_info,
    read_report,
    report_entry,
    write_report,
)

__all__ = [
    "ClusterConfig",
    "ClusteringResult",
    "EncodedSplits",
    "FolderEvaluation",
    "KNNConfig",
    "KNNResult",
    "PlotConfig",
    "ProbeConfig",
    "ProbeResult",
    "SelectionResult",
    "array_sha256",
    "build_report",
    "check_features",
    "check_labels",
    "check_pair",
    "cluster_evaluate",
    "cluster_metrics",
    "clustering_in_percent",
    "embedding_2d",
    "encode_splits",
    "evaluate_folder",
    "evaluate_split_pair",
    "fast_linear_probe",
    "find_evaluation",
    "format_table",
    "hungarian_accuracy",
    "input_info",
    "kmeans",
    "knn_evaluate",
    "knn_search",
    "knn_vote",
    "l2_normalize",
    "pair_similarities",
    "paper_probe_folders",
    "plot_embedding",
    "plot_similarity_histogram",
    "plots_entry",
    "read_report",
    "report_entry",
    "select_regularization",
    "write_report",
]
