"""Scores on the grade axis -> grade indexes, and grade sets as text."""

from __future__ import annotations

import math

import numpy as np

from imgrade.core.errors import ImgradeError


def round_to_grades(scores, num_grades: int) -> np.ndarray:
    """Round scores to the nearest grade index and clip into ``[0, num_grades - 1]``.

    Ties go up (``floor(score + 0.5)``), so 0.5 -> 1 and 1.5 -> 2, unlike ``np.round``'s
    round-half-to-even, which would send 0.5 to 0 and 2.5 to 2.

    >>> round_to_grades([-0.7, 0.49, 0.5, 1.5, 2.5, 9.3], num_grades=4)
    array([0, 0, 1, 2, 3, 3])
    """
    scores = np.asarray(scores, dtype=np.float64)
    if num_grades < 1:
        raise ValueError(f"num_grades must be at least 1, got {num_grades}")
    if not np.all(np.isfinite(scores)):
        bad = int(np.sum(~np.isfinite(scores)))
        raise ImgradeError(f"{bad} of {scores.size} scores are NaN or infinite; cannot round them to grades")
    return np.clip(np.floor(scores + 0.5), 0, num_grades - 1).astype(np.int64)


def rounding_cut_points(num_grades: int) -> list[float]:
    """The cut points of plain rounding, halfway between neighbouring grades.

    >>> rounding_cut_points(4)
    [0.5, 1.5, 2.5]
    """
    return [k + 0.5 for k in range(num_grades - 1)]


def grade_indices(values, num_grades: int, name: str) -> np.ndarray:
    """Whole grade indices in [0, num_grades) as int64, or an ImgradeError naming the bad value.

    >>> grade_indices([0, 2.0, 1], 3, "y_true").tolist()
    [0, 2, 1]
    """
    values = np.asarray(values).reshape(-1)
    if values.size and values.dtype.kind not in "iub":
        if values.dtype.kind != "f":
            raise ImgradeError(f"{name} must hold grade indices (numbers), got dtype {values.dtype}")
        whole = np.isfinite(values) & (values == np.round(values))
        if not np.all(whole):
            raise ImgradeError(
                f"{name} must hold whole grade indices, found {values[~whole][0]}: pass grade indices, not scores"
            )
    values = values.astype(np.int64)
    outside = (values < 0) | (values >= num_grades)
    if np.any(outside):
        raise ImgradeError(
            f"{name} uses grade index {int(values[outside][0])} but only {num_grades} grades are named "
            f"(indices 0..{num_grades - 1}): check the grade names match the data"
        )
    return values


def none_if_nan(value: float | None) -> float | None:
    """JSON-friendly: NaN becomes None."""
    return None if value is None or math.isnan(value) else float(value)


def format_set(row_mask, grade_names: list[str]) -> str:
    """One grade set as text, names in grade order joined by ``|``.

    >>> format_set([False, True, True, True], ["L", "M", "S", "2S"])
    'M|S|2S'
    """
    row_mask = np.asarray(row_mask).astype(bool).reshape(-1)
    if len(row_mask) != len(grade_names):
        raise ImgradeError(f"a grade set has {len(row_mask)} entries but {len(grade_names)} grades are named")
    return "|".join(name for name, kept in zip(grade_names, row_mask) if kept)
