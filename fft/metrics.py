"""Official GLUE metrics as pure numpy functions.

    results = metrics.compute("mrpc", predictions, labels)  # {'accuracy', 'f1', 'combined'}
    score = metrics.primary(task, results)

Values are fractions (0.85, not 85). Degenerate inputs follow sklearn where it defines a
value: MCC is 0 when either side is constant, F1 is 0 with no positive predictions or labels.
Pearson and Spearman return 0 for a constant input (scipy gives NaN with a warning), so a
collapsed regression model scores 0 instead of poisoning model selection; NaN inputs give NaN.
"""

from __future__ import annotations

import numpy as np

from fft.data import glue


def _pair(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(predictions), np.asarray(labels)
    if p.ndim != 1 or p.shape != y.shape:
        raise ValueError(
            f"Expected predictions and labels of the same shape [n], got {p.shape} and {y.shape}"
            + ("; pass class ids (logits.argmax(-1)), not logits" if p.ndim == 2 else "")
        )
    if p.size == 0:
        raise ValueError("Cannot compute a metric on zero examples")
    return p, y


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the labels; [n] class ids each."""
    p, y = _pair(predictions, labels)
    return float(np.mean(p == y))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Binary F1 of the positive class 1; 0 when there are no true or predicted positives."""
    p, y = _pair(predictions, labels)
    if not (np.isin(p, (0, 1)).all() and np.isin(y, (0, 1)).all()):
        raise ValueError("f1 is binary: predictions and labels must be 0 or 1")
    tp = np.sum((p == 1) & (y == 1))
    denominator = np.sum(p == 1) + np.sum(y == 1)  # 2 tp + fp + fn
    return float(2 * tp / denominator) if denominator else 0.0


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation (multi-class form); 0 when predictions or labels are constant."""
    p, y = _pair(predictions, labels)
    _, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = int(codes.max()) + 1
    confusion = np.zeros((k, k), np.float64)
    np.add.at(confusion, (codes[: len(y)], codes[len(y) :]), 1.0)
    true_counts, pred_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, n = np.trace(confusion), confusion.sum()
    cov_yp = correct * n - true_counts @ pred_counts
    cov_pp = n * n - pred_counts @ pred_counts
    cov_yy = n * n - true_counts @ true_counts
    if cov_pp == 0 or cov_yy == 0:
        return 0.0
    return float(cov_yp / np.sqrt(cov_pp * cov_yy))


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x.astype(np.float64), y.astype(np.float64)
    if len(x) < 2:
        raise ValueError("A correlation needs at least 2 examples")
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    if (x == x[0]).all() or (y == y[0]).all():
        return 0.0
    xc, yc = x - x.mean(), y - y.mean()
    r = np.dot(xc, yc) / np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    return float(np.clip(r, -1.0, 1.0))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation of [n] scores; 0 when either side is constant."""
    return _correlation(*_pair(predictions, labels))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of [n] values, ties sharing the mean of their ranks (scipy's 'average')."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts_group = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], len(x))
    group_rank = (starts + ends + 1) / 2.0  # Mean of the 1-based ranks starts+1 .. ends.
    ranks = np.empty(len(x), np.float64)
    ranks[order] = group_rank[np.cumsum(starts_group) - 1]
    return ranks


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation of [n] scores (average ranks for ties); 0 when constant."""
    p, y = _pair(predictions, labels)
    if np.isnan(p.astype(np.float64)).any() or np.isnan(y.astype(np.float64)).any():
        return float("nan")
    return _correlation(average_ranks(p), average_ranks(y))


_METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_corrcoef": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def _check_classes(values: np.ndarray, name: str, num_labels: int) -> None:
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise ValueError(f"{name} must be class ids, got non-integer values")
    if values.size and (values.min() < 0 or values.max() >= num_labels):
        raise ValueError(
            f"{name} must be class ids in 0..{num_labels - 1}, got values in "
            f"{values.min()}..{values.max()} (unlabeled test examples have label -1)"
        )


def compute(
    task: str | glue.TaskSpec, predictions: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """The task's official GLUE metrics plus 'combined', their mean (the GLUE task score).

    Args:
      task: task name or spec.
      predictions: [n] class ids, or [n] float scores for regression (STS-B).
      labels: [n] class ids or scores.

    Returns:
      e.g. {'matthews_corrcoef', 'combined'} for CoLA, {'accuracy', 'f1', 'combined'} for
      MRPC/QQP, {'pearson', 'spearman', 'combined'} for STS-B, {'accuracy', 'combined'} else.
    """
    spec = glue.get_task(task)
    p, y = _pair(predictions, labels)
    if not spec.is_regression:
        _check_classes(p, "predictions", spec.num_labels)
        _check_classes(y, "labels", spec.num_labels)
        p, y = p.astype(np.int64), y.astype(np.int64)
    results = {name: _METRICS[name](p, y) for name in spec.metrics}
    results["combined"] = float(np.mean(list(results.values())))
    return results


def primary(task: str | glue.TaskSpec, results: dict[str, float]) -> float:
    """The model-selection score in `compute`'s results (higher is better for every task)."""
    return results[glue.get_task(task).primary_metric]
