"""Metrics for graded predictions: one table of them, arrays in, plain Python numbers out.

An ordinal model emits a continuous score on the grade-index scale (0 = first grade); it is
judged both as a number (MAE, RMSE of score - true) and as a grade after rounding (accuracy,
within-one-grade accuracy, quadratic weighted kappa, confusion matrix).

``METRICS`` is the one table of metrics (as scikit-learn's ``_SCORERS``): each row names a
metric, says how to compute it and where it shows. metrics.json, the console, report.html, the
model card and compare's tables and box plots all read their metric lists from it, so a new metric
is one :func:`register_metric` call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby

import numpy as np

from imgrade.core.errors import ImgradeError
from imgrade.core.grades import grade_indices, none_if_nan, round_to_grades  # noqa: F401  (round_to_grades: part of this API)

NEEDS = ("scores", "grades", "continuous", "grade_sets", "run")
"""What a metric is computed from: any target's scores, a graded target's predicted grades, a
continuous target's predictions, the calibrated grade sets, or the training run itself."""


@dataclass(frozen=True)
class Predictions:
    """What a metric is computed from: true values, scores and (for a graded target) predicted grades."""

    y_true: np.ndarray
    """True grade indices, or a continuous target's true values."""
    scores: np.ndarray
    """Scores on the same scale (a continuous target's predictions)."""
    grades: np.ndarray | None = None
    """Predicted grade indices; None for a continuous target."""
    num_grades: int | None = None
    """How many grades there are (a grade may have no images); None for a continuous target."""

    def __len__(self) -> int:
        return len(self.y_true)

    @property
    def errors(self) -> np.ndarray:
        """``score - true``: above zero, scored too high."""
        return self.scores - self.y_true

    def subset(self, mask: np.ndarray) -> Predictions:
        """The predictions of the images in ``mask`` (one grade's, for the per-grade table)."""
        grades = None if self.grades is None else self.grades[mask]
        return Predictions(self.y_true[mask], self.scores[mask], grades, self.num_grades)


@dataclass(frozen=True)
class Metric:
    """One row of the metric table: how a metric is computed, formatted and where it shows."""

    name: str
    """Its key in metrics.json, results.csv and summary.csv."""
    label: str
    """What the console tables, report.html and the box plots call it."""
    needs: str
    """What it is computed from: one of ``NEEDS``."""
    compute: Callable[[Predictions], float | int | None] | None = None
    """Its value from predictions (None where undefined); None for one measured elsewhere: grade
    sets are summarised by calibration, a run's seconds timed by compare."""
    higher_is_better: bool | None = None
    """Which way is better, as the box plots say; None for neither (a count, a signed error, or
    coverage, which should meet 1 - alpha rather than grow)."""
    description: str = ""
    """What it measures, for report.html's sentence under the headline."""
    digits: int = 3
    """Decimals shown."""
    signed: bool = False
    """Shown with its sign (``+0.021``): a signed error."""
    headline: bool = True
    """Computed over all the images: in metrics.json and the headline of the console and report.html."""
    per_grade: bool = False
    """Also computed over each true grade's images: the per-grade tables."""
    by_grade: Callable[[Predictions], list[float | None]] | None = None
    """A per-grade metric that needs all the images, not only one true grade's (precision: of the
    images graded k, the share truly k): its value for each grade, in grade order. Such a metric
    has no ``compute`` and is per grade only."""
    compare: str = ""
    """In ``imgrade compare``: "table" (its CSVs, summary.md and report.html), "csv" (the CSVs only) or ""."""
    plotted: bool = False
    """One box plot of compare's boxes.png."""

    def __post_init__(self):
        if self.needs not in NEEDS:
            raise ImgradeError(f"metric {self.name!r} needs {self.needs!r}: use one of {', '.join(NEEDS)}")
        if self.compute is None and self.by_grade is None and self.needs in ("scores", "grades", "continuous"):
            raise ImgradeError(f"metric {self.name!r} needs {self.needs} but has no compute function")
        if self.by_grade is not None and (self.compute is not None or self.headline or not self.per_grade):
            raise ImgradeError(
                f"metric {self.name!r} has by_grade: set compute=None, headline=False and per_grade=True"
            )
        if self.compare not in ("table", "csv", ""):
            raise ImgradeError(f"metric {self.name!r}: compare={self.compare!r} is not 'table', 'csv' or ''")


def _r2(p: Predictions) -> float | None:
    """``1 - SS_res / SS_tot``; None when the true values are all equal."""
    total = float(np.sum((p.y_true - p.y_true.mean()) ** 2))
    return None if total == 0.0 else float(1.0 - np.sum(p.errors**2) / total)


def _pearson(p: Predictions) -> float | None:
    """Pearson's r; None with fewer than 2 samples or a constant input."""
    if len(p.y_true) < 2:
        return None
    true_centred, pred_centred = p.y_true - p.y_true.mean(), p.scores - p.scores.mean()
    denominator = math.sqrt(float(np.sum(true_centred**2)) * float(np.sum(pred_centred**2)))
    if denominator == 0.0:
        return None
    return float(np.clip(np.sum(true_centred * pred_centred) / denominator, -1.0, 1.0))


def _qwk(p: Predictions) -> float | None:
    return none_if_nan(quadratic_weighted_kappa(p.y_true, p.grades, p.num_grades))


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


def precision_recall_f1(y_true, y_pred, num_grades: int) -> dict[str, list[float | None]]:
    """Each grade's precision, recall and F1, that grade against all the others.

    Precision: of the images graded k, the share truly k (None when no image is graded k).
    Recall: of the images truly k, the share graded k, the grade's accuracy (None without any).
    F1: their harmonic mean (None where either is None; 0 when both are 0).

    >>> m = precision_recall_f1([0, 0, 1, 2, 2], [0, 1, 1, 1, 2], num_grades=4)
    >>> [None if v is None else round(v, 4) for v in m["precision"]]  # grade 1: graded 3 times, once right
    [1.0, 0.3333, 1.0, None]
    >>> m["recall"]
    [0.5, 1.0, 0.5, None]
    >>> [None if v is None else round(v, 4) for v in m["f1"]]  # 2 * 1/3 * 1 / (1/3 + 1) = 0.5
    [0.6667, 0.5, 0.6667, None]
    """
    confusion = confusion_matrix(y_true, y_pred, num_grades)
    right = np.diag(confusion)
    graded, truly = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = [float(r / g) if g else None for r, g in zip(right, graded)]
    recall = [float(r / t) if t else None for r, t in zip(right, truly)]
    f1 = [
        None if p is None or r is None else (0.0 if p + r == 0 else 2 * p * r / (p + r))
        for p, r in zip(precision, recall)
    ]
    return {"precision": precision, "recall": recall, "f1": f1}


def _one_vs_rest(name: str) -> Callable[[Predictions], list[float | None]]:
    return lambda p: precision_recall_f1(p.y_true, p.grades, p.num_grades)[name]


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("n", "n", needs="scores", compute=len, per_grade=True),
        Metric(
            "mae",
            "MAE",
            needs="scores",
            compute=lambda p: float(np.mean(np.abs(p.errors))),
            higher_is_better=False,
            description="of the score against the true grade",
            per_grade=True,
            compare="table",
        ),
        Metric(
            "rmse",
            "RMSE",
            needs="scores",
            compute=lambda p: float(np.sqrt(np.mean(p.errors**2))),
            higher_is_better=False,
            description="of the score against the true grade",
            compare="csv",
        ),
        Metric(
            "accuracy",
            "accuracy",
            needs="grades",
            compute=lambda p: float(np.mean(p.grades == p.y_true)),
            higher_is_better=True,
            description="the share graded exactly right",
            compare="table",
            plotted=True,
        ),
        Metric(
            "within1",
            "within-1",
            needs="grades",
            compute=lambda p: float(np.mean(np.abs(p.grades - p.y_true) <= 1)),
            higher_is_better=True,
            description="the share at most one grade off",
            compare="table",
            plotted=True,
        ),
        Metric(
            "grade_mae",
            "grade MAE",
            needs="grades",
            compute=lambda p: float(np.mean(np.abs(p.grades - p.y_true))),
            higher_is_better=False,
            description="the mean number of grades off",
            compare="table",
            plotted=True,
        ),
        Metric(
            "qwk",
            "QWK",
            needs="grades",
            compute=_qwk,
            higher_is_better=True,
            description="quadratic weighted kappa, 1 for perfect agreement and 0 for chance",
            compare="table",
            plotted=True,
        ),
        Metric(
            "r2",
            "R2",
            needs="continuous",
            compute=_r2,
            higher_is_better=True,
            description="the share of the true values' variance explained",
        ),
        Metric(
            "pearson",
            "Pearson",
            needs="continuous",
            compute=_pearson,
            higher_is_better=True,
            description="the correlation of prediction and truth",
        ),
        Metric(
            "mean_error",
            "mean error",
            needs="scores",
            compute=lambda p: float(np.mean(p.errors)),
            description="signed, predicted - true",
            signed=True,
            headline=False,
            per_grade=True,
        ),
        Metric(
            "precision",
            "precision",
            needs="grades",
            by_grade=_one_vs_rest("precision"),
            higher_is_better=True,
            description="of the images graded this grade, the share truly of it",
            headline=False,
            per_grade=True,
        ),
        Metric(
            "recall",
            "recall",
            needs="grades",
            by_grade=_one_vs_rest("recall"),
            higher_is_better=True,
            description="of the images truly of this grade, the share graded so (its accuracy)",
            headline=False,
            per_grade=True,
        ),
        Metric(
            "f1",
            "F1",
            needs="grades",
            by_grade=_one_vs_rest("f1"),
            higher_is_better=True,
            description="the harmonic mean of precision and recall",
            headline=False,
            per_grade=True,
        ),
        Metric(
            "coverage",
            "set coverage",
            needs="grade_sets",
            description="the share of grade sets holding the true grade",
            headline=False,
            compare="table",
            plotted=True,
        ),
        Metric(
            "set_size",
            "set size",
            needs="grade_sets",
            higher_is_better=False,
            description="the mean number of grades in a set",
            headline=False,
            compare="table",
            plotted=True,
        ),
        Metric(
            "train_seconds",
            "training seconds",
            needs="run",
            higher_is_better=False,
            description="the time the run took to train",
            digits=1,
            headline=False,
            compare="table",
        ),
    )
}
"""The metric table, by name, in the order the console, metrics.json and report.html show them."""


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to ``METRICS``: evaluate computes, saves and shows it, and compare as its row says.

    >>> within2 = register_metric(Metric("within2", "within-2", needs="grades", higher_is_better=True,
    ...     compute=lambda p: float(np.mean(np.abs(p.grades - p.y_true) <= 2)),
    ...     description="the share at most two grades off", compare="table", plotted=True))
    >>> m = ordinal_metrics([0, 1, 3, 3], [0.2, 1.6, 1.4, 0.4], ["L", "M", "S", "2S"])
    >>> m["within1"], m["within2"], compared()[:5]
    (0.5, 0.75, ('qwk', 'accuracy', 'within1', 'grade_mae', 'within2'))
    >>> unregister_metric("within2")

    Raises:
        ImgradeError: a metric of that name is in the table already.
    """
    if metric.name in METRICS:
        raise ImgradeError(f"a metric named {metric.name!r} is registered already: choose another name")
    METRICS[metric.name] = metric
    return metric


def unregister_metric(name: str) -> None:
    """Remove a metric added by :func:`register_metric` (in a notebook, a test)."""
    if name not in METRICS:
        raise ImgradeError(f"no metric named {name!r}: the metrics are {', '.join(METRICS)}")
    del METRICS[name]


def headline(graded: bool) -> tuple[str, ...]:
    """The metrics computed over all the images of a graded (or continuous) target, in table order.

    >>> headline(graded=True)
    ('n', 'mae', 'rmse', 'accuracy', 'within1', 'grade_mae', 'qwk')
    >>> headline(graded=False)
    ('n', 'mae', 'rmse', 'r2', 'pearson')
    """
    needs = ("scores", "grades") if graded else ("scores", "continuous")
    return tuple(name for name, m in METRICS.items() if m.headline and m.needs in needs)


def grade_decision_metrics() -> tuple[str, ...]:
    """The headline metrics of a grade decision: the columns that set graders side by side
    (decision rules, ensemble members, the domain gap, fewshot's stages).

    >>> grade_decision_metrics()
    ('accuracy', 'within1', 'grade_mae', 'qwk')
    """
    return tuple(name for name, m in METRICS.items() if m.headline and m.needs == "grades")


def per_grade_metrics() -> tuple[str, ...]:
    """The columns of the per-grade tables.

    >>> per_grade_metrics()
    ('n', 'mae', 'mean_error', 'precision', 'recall', 'f1')
    """
    return tuple(name for name, m in METRICS.items() if m.per_grade)


def compared(table_only: bool = False) -> tuple[str, ...]:
    """What compare scores for each run (results.csv, summary.csv), or only what its tables show.

    Compare ranks formulations by their grades: QWK, its default ``--metric``, leads, then the other
    grade metrics, then the rest in table order.

    >>> compared()
    ('qwk', 'accuracy', 'within1', 'grade_mae', 'mae', 'rmse', 'coverage', 'set_size', 'train_seconds')
    >>> compared(table_only=True)[4:]
    ('mae', 'coverage', 'set_size', 'train_seconds')
    """
    shown = ("table",) if table_only else ("table", "csv")
    names = [name for name, m in METRICS.items() if m.compare in shown]
    return tuple(sorted(names, key=lambda name: (name != "qwk", METRICS[name].needs != "grades")))


def plotted() -> tuple[str, ...]:
    """The box plots of compare's boxes.png, in the order of its tables."""
    return tuple(name for name in compared() if METRICS[name].plotted)


def describe(names) -> str:
    """One sentence on what ``names`` measure; neighbours that measure alike share a clause.

    >>> describe(["n", "mae", "rmse", "accuracy"])
    'MAE and RMSE: of the score against the true grade; accuracy: the share graded exactly right.'
    """
    described = [METRICS[name] for name in names if METRICS[name].description]
    clauses = [
        f"{' and '.join(m.label for m in group)}: {description}"
        for description, group in ((d, list(g)) for d, g in groupby(described, key=lambda m: m.description))
    ]
    return "; ".join(clauses) + "."


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
        The graded target's headline metrics of ``METRICS``: ``n``; ``mae``, ``rmse`` of ``score - true``; ``accuracy`` and ``within1`` (share with
        ``|rounded - true| <= 1``) of the rounded grades (or ``y_pred``); ``grade_mae``, the mean
        of ``|predicted grade - true|``; ``qwk`` (None where undefined, see
        :func:`quadratic_weighted_kappa`); ``confusion`` (list of lists, rows true); and
        ``per_grade``: ``{name: {"n", "mae", "mean_error", "precision", "recall", "f1"}}`` in
        grade order, None where undefined (a grade without samples; precision of a grade never
        predicted). Only plain ints, floats, None, lists and dicts.

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
    predictions = Predictions(y_true, scores, rounded, num_grades)
    metrics = {name: METRICS[name].compute(predictions) for name in headline(graded=True)}
    metrics["confusion"] = confusion_matrix(y_true, rounded, num_grades).tolist()
    by_grade = {name: METRICS[name].by_grade(predictions) for name in per_grade_metrics() if METRICS[name].by_grade}
    metrics["per_grade"] = {
        name: _per_grade(predictions.subset(y_true == k), {metric: values[k] for metric, values in by_grade.items()})
        for k, name in enumerate(grade_names)
    }
    return metrics


def _per_grade(predictions: Predictions, by_grade: dict) -> dict:
    """The per-grade metrics of one grade's images, with ``by_grade``'s values (computed over all the
    images) in their places; None where undefined (all but ``n`` and precision for a grade without images)."""
    if len(predictions) == 0:
        return {name: by_grade.get(name) for name in per_grade_metrics()} | {"n": 0}
    return {
        name: by_grade[name] if name in by_grade else METRICS[name].compute(predictions) for name in per_grade_metrics()
    }


def continuous_metrics(y_true, y_pred) -> dict:
    """Judge predictions of a continuous target.

    Returns:
        The continuous target's headline metrics of ``METRICS``: ``n``, ``mae``, ``rmse``, ``r2`` (``1 - SS_res / SS_tot``; None when the true values are
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
    predictions = Predictions(y_true, y_pred)
    return {name: METRICS[name].compute(predictions) for name in headline(graded=False)}


def _check_same_length(a: np.ndarray, b: np.ndarray) -> None:
    if len(a) != len(b):
        raise ImgradeError(f"true values and predictions differ in length: {len(a)} vs {len(b)}")
