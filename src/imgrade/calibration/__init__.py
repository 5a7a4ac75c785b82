"""Thresholds and conformal grade sets from validation scores (pure functions).

Every model gives a score on the grade axis (0 = first grade, e.g. 2.7); some also give grade
probabilities (N, K). From the validation split's predictions, :mod:`.thresholds` decides which
cut points turn a score into a grade, and :mod:`.conformal` which grades an image could be.
"""

from imgrade.calibration._checks import OBJECTIVES
from imgrade.calibration.conformal import (
    CONFORMAL_KINDS,
    Conformal,
    fit_conformal,
    min_calibration_size,
    prediction_sets,
    set_summary,
)
from imgrade.calibration.thresholds import (
    MIN_GAP,
    TUNING_MARGIN,
    ThresholdChoice,
    apply_thresholds,
    choose_thresholds,
    default_thresholds,
    fit_thresholds,
    has_min_gap,
    objective_value,
)

__all__ = [
    "CONFORMAL_KINDS",
    "MIN_GAP",
    "OBJECTIVES",
    "TUNING_MARGIN",
    "Conformal",
    "ThresholdChoice",
    "apply_thresholds",
    "choose_thresholds",
    "default_thresholds",
    "fit_conformal",
    "fit_thresholds",
    "has_min_gap",
    "min_calibration_size",
    "objective_value",
    "prediction_sets",
    "set_summary",
]
