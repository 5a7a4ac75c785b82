"""Input checks shared by the cut-point and conformal code."""

from __future__ import annotations

import numbers

import numpy as np

from imgrade.config.sections import OBJECTIVES
from imgrade.core.errors import ConfigError, ImgradeError
from imgrade.core.grades import grade_indices


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}: set --objective")


def _check_alpha(alpha: float) -> None:
    if not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise ConfigError(f"--alpha {alpha} must be between 0 and 1 (exclusive), e.g. 0.1")


def _finite_scores(values, name: str = "scores") -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(values)):
        bad = int(np.sum(~np.isfinite(values)))
        raise ImgradeError(f"{bad} of {values.size} {name} are NaN or infinite: check the model's outputs")
    return values


def _check_pairs(y_true, scores, num_grades: int) -> tuple[np.ndarray, np.ndarray]:
    y_true = grade_indices(y_true, num_grades, "y_true")
    scores = _finite_scores(scores)
    _check_same_length(y_true, scores, "scores")
    return y_true, scores


def _check_probabilities(probabilities, num_grades: int | None) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or (num_grades is not None and probabilities.shape[1] != num_grades):
        want = f"(N, {num_grades})" if num_grades is not None else "(N, num_grades)"
        raise ImgradeError(
            f"grade probabilities have shape {probabilities.shape}, expected {want}: pass one row per image"
        )
    sums = probabilities.sum(axis=1)
    bad = ~np.isfinite(sums) | (np.abs(sums - 1) > 1e-3) | np.any(probabilities < -1e-6, axis=1)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ImgradeError(
            f"grade probabilities of image {i} are {probabilities[i].tolist()} (sum {sums[i]:.4g}): "
            "each row must be non-negative and sum to 1; pass softmax outputs"
        )
    return probabilities


def _check_same_length(y_true: np.ndarray, other: np.ndarray, what: str) -> None:
    if len(y_true) != len(other):
        raise ImgradeError(f"{len(y_true)} true grades but {len(other)} {what}: pass one per validation image")
