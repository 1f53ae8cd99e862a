"""Fast ("features-once") linear probe on precomputed features.

This is NOT the paper's linear-evaluation protocol (docs/METHODS.md section 7: SGD on a linear layer for 60
epochs with train-time augmentation, see ``paper_probe.py``); it is the cheap routine number, and
every result it produces says so in its ``protocol`` field.

Procedure:
1. Split the *train* features into a fit part and a stratified, seeded held-out part
   (``val_fraction``, default 10%). Optionally subsample the fit part (``selection_max_train``)
   so model selection stays fast on 50,000 x 3,456 features.
2. For each C in the grid: StandardScaler fitted on the fit part, multinomial logistic regression
   (softmax cross-entropy + ||W||^2 / (2C), lbfgs) fitted on it, accuracy on the held-out part.
3. Keep the C with the best held-out accuracy (ties -> the smaller C, i.e. the stronger
   regularisation), refit scaler + model on the whole train set, score the test set once.
   The refit keeps the selected C. sklearn's objective is C * sum_i loss_i + ||W||^2 / 2, so
   the refit on more rows regularises less per example than the selection fits did; that is
   the usual practice and it measured better: on the random-init CIFAR-10 conv features
   (50,000 x 3,456, C = 0.001 selected on a 10,000-row subsample) keeping C gave 61.8% test
   top-1, rescaling it to keep the penalty per example (C x 10,000 / 50,000) gave 59.7%.

The test split is used in step 3 only, after C is fixed; :func:`select_regularization` does
not even receive it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import EvaluationInputError
from .checks import check_features, encode_splits

__all__ = [
    "DEFAULT_CS",
    "PROTOCOL",
    "ProbeConfig",
    "ProbeResult",
    "SelectionResult",
    "fast_linear_probe",
    "select_regularization",
]

PROTOCOL = (
    "fast linear probe (features-once, no augmentation; not the paper's SGD protocol): "
    "standardised features, multinomial logistic regression (lbfgs), C chosen on a held-out part of train"
)
DEFAULT_CS: tuple[float, ...] = (0.0001, 0.001, 0.01, 0.1, 1.0)


@dataclass(frozen=True)
class ProbeConfig:
    """The fast probe's settings: the one place their defaults are written (the functions below
    and ``metaug-eval probe`` / ``all`` read them from here).

    cs: the grid of inverse regularisation strengths C chosen from.
    val_fraction: share of the train rows held out to choose C.
    selection_max_train: fit at most this many rows while choosing C (None = all; the CLI's 0).
    max_iter, tol: lbfgs limits.
    seed: seeds the held-out split and the subsample.
    """

    cs: tuple[float, ...] = DEFAULT_CS
    val_fraction: float = 0.1
    selection_max_train: int | None = 10_000
    max_iter: int = 300
    tol: float = 1e-4
    seed: int = 0


def _fit_logreg(x: np.ndarray, y: np.ndarray, c: float, max_iter: int, tol: float, seed: int):
    """StandardScaler + multinomial LogisticRegression fitted on (x, y). Returns
    (scaler, model, converged)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x).astype(np.float32, copy=False)
    # lbfgs on more than two classes minimises the multinomial (softmax) loss in sklearn >= 1.5.
    model = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, tol=tol, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(xs, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return scaler, model, converged


def _stratified_subsample(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of about ``n`` rows drawn per class in proportion to class frequency (>= 1 each)."""
    classes, counts = np.unique(y, return_counts=True)
    take = np.maximum(1, np.floor(counts * (n / y.size)).astype(int))
    out = [rng.choice(np.flatnonzero(y == c), size=t, replace=False) for c, t in zip(classes, take)]
    return np.sort(np.concatenate(out))


@dataclass
class SelectionResult:
    """Model selection outcome: ``best_c``, held-out accuracy (%) per C, whether each fit
    converged, and the sizes of the fit and held-out parts."""

    best_c: float
    val_accuracy: dict[float, float]
    converged: dict[float, bool]
    num_fit: int
    num_val: int


def select_regularization(
    train: np.ndarray,
    train_y: np.ndarray,
    cs: Sequence[float] = ProbeConfig.cs,
    val_fraction: float = ProbeConfig.val_fraction,
    selection_max_train: int | None = ProbeConfig.selection_max_train,
    max_iter: int = ProbeConfig.max_iter,
    tol: float = ProbeConfig.tol,
    seed: int = ProbeConfig.seed,
    threads: int | None = 1,
) -> SelectionResult:
    """Choose C on a held-out part of the train set only.

    Args:
        train: float32 [N, D] train features.
        train_y: int [N] class ids.
        cs: grid of inverse regularisation strengths.
        val_fraction: share of train held out (stratified, seeded), 0 < f < 1.
        selection_max_train: fit on at most this many rows of the fit part during selection
            (stratified subsample); None = all.
        max_iter, tol: lbfgs limits.
        seed: seeds the split, the subsample and sklearn.
        threads: BLAS threads during the fits (see :func:`fast_linear_probe`).
    """
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    cs = [float(c) for c in cs]
    if not cs or any(not (c > 0 and np.isfinite(c)) for c in cs):
        raise EvaluationInputError(f"C grid must hold positive numbers, got {cs}")
    if not 0 < val_fraction < 1:
        raise EvaluationInputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(cs) == 1:
        # Nothing to choose: no held-out part, no fits.
        return SelectionResult(cs[0], {}, {}, int(train_y.size), 0)
    classes, counts = np.unique(train_y, return_counts=True)
    n_val = int(np.ceil(val_fraction * train_y.size))
    if counts.min() < 2 or n_val < classes.size or train_y.size - n_val < classes.size:
        raise EvaluationInputError(
            f"the train set ({train_y.size} rows, smallest class {counts.min()} rows) is too small to hold out "
            f"{val_fraction:.0%} per class for choosing C; give more train rows, a larger val_fraction, or a single C"
        )
    fit_idx, val_idx = train_test_split(
        np.arange(train_y.size), test_size=n_val, stratify=train_y, random_state=seed
    )
    fit_idx = np.sort(fit_idx)
    if selection_max_train is not None and fit_idx.size > selection_max_train:
        sub = _stratified_subsample(train_y[fit_idx], selection_max_train, np.random.default_rng(seed))
        fit_idx = fit_idx[sub]
    val_idx = np.sort(val_idx)
    val_acc, converged = {}, {}
    for c in cs:
        with threadpool_limits(limits=threads):
            scaler, model, ok = _fit_logreg(train[fit_idx], train_y[fit_idx], c, max_iter, tol, seed)
            pred = model.predict(scaler.transform(train[val_idx]).astype(np.float32, copy=False))
        val_acc[c] = float(100.0 * np.mean(pred == train_y[val_idx]))
        converged[c] = ok
    best = max(val_acc.values())
    best_c = min(c for c in cs if val_acc[c] == best)
    return SelectionResult(best_c, val_acc, converged, int(fit_idx.size), int(val_idx.size))


@dataclass
class ProbeResult:
    """Outcome of :func:`fast_linear_probe`: test accuracy (%) ``top1`` / ``top5`` (>= 5
    classes), the model selection, predictions (class ids), classes, parameters, timings."""

    accuracy: dict[str, float]
    selection: SelectionResult
    predictions: np.ndarray
    classes: list
    params: dict
    final_converged: bool
    seconds: dict[str, float] = field(default_factory=dict)
    protocol: str = PROTOCOL

    def metrics(self) -> dict[str, float]:
        return {f"probe_{k}": v for k, v in self.accuracy.items()}


def fast_linear_probe(
    train: np.ndarray,
    train_labels: Sequence | np.ndarray,
    test: np.ndarray,
    test_labels: Sequence | np.ndarray,
    cs: Sequence[float] = ProbeConfig.cs,
    val_fraction: float = ProbeConfig.val_fraction,
    selection_max_train: int | None = ProbeConfig.selection_max_train,
    max_iter: int = ProbeConfig.max_iter,
    tol: float = ProbeConfig.tol,
    seed: int = ProbeConfig.seed,
    threads: int | None = 1,
) -> ProbeResult:
    """Fast linear probe (module docstring). Arguments as :func:`select_regularization`;
    ``test`` / ``test_labels`` are touched only after C is chosen and the final model is fitted.

    Default cost on 2 cores: selection = len(cs) fits on <= 10,000 rows, then one fit on all rows
    (max 300 lbfgs iterations each).

    ``threads`` caps the BLAS threads of the fits (None = the library's default). The
    default 1 is deliberate: on a shared 2-core machine OpenBLAS's spinning worker threads
    made a 20,000 x 3,456 lbfgs fit 4x slower with 2 threads than with 1 (and a 180 x 576 fit
    20x slower); raise it on a dedicated many-core machine.
    """
    from threadpoolctl import threadpool_limits

    data = encode_splits(train, train_labels, test, test_labels)
    with threadpool_limits(limits=threads):
        t0 = time.perf_counter()
        sel = select_regularization(
            data.train, data.train_y, cs, val_fraction, selection_max_train, max_iter, tol, seed, threads
        )
        t1 = time.perf_counter()
        scaler, model, ok = _fit_logreg(data.train, data.train_y, sel.best_c, max_iter, tol, seed)
        t2 = time.perf_counter()
        xte = scaler.transform(check_features(data.test, "test features")).astype(np.float32, copy=False)
        proba = model.predict_proba(xte)
    # model.classes_ are the train class ids 0..C-1 in order, so column j is class j.
    pred = model.classes_[np.argmax(proba, axis=1)]
    acc = {"top1": float(100.0 * np.mean(pred == data.test_y))}
    if data.num_classes >= 5:
        top5 = model.classes_[np.argsort(-proba, axis=1, kind="stable")[:, :5]]
        acc["top5"] = float(100.0 * np.mean((top5 == data.test_y[:, None]).any(axis=1)))
    params = {
        "c_grid": [float(c) for c in cs],
        "chosen_c": sel.best_c,
        "val_fraction": float(val_fraction),
        "selection_max_train": selection_max_train,
        "selection_fit_rows": sel.num_fit,
        "selection_val_rows": sel.num_val,
        "max_iter": int(max_iter),
        "tol": float(tol),
        "seed": int(seed),
        "threads": threads,
        "num_train": int(data.train.shape[0]),
        "num_test": int(data.test.shape[0]),
        "dim": int(data.train.shape[1]),
        "num_classes": data.num_classes,
    }
    return ProbeResult(
        accuracy=acc,
        selection=sel,
        predictions=pred.astype(np.int64),
        classes=data.classes,
        params=params,
        final_converged=ok,
        seconds={"selection": t1 - t0, "final_fit": t2 - t1, "predict": time.perf_counter() - t2},
    )
