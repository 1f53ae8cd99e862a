"""Input validation shared by every evaluator.

Evaluators take plain arrays; this module turns whatever the caller passed into the arrays the
evaluators rely on (float32 [N, D] features, int64 [N] class indices with a shared class list)
and raises :class:`~metaug_features.errors.EvaluationInputError` with a message that says what
is wrong and what to do, instead of letting numpy / faiss / sklearn fail deep inside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import EvaluationInputError

__all__ = [
    "EncodedSplits",
    "check_features",
    "check_labels",
    "check_pair",
    "encode_splits",
    "l2_normalize",
]


def check_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    """Return ``features`` as a C-contiguous float32 array [N, D] after checking it.

    Raises EvaluationInputError for a non-2-D array, an empty array, a zero dimension,
    or any NaN / inf (reporting how many rows are affected and the first one).
    """
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise EvaluationInputError(f"{name}: expected a 2-D array [N, D], got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise EvaluationInputError(f"{name}: no rows (0 feature vectors)")
    if arr.shape[1] == 0:
        raise EvaluationInputError(f"{name}: feature dimension is 0")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise EvaluationInputError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        raise EvaluationInputError(
            f"{name}: {bad_rows.size} row(s) contain NaN or inf (first: row {int(bad_rows[0])}); "
            "the features are broken (diverged model or corrupt file) — re-extract them"
        )
    return arr


def check_labels(labels: Sequence | np.ndarray | None, n: int, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a 1-D numpy array of length ``n``.

    Labels may be strings (folder names from a manifest) or integers. Missing labels — ``None``,
    empty strings, or negative integers — raise EvaluationInputError: every evaluator here needs a
    label for every row.
    """
    if labels is None:
        raise EvaluationInputError(f"{name}: no labels given; evaluation needs one label per feature row")
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise EvaluationInputError(f"{name}: expected a 1-D sequence, got shape {tuple(arr.shape)}")
    if arr.shape[0] != n:
        raise EvaluationInputError(
            f"{name}: {arr.shape[0]} labels for {n} feature rows; counts must match (one label per row)"
        )
    if arr.dtype.kind == "O":
        # A Python list mixing None with strings / ints arrives as an object array.
        missing = np.flatnonzero([v is None or v == "" for v in arr])
        if missing.size == 0:
            if all(isinstance(v, str) for v in arr):
                arr = arr.astype(str)
            elif all(isinstance(v, (int, np.integer)) for v in arr):
                arr = arr.astype(np.int64)
            else:
                raise EvaluationInputError(f"{name}: labels must be all strings or all integers")
    elif arr.dtype.kind in "US":
        missing = np.flatnonzero(np.char.str_len(arr.astype(str)) == 0)
    elif arr.dtype.kind in "iu":
        missing = np.flatnonzero(arr < 0)
    elif arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
        missing = np.empty(0, dtype=np.int64)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise EvaluationInputError(f"{name}: float labels must be whole numbers without NaN")
        arr = arr.astype(np.int64)
        missing = np.flatnonzero(arr < 0)
    else:
        raise EvaluationInputError(f"{name}: unsupported label dtype {arr.dtype}")
    if missing.size:
        raise EvaluationInputError(
            f"{name}: {missing.size} row(s) have no label (first: row {int(missing[0])}); images directly in "
            "the extraction root get an empty label — put them in one folder per class"
        )
    return arr


def check_pair(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check train and test features separately and that their dimensions agree."""
    train = check_features(train, "train features")
    test = check_features(test, "test features")
    if train.shape[1] != test.shape[1]:
        raise EvaluationInputError(
            f"train features have dimension {train.shape[1]} but test features {test.shape[1]}; "
            "extract both splits with the same model and layer"
        )
    return train, test


@dataclass(frozen=True)
class EncodedSplits:
    """Features and labels of a train / test split, checked and label-encoded.

    Attributes:
        train: float32 [N_train, D].
        test: float32 [N_test, D].
        train_y: int64 [N_train] class indices into ``classes``.
        test_y: int64 [N_test] class indices into ``classes``.
        classes: sorted class names (or integer labels), index = class id.
    """

    train: np.ndarray
    test: np.ndarray
    train_y: np.ndarray
    test_y: np.ndarray
    classes: list

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def encode_splits(
    train: np.ndarray,
    train_labels: Sequence | np.ndarray | None,
    test: np.ndarray,
    test_labels: Sequence | np.ndarray | None,
) -> EncodedSplits:
    """Validate a train / test pair and map labels to class ids 0..C-1 (sorted train classes).

    Raises EvaluationInputError when counts differ, features hold NaN / inf, dimensions differ,
    labels are missing, the train set has a single class, or the test set holds a class the
    train set never shows (no classifier trained on it could predict that class).
    """
    train, test = check_pair(train, test)
    ytr = check_labels(train_labels, train.shape[0], "train labels")
    yte = check_labels(test_labels, test.shape[0], "test labels")
    if (ytr.dtype.kind in "US") != (yte.dtype.kind in "US"):
        raise EvaluationInputError("train labels and test labels must both be strings or both be integers")
    classes, ytr_idx = np.unique(ytr, return_inverse=True)
    if classes.size < 2:
        raise EvaluationInputError(
            f"train labels: only one class ({classes[0]!r}); classification needs at least two classes"
        )
    unseen = np.setdiff1d(np.unique(yte), classes)
    if unseen.size:
        raise EvaluationInputError(
            f"test labels: {unseen.size} class(es) absent from the train set (e.g. {unseen[0]!r}); "
            "train and test must be extracted from folders with the same class names"
        )
    yte_idx = np.searchsorted(classes, yte)
    return EncodedSplits(
        train=train,
        test=test,
        train_y=ytr_idx.astype(np.int64),
        test_y=yte_idx.astype(np.int64),
        classes=[c.item() if hasattr(c, "item") else c for c in classes],
    )


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation of float32 [N, D]; an all-zero row stays zero (its cosine
    similarity to everything is 0) instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, eps), dtype=np.float32)
