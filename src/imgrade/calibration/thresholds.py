"""Cut points that turn a score on the grade axis into a grade, tuned on validation predictions.

Plain rounding (cut points 0.5, 1.5, ...) or cut points tuned to maximise QWK, accuracy or -MAE
(the Kaggle "OptimizedRounder"). Tuned cut points overfit a small split, so
:func:`choose_thresholds` keeps them only when they beat the plain decision out of fold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from imgrade.calibration._checks import _check_objective, _check_pairs, _check_same_length, _finite_scores
from imgrade.core.errors import ConfigError, ImgradeError
from imgrade.core.grades import grade_indices, none_if_nan
from imgrade.evaluation.metrics import quadratic_weighted_kappa

TUNING_MARGIN = 0.005
"""Tuned cut points must beat rounding out of fold by more than this and by more than two standard
errors of the per-fold gains (about a one-sided paired t-test at 5% for 5 folds). QWK and accuracy
are on a 0..1 scale and MAE in grades, so 0.005 is half a point of accuracy or 1/200 of a grade."""
MIN_GAP = 0.1
"""Tuned cut points stay at least this far apart on the score axis (in grades; rounding's are 1.0
apart), so every grade keeps a band of scores that reads as it. Fitted to maximise QWK or accuracy
on a small split, cut points otherwise squeeze a rare grade to nothing (two equal cut points) and
the model can never predict it. A tenth of rounding's band is small enough to bind little else
(a grade that some validation scores read as rarely needs a narrower band) and large enough to
keep neighbouring cut points, and the plot labels placed at them, visibly apart."""
_LINE_SEARCH_CANDIDATES = 64
# A hair over MIN_GAP where a cut point is placed at the limit, so float rounding of t + MIN_GAP
# cannot leave np.diff a few ulps short of MIN_GAP.
_PLACED_GAP = MIN_GAP * (1 + 1e-9)


def apply_thresholds(scores, thresholds) -> np.ndarray:
    """Grade = the number of cut points at or below the score, so a score on a cut point goes up.

    >>> apply_thresholds([-1.0, 0.5, 1.49, 1.5, 7.0], [0.5, 1.5])
    array([0, 1, 1, 2, 2])
    """
    scores = _finite_scores(scores)
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(thresholds)) or np.any(np.diff(thresholds) < 0):
        raise ImgradeError(
            f"cut points must be finite and ascending, got {thresholds.tolist()}: sort them or refit them with fit_thresholds"
        )
    return np.searchsorted(thresholds, scores, side="right").astype(np.int64)


def default_thresholds(num_grades: int) -> np.ndarray:
    """Plain rounding as cut points: 0.5, 1.5, ..., K - 1.5 (ties go up, like ``round_to_grades``).

    >>> default_thresholds(4)
    array([0.5, 1.5, 2.5])
    >>> apply_thresholds([0.5, 2.49, 2.5], default_thresholds(4))
    array([1, 2, 3])
    """
    if num_grades < 1:
        raise ImgradeError(f"num_grades must be at least 1, got {num_grades}: name at least one grade")
    return np.arange(num_grades - 1, dtype=np.float64) + 0.5


def objective_value(y_true, y_pred, num_grades: int, objective: str) -> float:
    """How good predicted grades are; higher is better: QWK, accuracy, or minus the mean |pred - true|.

    QWK is undefined (nan) when, e.g., every true and predicted grade is the same one; it counts as
    0.0 (chance level) here, so such a cross-validation fold neither wins nor turns a mean into nan.

    >>> objective_value([0, 1, 2, 2], [0, 2, 2, 1], 3, "accuracy")
    0.5
    >>> objective_value([0, 1, 2, 2], [0, 2, 2, 1], 3, "mae")
    -0.5
    >>> objective_value([1, 1], [1, 1], 3, "qwk")
    0.0
    """
    _check_objective(objective)
    y_true = grade_indices(y_true, num_grades, "y_true")
    y_pred = grade_indices(y_pred, num_grades, "y_pred")
    _check_same_length(y_true, y_pred, "predicted grades")
    if len(y_true) == 0:
        raise ImgradeError("no samples to score: y_true and y_pred are empty")
    return _objective(y_true, y_pred, num_grades, objective)


def fit_thresholds(y_true, scores, num_grades: int, objective: str = "qwk") -> np.ndarray:
    """Cut points (K - 1,) that maximise the objective on these scores (the Kaggle OptimizedRounder).

    Starts from the rounding midpoints and runs Nelder-Mead twice (a simplex of 0.5 grade, then a
    restart with 0.2 from the best point). The objective is piecewise constant in the cut points,
    so Nelder-Mead often stalls on a plateau; a coordinate-wise line search over the gaps between
    neighbouring scores (each cut point in turn, between its neighbours) finishes the job and puts
    every cut point in the middle of a gap. Cut points stay at least :data:`MIN_GAP` apart, so every
    grade remains reachable; a rare grade the objective would rather never predict keeps a narrow
    band. Deterministic, strictly ascending, and never worse on the given data than the midpoints,
    which it returns when nothing beats them within that constraint.

    >>> y = [0, 0, 1, 1, 2, 2]
    >>> scores = [0.3, 0.6, 1.3, 1.7, 2.4, 2.6]   # each grade reads about 0.4 high
    >>> apply_thresholds(scores, default_thresholds(3)).tolist()
    [0, 1, 1, 2, 2, 2]
    >>> fit_thresholds(y, scores, 3, "accuracy").round(2).tolist()
    [0.95, 2.05]
    """
    from scipy.optimize import minimize  # here, not at the top: serving imports this module without scipy

    _check_objective(objective)
    y_true, scores = _check_pairs(y_true, scores, num_grades)
    start = default_thresholds(num_grades)
    if num_grades < 2 or len(y_true) == 0:
        return start

    def value(thresholds: np.ndarray) -> float:
        grades = np.searchsorted(thresholds, scores, side="right")
        return _objective(y_true, grades, num_grades, objective)

    best, best_value = start, value(start)
    start_value = best_value
    for step in (0.5, 0.2):
        simplex = np.vstack([best, best + step * np.eye(len(best))])  # (K, K - 1)
        # Nelder-Mead knows no constraints: it scores every point where the gap rule puts it.
        result = minimize(
            lambda t: -value(_spread(t)),
            best,
            method="Nelder-Mead",
            options={"initial_simplex": simplex, "xatol": 1e-3, "fatol": 1e-9, "maxiter": 200 * len(best)},
        )
        candidate = _spread(result.x)
        candidate_value = value(candidate)
        if candidate_value > best_value:
            best, best_value = candidate, candidate_value
    best, best_value = _line_search(best, best_value, scores, value)
    if not best_value > start_value:
        return start
    best = _centre_in_gaps(best, np.unique(scores))
    # Every step above keeps the gap; this is the promise to the caller, kept even if one did not.
    return best if has_min_gap(best) else start


def has_min_gap(thresholds) -> bool:
    """True when the cut points ascend by at least :data:`MIN_GAP`, so every grade has scores of its own.

    >>> has_min_gap([0.5, 1.5]), has_min_gap([2.362, 2.362, 3.063])
    (True, False)
    """
    return bool(np.all(np.diff(np.asarray(thresholds, dtype=np.float64)) >= MIN_GAP))


def _spread(thresholds: np.ndarray) -> np.ndarray:
    """Sorted, then each cut point pushed up to at least ``_PLACED_GAP`` above the one before it."""
    spread = np.sort(np.asarray(thresholds, dtype=np.float64))
    for j in range(1, len(spread)):
        spread[j] = max(spread[j], spread[j - 1] + _PLACED_GAP)
    return spread


def _centre_in_gaps(thresholds: np.ndarray, unique_scores: np.ndarray) -> np.ndarray:
    """Spread the cut points that share a gap between two neighbouring scores evenly across it.

    No score changes grade, so the objective is unchanged, but a new score near a cut point is
    as far as possible from being misgraded by an arbitrary Nelder-Mead position. A lone cut point
    goes to the middle of its gap; several in one gap (a grade no validation score reads as) split
    it in equal parts. A group whose even spread would come closer than MIN_GAP to a neighbour
    stays where the search left it.
    """
    centred = thresholds.copy()
    gap_of = np.searchsorted(unique_scores, thresholds, side="left")  # the score at or above each cut point
    j = 0
    while j < len(thresholds):
        group = np.flatnonzero(gap_of == gap_of[j])  # contiguous: cut points ascend
        g = gap_of[j]
        j = group[-1] + 1
        if g == 0 or g == len(unique_scores):
            continue  # beyond the lowest or highest score: no gap to centre in
        low, high = unique_scores[g - 1], unique_scores[g]
        spread = low + (high - low) * np.arange(1, len(group) + 1) / (len(group) + 1)
        before = centred[group[0] - 1] if group[0] > 0 else -np.inf
        after = thresholds[j] if j < len(thresholds) else np.inf
        if has_min_gap(np.concatenate([[before], spread, [after]])):
            centred[group] = spread
    return centred


def _line_search(thresholds: np.ndarray, current: float, scores: np.ndarray, value, sweeps: int = 3):
    """Move one cut point at a time to the gap midpoint that scores best; stop when a sweep gains nothing.

    A gap midpoint is taken between the scores inside the cut point's room, and that room's edges
    (MIN_GAP from its neighbours), so a move never brings two cut points closer than MIN_GAP.
    """
    thresholds = thresholds.copy()
    unique_scores = np.unique(scores)
    for _ in range(sweeps):
        improved = False
        for j in range(len(thresholds)):
            # Room for cut point j: at least MIN_GAP from each neighbour.
            low = thresholds[j - 1] + _PLACED_GAP if j > 0 else -np.inf
            high = thresholds[j + 1] - _PLACED_GAP if j + 1 < len(thresholds) else np.inf
            if low > high:
                continue
            inside = unique_scores[(unique_scores > low) & (unique_scores < high)]
            left = low if np.isfinite(low) else (inside[0] if inside.size else thresholds[j]) - 1.0
            right = high if np.isfinite(high) else (inside[-1] if inside.size else thresholds[j]) + 1.0
            points = np.concatenate([[left], inside, [right]])
            candidates = (points[:-1] + points[1:]) / 2
            if len(candidates) > _LINE_SEARCH_CANDIDATES:
                picks = np.linspace(0, len(candidates) - 1, _LINE_SEARCH_CANDIDATES).round().astype(int)
                candidates = candidates[np.unique(picks)]
            trial = thresholds.copy()
            values = []
            for c in candidates:
                trial[j] = c
                values.append(value(trial))
            values = np.asarray(values)
            if values.max() > current:
                # Among equally good gaps take the one nearest the current cut point: the smallest move.
                winners = np.flatnonzero(values == values.max())
                pick = winners[np.argmin(np.abs(candidates[winners] - thresholds[j]))]
                thresholds[j], current, improved = candidates[pick], float(values[pick]), True
        if not improved:
            break
    return thresholds, current


@dataclass
class ThresholdChoice:
    """Tuned cut points or plain rounding, with the cross-validation evidence behind the choice."""

    thresholds: list[float]
    """The cut points to use: tuned ones, or the midpoints 0.5, 1.5, ... when rounding was kept."""
    kind: str
    """``"tuned"`` or ``"rounding"``."""
    objective: str
    """One of OBJECTIVES; the cv values below are :func:`objective_value` (higher is better, -MAE)."""
    cv_tuned: float
    """Mean out-of-fold objective of tuned cut points; nan when cross-validation did not run."""
    cv_rounding: float
    """Mean out-of-fold objective of plain rounding on the same folds; nan when it did not run."""
    folds: int
    reason: str
    """One sentence for the user: which was kept and why."""

    def to_dict(self) -> dict:
        """Plain JSON- and pickle-safe values; nan becomes None."""
        return {
            "thresholds": [float(t) for t in self.thresholds],
            "kind": self.kind,
            "objective": self.objective,
            "cv_tuned": none_if_nan(self.cv_tuned),
            "cv_rounding": none_if_nan(self.cv_rounding),
            "folds": int(self.folds),
            "reason": self.reason,
        }


def choose_thresholds(
    y_true,
    scores,
    num_grades: int,
    objective: str = "qwk",
    folds: int = 5,
    seed: int = 0,
    baseline=None,
    baseline_name: str = "rounding",
) -> ThresholdChoice:
    """Keep tuned cut points only when they beat plain rounding out of fold on the validation split.

    ``baseline`` (optional) is the model's own grade decision per image (argmax for a classifier,
    the rank count for CORAL/CORN); tuned cut points must then beat that instead of rounding.

    The validation predictions are split into ``folds`` folds (seeded, stratified by grade); for each
    fold the cut points are fitted on the other folds and scored on it, next to rounding on the same
    fold. Tuned cut points (refitted on all the data) are kept only when their mean out-of-fold
    objective beats rounding's by more than ``max(TUNING_MARGIN, two standard errors of the per-fold
    gains)``; otherwise, and with fewer than ``2 * folds`` images or a single grade present, rounding
    is kept. ``reason`` says which and why.

    >>> choice = choose_thresholds([0, 1, 2], [0.1, 1.2, 1.9], 3)
    >>> choice.kind, choice.thresholds
    ('rounding', [0.5, 1.5])
    >>> choice.reason
    'kept plain rounding: 3 validation images are too few to tune cut points (tuning needs at least 10, 2 per fold for 5 folds)'
    """
    _check_objective(objective)
    if folds < 2:
        raise ConfigError(f"calibrate.folds {folds} must be at least 2: set --threshold-folds")
    y_true, scores = _check_pairs(y_true, scores, num_grades)
    rounding = default_thresholds(num_grades)
    baseline = apply_thresholds(scores, rounding) if baseline is None else np.asarray(baseline, dtype=np.int64)
    n = len(y_true)
    nan = float("nan")
    plain = "plain rounding" if baseline_name == "rounding" else baseline_name

    def keep_rounding(why: str, cv_tuned: float = nan, cv_rounding: float = nan) -> ThresholdChoice:
        return ThresholdChoice(
            rounding.tolist(), "rounding", objective, cv_tuned, cv_rounding, folds, f"kept {plain}: {why}"
        )

    if num_grades < 2:
        return keep_rounding("a single grade needs no cut points")
    if n < 2 * folds:
        return keep_rounding(
            f"{n} validation images are too few to tune cut points (tuning needs at least {2 * folds}, 2 per fold for {folds} folds)"
        )
    present = np.unique(y_true)
    if len(present) < 2:
        return keep_rounding(
            f"every validation image has grade {int(present[0])}, so there is nothing to tune cut points on"
        )

    fold_of = _stratified_folds(y_true, folds, seed)
    tuned_values, rounding_values = [], []
    for fold in range(folds):
        held = fold_of == fold
        tuned = fit_thresholds(y_true[~held], scores[~held], num_grades, objective)
        tuned_values.append(_objective(y_true[held], apply_thresholds(scores[held], tuned), num_grades, objective))
        rounding_values.append(_objective(y_true[held], baseline[held], num_grades, objective))
    gains = np.asarray(tuned_values) - np.asarray(rounding_values)
    cv_tuned, cv_rounding = float(np.mean(tuned_values)), float(np.mean(rounding_values))
    # Two standard errors, not one: in simulations one let tuning win on pure-noise scores in ~1 draw of 5.
    margin = max(TUNING_MARGIN, 2 * float(np.std(gains, ddof=1) / math.sqrt(folds)))
    scored = (
        f"{_describe(objective, cv_tuned)} out of fold vs {_describe(objective, cv_rounding, False)} "
        f"for {baseline_name} ({folds} folds of {n} validation images)"
    )
    if not float(np.mean(gains)) > margin:
        if float(np.mean(gains)) > 0:
            scored += f", a gain below the {margin:.3f} margin that fold-to-fold noise allows"
        return keep_rounding(f"tuned cut points scored {scored}", cv_tuned, cv_rounding)
    thresholds = fit_thresholds(y_true, scores, num_grades, objective)
    if np.array_equal(thresholds, rounding):
        why = f"tuned cut points scored {scored}, but refitted on all {n} images they did not beat the midpoints"
        return keep_rounding(why, cv_tuned, cv_rounding)
    return ThresholdChoice(
        thresholds.tolist(),
        "tuned",
        objective,
        cv_tuned,
        cv_rounding,
        folds,
        f"using tuned cut points: they scored {scored}",
    )


def _stratified_folds(y_true: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index per image: shuffled within each grade, then dealt round-robin grade by grade."""
    order = np.random.default_rng(seed).permutation(len(y_true))
    order = order[np.argsort(y_true[order], kind="stable")]
    fold_of = np.empty(len(y_true), dtype=np.int64)
    fold_of[order] = np.arange(len(y_true)) % folds
    return fold_of


def _describe(objective: str, value: float, name: bool = True) -> str:
    label = {"qwk": "QWK", "accuracy": "accuracy", "mae": "MAE"}[objective]
    text = {"qwk": f"{value:.3f}", "accuracy": f"{value:.1%}", "mae": f"{abs(value):.3f} grades"}[objective]
    return f"{label} {text}" if name else text


def _objective(y_true: np.ndarray, y_pred: np.ndarray, num_grades: int, objective: str) -> float:
    if objective == "accuracy":
        return float(np.mean(y_pred == y_true))
    if objective == "mae":
        return -float(np.mean(np.abs(y_pred - y_true)))
    kappa = quadratic_weighted_kappa(y_true, y_pred, num_grades)
    return 0.0 if math.isnan(kappa) else kappa
