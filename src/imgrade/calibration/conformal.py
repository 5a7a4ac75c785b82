"""Grade sets with a coverage guarantee, by split conformal prediction on validation predictions.

Angelopoulos & Bates, "A Gentle Introduction to Conformal Prediction and Distribution-Free
Uncertainty Quantification" (2021): validation errors become grade sets that hold the true grade
with probability at least ``1 - alpha`` for new images exchangeable with the validation ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from imgrade.calibration._checks import _check_alpha, _check_probabilities, _check_same_length, _finite_scores
from imgrade.core.errors import CheckpointError, DataError, ImgradeError
from imgrade.core.grades import grade_indices, round_to_grades

CONFORMAL_KINDS = ("interval", "aps")
SET_SLACK = 1e-4
"""How far past ``qhat`` a grade still joins a set. The validation image that fixed ``qhat`` lies
exactly on it, and PyTorch and ONNX Runtime compute the same score a few ulps apart: without the
slack that image's set could differ between a run and its exported file. Sets only grow, so the
coverage guarantee holds."""


@dataclass
class Conformal:
    """A fitted split-conformal calibration: sets built with it hold the true grade w.p. >= 1 - alpha."""

    kind: str
    """``"interval"`` (grades within qhat of the score, any head) or ``"aps"`` (from grade probabilities)."""
    alpha: float
    qhat: float
    """The calibrated threshold on the nonconformity score: |score - grade|, or APS probability mass."""
    n: int
    """Calibration (validation) images it was fitted on."""

    @property
    def threshold(self) -> float:
        """The largest nonconformity a grade in a set may have: ``qhat`` plus :data:`SET_SLACK`."""
        return self.qhat + SET_SLACK

    def to_dict(self) -> dict:
        return {"kind": self.kind, "alpha": float(self.alpha), "qhat": float(self.qhat), "n": int(self.n)}

    @classmethod
    def from_dict(cls, d) -> Conformal:
        missing = [key for key in ("kind", "alpha", "qhat", "n") if not isinstance(d, dict) or key not in d]
        if missing or d["kind"] not in CONFORMAL_KINDS:
            problem = f"lacks {missing}" if missing else f"has kind {d['kind']!r}, not one of {CONFORMAL_KINDS}"
            raise CheckpointError(f"the checkpoint's conformal calibration {problem}: recalibrate or retrain the run")
        return cls(str(d["kind"]), float(d["alpha"]), float(d["qhat"]), int(d["n"]))


def min_calibration_size(alpha: float) -> int:
    """Fewest calibration images for which the conformal quantile exists: ceil((n+1)(1-alpha)) <= n.

    >>> min_calibration_size(0.1), min_calibration_size(0.05), min_calibration_size(0.3)
    (9, 19, 3)
    """
    _check_alpha(alpha)
    # ceil((n+1)(1-alpha)) <= n  <=>  (n+1)(1-alpha) <= n  <=>  n >= (1-alpha)/alpha; the 1e-9 absorbs float error.
    return max(1, math.ceil((1 - alpha) / alpha - 1e-9))


def fit_conformal(y_true, *, scores=None, probabilities=None, alpha: float = 0.1) -> Conformal:
    """Split conformal calibration on validation predictions (Angelopoulos & Bates 2021).

    With ``probabilities`` (N, K) it fits APS (adaptive prediction sets): an image's nonconformity is
    the probability mass of the grades ranked at or above its true grade (sorted by falling
    probability, ties by grade; the non-randomised, slightly conservative version). With ``scores``
    only it fits an interval: nonconformity ``|score - true grade|``. Probabilities win when both
    are given. ``qhat`` is the k-th smallest nonconformity with ``k = ceil((n+1)(1-alpha))``, i.e.
    the empirical ``k/n`` quantile taken as an order statistic (numpy's ``method="inverted_cdf"``);
    ``method="higher"`` at ``k/n`` would take the (k+1)-th for many n, more conservative than needed.

    Raises:
        ImgradeError: alpha outside (0, 1), fewer than ``min_calibration_size(alpha)`` images, neither
            scores nor probabilities, mismatched lengths, or bad values.

    >>> c = fit_conformal([0, 1, 2, 1, 0, 2, 1, 1, 0], scores=[0.1, 1.2, 1.7, 0.6, 0.0, 2.2, 1.0, 1.9, 0.3], alpha=0.2)
    >>> c.kind, round(c.qhat, 6), c.n   # 8th smallest of |score - y|: 0, .0, .1, .2, .2, .3, .3, .4, .9
    ('interval', 0.4, 9)
    """
    _check_alpha(alpha)
    if probabilities is not None:
        probabilities = _check_probabilities(probabilities, None)
        y_true = grade_indices(y_true, probabilities.shape[1], "y_true")
        _check_same_length(y_true, probabilities, "probability rows")
        kind = "aps"
        nonconformity = _aps_mass(probabilities)[np.arange(len(y_true)), y_true]
    elif scores is not None:
        scores = _finite_scores(scores)
        y_true = _finite_scores(y_true, "y_true")
        _check_same_length(y_true, scores, "scores")
        kind = "interval"
        nonconformity = np.abs(scores - y_true)
    else:
        raise ImgradeError("fit_conformal needs scores or probabilities, got neither: pass the validation predictions")
    n = len(y_true)
    need = min_calibration_size(alpha)
    if n < need:
        raise DataError(
            f"alpha {alpha} needs at least {need} validation images for grade sets with a coverage guarantee, "
            f"got {n}: raise --alpha or enlarge the validation split"
        )
    rank = min(n, math.ceil((n + 1) * (1 - alpha) - 1e-9))
    qhat = float(np.sort(nonconformity)[rank - 1])
    return Conformal(kind, float(alpha), qhat, n)


def prediction_sets(conformal: Conformal, *, scores=None, probabilities=None, num_grades: int) -> np.ndarray:
    """Grade sets (N, K) bool, never empty; which input is used follows ``conformal.kind``.

    interval: the grades k with ``|score - k| <= qhat`` (plus :data:`SET_SLACK`), or the nearest grade when none is that close.
    aps: the grades whose APS mass (see :func:`fit_conformal`) is <= qhat, i.e. the top-probability
    grades while their cumulative mass stays within qhat, or the top grade alone when even it is
    above. This is the Gentle Introduction's set; also adding the grade that crosses qhat would pair
    the non-randomised score with an extra grade per image and cover ~99.5% instead of ~90% at
    alpha 0.1 (one grade larger on average with 5 grades).

    >>> prediction_sets(Conformal("interval", 0.1, 0.8, 20), scores=[1.3, 9.0], num_grades=4).astype(int)
    array([[0, 1, 1, 0],
           [0, 0, 0, 1]])
    >>> prediction_sets(Conformal("aps", 0.1, 0.95, 20), probabilities=[[0.1, 0.6, 0.3], [0.02, 0.03, 0.95]], num_grades=3).astype(int)
    array([[0, 1, 1],
           [0, 0, 1]])
    """
    if conformal.kind == "aps":
        if probabilities is None:
            raise ImgradeError(
                "these grade sets were calibrated on grade probabilities (aps) but none were given: pass probabilities"
            )
        probabilities = _check_probabilities(probabilities, num_grades)
        sets = _aps_mass(probabilities) <= conformal.threshold  # (N, K)
        sets[np.arange(len(sets)), np.argmax(probabilities, axis=1)] = True
        return sets
    if conformal.kind != "interval":
        raise ImgradeError(f"conformal kind {conformal.kind!r} is not one of {CONFORMAL_KINDS}: recalibrate")
    if scores is None:
        raise ImgradeError("interval grade sets need scores, got none: pass the model's scores")
    scores = _finite_scores(scores)
    sets = np.abs(scores[:, None] - np.arange(num_grades)[None, :]) <= conformal.threshold  # (N, K)
    empty = ~sets.any(axis=1)
    sets[np.flatnonzero(empty), round_to_grades(scores[empty], num_grades)] = True
    return sets


def _aps_mass(probabilities: np.ndarray) -> np.ndarray:
    """(N, K): per image and grade, the probability mass of the grades ranked at or above it.

    Fitting and prediction both go through here, so a test image identical to a calibration one
    gets bit-identical masses and the coverage guarantee survives float rounding.
    """
    order = np.argsort(-probabilities, axis=1, kind="stable")  # (N, K) grades by falling probability, ties by grade
    cumulative = np.cumsum(np.take_along_axis(probabilities, order, axis=1), axis=1)  # (N, K) by rank
    mass = np.empty_like(cumulative)
    np.put_along_axis(mass, order, cumulative, axis=1)
    return mass


def set_summary(sets, y_true, grade_names: list[str]) -> dict:
    """Coverage (share of sets holding the true grade) and mean set size, overall and per true grade.

    >>> s = set_summary([[1, 1, 0], [0, 1, 0], [0, 1, 1]], [0, 2, 2], ["L", "M", "S"])
    >>> s["coverage"], s["mean_size"], s["per_grade"]["S"], s["per_grade"]["M"]
    (0.6666666666666666, 1.6666666666666667, {'n': 2, 'coverage': 0.5, 'mean_size': 1.5}, {'n': 0, 'coverage': None, 'mean_size': None})
    """
    sets = np.asarray(sets).astype(bool)
    num_grades = len(grade_names)
    if sets.ndim != 2 or sets.shape[1] != num_grades:
        raise ImgradeError(
            f"grade sets have shape {sets.shape} but {num_grades} grades are named: pass (N, {num_grades}) sets"
        )
    y_true = grade_indices(y_true, num_grades, "y_true")
    _check_same_length(y_true, sets, "grade sets")
    covered = sets[np.arange(len(y_true)), y_true]
    sizes = sets.sum(axis=1)

    def summary(mask: np.ndarray) -> dict:
        count = int(mask.sum())
        if count == 0:
            return {"n": 0, "coverage": None, "mean_size": None}
        return {"n": count, "coverage": float(covered[mask].mean()), "mean_size": float(sizes[mask].mean())}

    overall = summary(np.ones(len(y_true), dtype=bool))
    per_grade = {name: summary(y_true == k) for k, name in enumerate(grade_names)}
    return {"coverage": overall["coverage"], "mean_size": overall["mean_size"], "per_grade": per_grade}
