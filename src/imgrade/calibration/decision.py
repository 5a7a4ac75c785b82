"""A calibration: how one way of grading (plain, or test-time augmented) turns scores into grades and sets.

``imgrade calibrate`` fits one per way of grading and keeps them in the run's checkpoint (and an
export carries the one it grades with). Everything that reads a calibration uses this type; the
plain dict exists only in the files (``to_dict`` / ``from_dict``). No torch here: the ONNX
runtime grades with it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from imgrade.calibration.conformal import Conformal, prediction_sets
from imgrade.calibration.thresholds import apply_thresholds
from imgrade.core.errors import CheckpointError

TUNED = "tuned"
"""``thresholds["kind"]`` of cut points kept because they beat the head's own rule out of fold."""


@dataclass(frozen=True)
class Calibration:
    """The cut-point choice and the conformal grade sets fitted on one way of grading.

    >>> c = Calibration.from_dict({"thresholds": {"kind": "tuned", "thresholds": [0.4, 1.6]}, "conformal": None})
    >>> c.decision, c.cut_points, c.grades(np.array([0.3, 1.0, 2.2]), native=None).tolist()
    ('tuned cut points', [0.4, 1.6], [0, 1, 2])
    >>> Calibration.from_dict(c.to_dict()) == c
    True
    """

    thresholds: dict[str, Any] | None = None
    """``ThresholdChoice.to_dict()``: the cut points, ``kind`` ("tuned" or the head's own rule),
    the objective, the cross-validation evidence and the reason, in one sentence."""
    conformal: Conformal | None = None
    """The grade sets' conformal fit; None where none could be fitted."""

    @classmethod
    def from_dict(cls, d: Any) -> Calibration | None:
        """The calibration a file holds (None for none).

        Raises:
            CheckpointError: ``d`` is not a calibration imgrade wrote.
        """
        if d is None:
            return None
        if not isinstance(d, dict) or not isinstance(d.get("thresholds"), dict | None):
            raise CheckpointError("the checkpoint's calibration is not one imgrade wrote: recalibrate the run")
        found = d.get("conformal")
        return cls(d.get("thresholds"), Conformal.from_dict(found) if found else None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON- and pickle-safe values, the layout of checkpoints and ONNX metadata."""
        return {"thresholds": self.thresholds, "conformal": self.conformal.to_dict() if self.conformal else None}

    @property
    def tuned(self) -> bool:
        """Whether tuned cut points decide the grade (else the head's own rule does)."""
        return bool(self.thresholds) and self.thresholds.get("kind") == TUNED

    @property
    def cut_points(self) -> list[float] | None:
        """The tuned cut points on the score axis, or None when the head's own rule decides."""
        return [float(t) for t in self.thresholds["thresholds"]] if self.tuned else None

    @property
    def decision(self) -> str:
        """Which decision is used: ``"tuned cut points"`` or ``"the head's rule"``."""
        return "tuned cut points" if self.tuned else "the head's rule"

    @property
    def reason(self) -> str | None:
        """Why that decision was kept, in one sentence."""
        return (self.thresholds or {}).get("reason")

    def grades(self, scores: np.ndarray, native: np.ndarray | None) -> np.ndarray:
        """Grade indexes (N,): the tuned cut points applied to ``scores``, else ``native`` (the head's own)."""
        if self.tuned:
            return apply_thresholds(scores, np.asarray(self.cut_points))
        assert native is not None, "a graded model always gives its own decision"
        return native

    def sets(self, scores: np.ndarray, probabilities: np.ndarray | None, num_grades: int) -> np.ndarray | None:
        """Grade sets (N, K) bool with the calibrated coverage; None without a conformal fit."""
        if self.conformal is None:
            return None
        return prediction_sets(self.conformal, scores=scores, probabilities=probabilities, num_grades=num_grades)
