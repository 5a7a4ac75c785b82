"""Metrics for graded predictions: arrays in, plain Python numbers out (JSON-serialisable).

An ordinal model emits a continuous score on the grade-index scale (0 = first grade); it is
judged both as a number (MAE, RMSE of score - true) and as a grade after rounding (accuracy,
within-one-grade accuracy, quadratic weighted kappa, confusion matrix).
"""

from __future__ import annotations

import math

import numpy as np

from imgrade.core.errors import ImgradeError
from imgrade.core.grades import grade_indices, none_if_nan, round_to_grades  # noqa: F401  (round_to_grades: part of this API)

METRIC_NAMES = {
    "n": "n",
    "mae": "MAE",
    "rmse": "RMSE",
    "accuracy": "accuracy",
    "within1": "within-1",
    "grade_mae": "grade MAE",
    "qwk": "QWK",
    "r2": "R2",
    "pearson": "Pearson",
    "mean_error": "mean error",
    "coverage": "set coverage",
    "set_size": "set size",
    "train_seconds": "training seconds",
}
"""What the console tables, report.html and the plots call each metric; metrics.json keeps the keys.

n: images; MAE and RMSE: of the score against the true grade index; accuracy: the share graded
exactly right; within-1: the share at most one grade off; grade MAE: the mean number of grades
off; QWK: quadratic weighted kappa (1 perfect agreement, 0 chance); mean error: signed, predicted
- true; set coverage and set size: the share of grade sets holding the true grade, and their
mean number of grades.
"""


def confusion_matrix(y_true, y_pred, num_grades: int) -> np.ndarray:
    """Count (true grade, predicted grade) pairs: rows are true grades, columns predicted ones.

    >>> confusion_matrix([0, 1, 2, 2], [0, 2, 2, 1], num_grades=3)
    array([[1, 0, 0],
           [0, 0, 1],
           [0, 1, 1]])
    """
    y_true = grade_indices(y_true, num_grades, "y_true")
    y_pred = grade_indices(y_pred, num_grades, "y_pred")
    _check_same_length(y_true, y_pred)
    counts = np.bincount(y_true * num_grades + y_pred, minlength=num_grades * num_grades)
    return counts.reshape(num_grades, num_grades).astype(np.int64)


def quadratic_weighted_kappa(y_true, y_pred, num_grades: int) -> float:
    """Cohen's kappa with quadratic weights ``(i - j)^2 / (K - 1)^2`` on the K x K confusion matrix.

    ``kappa = 1 - sum(W * O) / sum(W * E)``, where O is the observed confusion matrix and E the
    one expected by chance (outer product of its row and column sums, divided by n). 1 is perfect
    agreement, 0 chance level, below 0 worse than chance.

    Returns ``nan`` where kappa is undefined: no samples, one grade, or no disagreement expected
    by chance (e.g. every true grade and every prediction is the same single grade). This matches
    scikit-learn's ``cohen_kappa_score(..., weights="quadratic")``.

    >>> quadratic_weighted_kappa([0, 1, 2, 3], [0, 1, 2, 3], num_grades=4)
    1.0
    >>> round(quadratic_weighted_kappa([0, 1, 2, 2], [0, 2, 2, 1], num_grades=3), 6)  # 7/11
    0.636364
    >>> quadratic_weighted_kappa([1, 1], [1, 1], num_grades=3)
    nan
    """
    observed = confusion_matrix(y_true, y_pred, num_grades).astype(np.float64)
    n = observed.sum()
    if n == 0 or num_grades < 2:
        return float("nan")
    grades = np.arange(num_grades)
    weights = (grades[:, None] - grades[None, :]) ** 2 / (num_grades - 1) ** 2  # (K, K)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / n  # (K, K)
    expected_disagreement = float(np.sum(weights * expected))
    if expected_disagreement == 0.0:
        return float("nan")
    return float(1.0 - np.sum(weights * observed) / expected_disagreement)


def ordinal_metrics(y_true, scores, grade_names: list[str], y_pred=None) -> dict:
    """Judge continuous scores on the grade-index scale against true grade indices.

    Args:
        y_true: true grade indices (ints, or integral floats such as ``ImageSet.targets``).
        scores: predicted scores on the same scale (any real number; rounded and clipped for
            the grade-level metrics).
        grade_names: grade names in rank order; index k names grade k.
        y_pred: the predicted grades to judge (a head's own decision, or tuned cut points);
            default: the scores rounded and clipped.

    Returns:
        ``n``; ``mae``, ``rmse`` of ``score - true``; ``accuracy`` and ``within1`` (share with
        ``|rounded - true| <= 1``) of the rounded grades (or ``y_pred``); ``grade_mae``, the mean
        of ``|predicted grade - true|``; ``qwk`` (None where undefined, see
        :func:`quadratic_weighted_kappa`); ``confusion`` (list of lists, rows true); and
        ``per_grade``: ``{name: {"n", "mae", "accuracy", "mean_error"}}`` in grade order, with
        None values for a grade without samples. Only plain ints, floats, None, lists and dicts.

    Raises:
        ImgradeError: no samples, lengths differ, a true grade is outside the grade names,
            a score is NaN, or two grades share a name.

    >>> m = ordinal_metrics([0, 1, 2, 2], [0.2, 1.6, 2.4, 0.9], ["L", "M", "S"])
    >>> m["mae"], m["accuracy"], m["within1"], m["per_grade"]["S"]["n"]
    (0.575, 0.5, 1.0, 2)
    """
    num_grades = len(grade_names)
    if len(set(grade_names)) != num_grades:
        raise ImgradeError(f"grade names must be unique, got {list(grade_names)}")
    y_true = grade_indices(y_true, num_grades, "y_true")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    _check_same_length(y_true, scores)
    if len(y_true) == 0:
        raise ImgradeError("no samples to evaluate: y_true and scores are empty")
    rounded = round_to_grades(scores, num_grades) if y_pred is None else grade_indices(y_pred, num_grades, "y_pred")
    _check_same_length(y_true, rounded)
    errors = scores - y_true
    per_grade = {}
    for k, name in enumerate(grade_names):
        mask = y_true == k
        count = int(mask.sum())
        if count == 0:
            per_grade[name] = {"n": 0, "mae": None, "accuracy": None, "mean_error": None}
            continue
        per_grade[name] = {
            "n": count,
            "mae": float(np.mean(np.abs(errors[mask]))),
            "accuracy": float(np.mean(rounded[mask] == k)),
            "mean_error": float(np.mean(errors[mask])),
        }
    return {
        "n": int(len(y_true)),
        "mae": float(np.mean(np.abs(errors))),
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "accuracy": float(np.mean(rounded == y_true)),
        "within1": float(np.mean(np.abs(rounded - y_true) <= 1)),
        "grade_mae": float(np.mean(np.abs(rounded - y_true))),
        "qwk": none_if_nan(quadratic_weighted_kappa(y_true, rounded, num_grades)),
        "confusion": confusion_matrix(y_true, rounded, num_grades).tolist(),
        "per_grade": per_grade,
    }


def continuous_metrics(y_true, y_pred) -> dict:
    """Judge predictions of a continuous target.

    Returns:
        ``n``, ``mae``, ``rmse``, ``r2`` (``1 - SS_res / SS_tot``; None when the true values are
        all equal) and ``pearson`` (None with fewer than 2 samples or a constant input).

    Raises:
        ImgradeError: no samples, lengths differ, or a value is NaN or infinite.

    >>> m = continuous_metrics([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 4.0])
    >>> m["mae"], m["r2"], round(m["pearson"], 4)
    (0.25, 0.9, 0.9562)
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    _check_same_length(y_true, y_pred)
    if len(y_true) == 0:
        raise ImgradeError("no samples to evaluate: y_true and y_pred are empty")
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if not np.all(np.isfinite(values)):
            bad = int(np.sum(~np.isfinite(values)))
            raise ImgradeError(f"{bad} of {values.size} values in {name} are NaN or infinite")
    errors = y_pred - y_true
    total = float(np.sum((y_true - y_true.mean()) ** 2))
    r2 = None if total == 0.0 else float(1.0 - np.sum(errors**2) / total)
    pearson = None
    if len(y_true) >= 2:
        true_centred, pred_centred = y_true - y_true.mean(), y_pred - y_pred.mean()
        denominator = math.sqrt(float(np.sum(true_centred**2)) * float(np.sum(pred_centred**2)))
        if denominator > 0.0:
            pearson = float(np.clip(np.sum(true_centred * pred_centred) / denominator, -1.0, 1.0))
    return {
        "n": int(len(y_true)),
        "mae": float(np.mean(np.abs(errors))),
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "r2": r2,
        "pearson": pearson,
    }


def _check_same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ImgradeError(f"true values and predictions differ in length: {len(a)} vs {len(b)}")
