"""Scores on the grade axis -> grade indexes."""

from __future__ import annotations

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
