"""Evaluation of frozen features: arrays in, numbers out (no network is ever loaded here,
except by :mod:`.paper_probe`, which by definition trains on top of a given encoder and is
imported explicitly).

- :func:`knn_evaluate`        weighted k-NN (InstDisc / DINO protocol), faiss exact search
- :func:`fast_linear_probe`   standardised logistic regression, C chosen on held-out train rows
- :func:`cluster_evaluate`    faiss k-means + NMI / ARI / Hungarian accuracy (all in percent)
- :func:`plot_embedding`, :func:`pair_similarities`, :func:`plot_similarity_histogram`
- :func:`build_report`, :func:`write_report`, :func:`read_report`, :func:`find_evaluation`, :func:`format_table`
"""

from .checks import EncodedSplits, check_features, check_labels, check_pair, encode_splits, l2_normalize
from .clustering import (ClusteringResult, cluster_evaluate, cluster_metrics, clustering_in_percent, hungarian_accuracy,
                         kmeans)
from .knn import KNNResult, knn_evaluate, knn_search, knn_vote
from .linear_probe import ProbeResult, SelectionResult, fast_linear_probe, select_regularization
from .plots import embedding_2d, pair_similarities, plot_embedding, plot_similarity_histogram
from .report import (array_sha256, build_report, find_evaluation, format_table, input_info, read_report, report_entry,
                     write_report)

__all__ = [
    "EncodedSplits", "check_features", "check_labels", "check_pair", "encode_splits", "l2_normalize",
    "ClusteringResult", "cluster_evaluate", "cluster_metrics", "clustering_in_percent", "hungarian_accuracy", "kmeans",
    "KNNResult", "knn_evaluate", "knn_search", "knn_vote",
    "ProbeResult", "SelectionResult", "fast_linear_probe", "select_regularization",
    "embedding_2d", "pair_similarities", "plot_embedding", "plot_similarity_histogram",
    "array_sha256", "build_report", "find_evaluation", "format_table", "input_info", "read_report", "report_entry",
    "write_report",
]
