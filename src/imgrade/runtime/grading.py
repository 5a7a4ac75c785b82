"""What every grader does once the network has spoken: grades, grade sets and per-image records.

This module never imports torch: the ONNX runtime, ``predict --runtime onnx`` and the HTTP
service grade photos with NumPy, Pillow and ONNX Runtime alone. The two back ends (PyTorch in
``predictor.py``, ONNX Runtime in ``onnx.py``) only differ in :meth:`Grader.outputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from imgrade.calibrate import Conformal, apply_thresholds, prediction_sets
from imgrade.core.grades import format_set
from imgrade.core.registry import head_entry, task_names

CPU_BATCH = 32
"""Images per forward pass on a CPU. Passes of 32 keep each layer's activations in the cache:
graded 256 at a time, ONNX Runtime gave 2216 images/s in passes of 32 against 1773 in one pass
of 256 (2 cores; benchmarks/throughput.py)."""
GPU_BATCH = 256
"""Images per forward pass on a GPU, where larger passes fill the device."""


@dataclass
class Outputs:
    """What the network says about N images."""

    scores: np.ndarray  # (N,) on the grade axis (or the continuous target)
    probabilities: np.ndarray | None  # (N, K) for heads with grade probabilities; None for regression
    native: np.ndarray | None  # (N,) the head's own grade decision; None for a continuous target


class Grader:
    """Turns uint8 RGB images (N, H, W, 3) into scores, grades and grade sets.

    Subclasses set the attributes below and implement :meth:`outputs`; everything after the
    network (cut points, conformal sets, records) lives here, once.
    """

    runtime: str = "?"
    """``"torch"`` or ``"onnx"``."""
    task: str
    grade_names: list[str] | None
    image_size: int
    calibration: dict | None
    """``{"thresholds": ThresholdChoice.to_dict(), "conformal": Conformal.to_dict()}`` or None."""
    version: str
    """The imgrade version that trained (or exported) the model."""
    model_card: str | None = None
    """The model card (Markdown: data, recipe, test metrics, limits); None for a model without one."""

    def outputs(self, images: np.ndarray, batch_size: int | None = None) -> Outputs:
        """The network's outputs for uint8 images (N, S, S, 3), ``batch_size`` per forward pass
        (default: ``CPU_BATCH`` or ``GPU_BATCH``, by where the network runs)."""
        raise NotImplementedError

    def prepare_for_serving(self) -> None:
        """Spend set-up time (a second or so) to make each later small call faster.

        For a long-lived process that grades a few photos per call (``imgrade serve``); a
        one-off ``predict`` would not earn the time back. Nothing to do by default.
        """

    # ----------------------------------------------------------------------------- calibration

    @property
    def thresholds(self) -> dict | None:
        """The calibration's cut-point choice (``ThresholdChoice.to_dict()``), if calibrated."""
        return (self.calibration or {}).get("thresholds")

    @property
    def conformal(self) -> Conformal | None:
        found = (self.calibration or {}).get("conformal")
        return Conformal.from_dict(found) if found else None

    @property
    def cut_points(self) -> list[float] | None:
        """The cut points on the score axis that decide the grade, or None when the head decides
        another way (argmax, or the ordinal heads' own count of passed thresholds)."""
        if self.grade_names is None:
            return None
        choice = self.thresholds
        if choice and choice.get("kind") == "tuned":
            return [float(t) for t in choice["thresholds"]]
        if self.task == "regression":
            return [k + 0.5 for k in range(len(self.grade_names) - 1)]
        return None

    @property
    def rule(self) -> str | None:
        """How a score becomes a grade, in words."""
        if self.grade_names is None:
            return None
        choice = self.thresholds
        if choice and choice.get("kind") == "tuned":
            return "tuned cut points"
        return head_entry(self.task).rule if self.task in task_names() else "the head's own rule"

    # ----------------------------------------------------------------------------- decisions

    def grades(self, outputs: Outputs) -> np.ndarray:
        """Grade indexes: the tuned cut points when calibration kept them, else the head's own rule."""
        assert self.grade_names is not None and outputs.native is not None
        choice = self.thresholds
        if choice and choice.get("kind") == "tuned":
            return apply_thresholds(outputs.scores, np.asarray(choice["thresholds"]))
        return outputs.native

    def sets(self, outputs: Outputs) -> np.ndarray | None:
        """Grade sets (N, K) bool with the calibrated coverage, or None when not calibrated."""
        conformal = self.conformal
        if conformal is None or self.grade_names is None:
            return None
        return prediction_sets(
            conformal, scores=outputs.scores, probabilities=outputs.probabilities, num_grades=len(self.grade_names)
        )

    def records(self, names: list[str], outputs: Outputs) -> list[dict[str, Any]]:
        """One JSON-ready dict per image: file, score, grade, grade_index, grade_set, probabilities.

        ``grade``/``grade_index`` are None for a continuous target, ``grade_set`` is None when the
        run is not calibrated, ``probabilities`` is None for regression.
        """
        grade_names = self.grade_names
        grades = self.grades(outputs) if grade_names is not None else None
        sets = self.sets(outputs)
        rows = []
        for i, name in enumerate(names):
            row: dict[str, Any] = {"file": name, "score": float(outputs.scores[i])}
            row["grade"] = grade_names[int(grades[i])] if grades is not None else None
            row["grade_index"] = int(grades[i]) if grades is not None else None
            row["grade_set"] = format_set(sets[i], grade_names).split("|") if sets is not None else None
            if sets is not None and row["grade_set"] == [""]:
                row["grade_set"] = []
            row["probabilities"] = (
                {g: float(p) for g, p in zip(grade_names, outputs.probabilities[i])}
                if outputs.probabilities is not None and grade_names is not None
                else None
            )
            rows.append(row)
        return rows

    def grade(self, images: np.ndarray, names: list[str], batch_size: int | None = None) -> list[dict[str, Any]]:
        """:meth:`records` for uint8 images (N, H, W, 3) of this grader's ``image_size``."""
        return self.records(names, self.outputs(images, batch_size=batch_size))

    def describe(self) -> dict[str, Any]:
        """The model card served at ``GET /v1/model``: grades, decision rule, input, calibration."""
        conformal = self.conformal
        choice = self.thresholds or {}
        k = len(self.grade_names) if self.grade_names else None
        return {
            "runtime": self.runtime,
            "task": self.task,
            "target": "grade" if self.grade_names is not None else "continuous",
            "grades": list(self.grade_names) if self.grade_names is not None else None,
            "rule": self.rule,
            "cut_points": self.cut_points,
            "thresholds_reason": choice.get("reason"),
            "score_range": [0.0, float(k - 1)] if k else None,
            "grade_sets": {"method": conformal.kind, "alpha": conformal.alpha, "coverage": 1 - conformal.alpha}
            if conformal
            else None,
            "input": {"size": self.image_size, "channels": "RGB", "dtype": "uint8", "layout": "NHWC"},
            "version": self.version,
        }
