"""What every grader does once the network has spoken: grades, grade sets and per-image records.

This module never imports torch: the ONNX runtime, ``predict --runtime onnx`` and the HTTP
service grade photos with NumPy, Pillow and ONNX Runtime alone. The two back ends (PyTorch in
``torch_engine.py``, ONNX Runtime in ``onnx_engine.py``) only differ in :meth:`Engine.outputs`; an
exported file also decides grades and sets in its graph, the same way as :meth:`Engine.grades` and
:meth:`Engine.sets`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from imgrade.calibration import Conformal
from imgrade.calibration.decision import Calibration
from imgrade.core.registry import head_entry, task_names
from imgrade.data.resize import DEFAULT_MODE, Resize

CPU_BATCH = 32
"""Images per forward pass on a CPU. Passes of 32 keep each layer's activations in the cache:
graded 256 at a time, ONNX Runtime gave 2216 images/s in passes of 32 against 1773 in one pass
of 256 (2 cores; benchmarks/throughput.py)."""
GPU_BATCH = 256
"""Images per forward pass on a GPU, where larger passes fill the device."""


@dataclass(frozen=True)
class Grade:
    """What a grader says about one item: its grade, score, probabilities and grade set.

    ``name``/``index`` are None for a continuous target, ``probabilities`` is None for regression
    and ``grade_set`` when the model is not calibrated. ``source`` says which item: its path, its
    upload's file name, or a label such as ``"item 3"`` (``items[3]``).
    """

    source: str
    score: float
    """Where the item lies on the grade axis (0 is the first grade), or the continuous target."""
    name: str | None
    """The grade's name, e.g. ``"L"``."""
    index: int | None
    """The grade's position in the model's grade order, from 0."""
    grade_set: list[str] | None
    """The grades that hold the true one with the calibrated coverage (``GET /v1/model``)."""
    probabilities: dict[str, float] | None
    """Each grade's probability, in grade order."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that ``imgrade predict --format json`` prints and ``POST /v1/grade`` answers.

        >>> Grade("a.png", 1.2, "L", 1, ["L", "M"], None).to_dict()
        {'image': 'a.png', 'score': 1.2, 'grade': 'L', 'grade_index': 1, 'grade_set': ['L', 'M'], 'probabilities': None}
        """
        return {
            "image": self.source,
            "score": self.score,
            "grade": self.name,
            "grade_index": self.index,
            "grade_set": list(self.grade_set) if self.grade_set is not None else None,
            "probabilities": dict(self.probabilities) if self.probabilities is not None else None,
        }


@dataclass
class Outputs:
    """What the network says about N images."""

    scores: np.ndarray  # (N,) on the grade axis (or the continuous target)
    probabilities: np.ndarray | None  # (N, K) for heads with grade probabilities; None for regression
    native: np.ndarray | None  # (N,) the head's own grade decision; None for a continuous target
    grades: np.ndarray | None = None
    """(N,) the calibrated grade where the graph decided it (an exported file); else the engine decides."""
    sets: np.ndarray | None = None
    """(N, K) bool, the grade sets where the graph decided them (an exported, calibrated file)."""

    def __getitem__(self, rows: slice) -> Outputs:
        """These outputs for a slice of the images."""
        return Outputs(**{f.name: _rows(getattr(self, f.name), rows) for f in fields(self)})

    @classmethod
    def concatenate(cls, parts: list[Outputs]) -> Outputs:
        """The outputs of consecutive batches as one."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            **{
                f.name: None
                if getattr(parts[0], f.name) is None
                else np.concatenate([getattr(p, f.name) for p in parts])
                for f in fields(cls)
            }
        )


def _rows(array: np.ndarray | None, rows: slice) -> np.ndarray | None:
    return None if array is None else array[rows]


class Engine:
    """Turns uint8 RGB images (N, H, W, 3) into scores, grades and grade sets.

    Subclasses set the attributes below and implement :meth:`outputs`; everything after the
    network (cut points, conformal sets, records) lives here, once.
    """

    runtime: str = "?"
    """``"torch"``, ``"onnx"`` or ``"openvino"``."""
    task: str
    grade_names: list[str] | None
    image_size: int
    resize_mode: str = DEFAULT_MODE
    """How a photo that is not square was made square in training (squash, crop or pad): every
    photo this grader grades must be resized the same way, so callers decode with :attr:`resize`."""
    calibration: Calibration | None
    """The cut points and grade sets of this way of grading, or None when not calibrated."""
    version: str
    """The imgrade version that trained (or exported) the model."""
    model_card: str | None = None
    """The model card (Markdown: data, recipe, test metrics, limits); None for a model without one."""
    precision: str = "fp32"
    """What the network computes in: ``"fp32"``; ``"int8"`` weights for a file written by ``export --int8``;
    ``"bf16"`` where OpenVINO grades on a CPU with bf16 units."""

    @property
    def resize(self) -> Resize:
        """How a photo becomes this grader's input: ``image_size`` and ``resize_mode``, for
        ``imgrade.data.images.load_image`` and its siblings."""
        return Resize(self.image_size, self.resize_mode)

    def outputs(self, images: np.ndarray, batch_size: int | None = None) -> Outputs:
        """The network's outputs for uint8 images (N, S, S, 3), ``batch_size`` per forward pass
        (default: ``CPU_BATCH`` or ``GPU_BATCH``, by where the network runs)."""
        raise NotImplementedError

    def features(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray | None:
        """(N, D) the network's pooled features of uint8 images (N, S, S, 3), where this back end
        exposes them (PyTorch: ``TorchEngine.features``); None here. Photos near each other in
        this space look alike to the network (``imgrade suggest`` spreads its picks over it)."""
        return None

    def for_serving(self, threads: int | None = None, spinning: bool | None = None) -> Engine:
        """The grader a long-lived process that grades a few photos per call (``imgrade serve``)
        should use: the same grades, from a back end that answers each small call sooner. A
        one-off ``predict`` would not earn back the set-up time (seconds).

        This grader itself by default; a PyTorch run on a CPU returns ONNX Runtime's
        (:meth:`imgrade.runtime.torch_engine.TorchEngine.for_serving`).

        Args:
            threads: inference threads of a grader made here (None: its runtime's default).
            spinning: whether the idle inference threads of a grader made here spin, waiting for
                work (None: its runtime's default); see ``OnnxEngine.from_file``.
        """
        return self

    # ----------------------------------------------------------------------------- calibration

    @property
    def thresholds(self) -> dict | None:
        """The calibration's cut-point choice (``ThresholdChoice.to_dict()``), if calibrated."""
        return self.calibration.thresholds if self.calibration is not None else None

    @property
    def conformal(self) -> Conformal | None:
        return self.calibration.conformal if self.calibration is not None else None

    @property
    def cut_points(self) -> list[float] | None:
        """The cut points on the score axis that decide the grade: the tuned ones, else those the
        head's own rule amounts to (regression: rounding's); None when the head decides another
        way (argmax, or the ordinal heads' count of passed thresholds)."""
        if self.grade_names is None:
            return None
        if self.calibration is not None and self.calibration.tuned:
            return self.calibration.cut_points
        own = head_entry(self.task).cut_points if self.task in task_names() else None
        return own(len(self.grade_names)) if own is not None else None

    @property
    def rule(self) -> str | None:
        """How a score becomes a grade, in words."""
        if self.grade_names is None:
            return None
        if self.calibration is not None and self.calibration.tuned:
            return "tuned cut points"
        return head_entry(self.task).rule if self.task in task_names() else "the head's own rule"

    # ----------------------------------------------------------------------------- decisions

    def grades(self, outputs: Outputs) -> np.ndarray:
        """Grade indexes: the tuned cut points when calibration kept them, else the head's own rule."""
        assert self.grade_names is not None and outputs.native is not None
        if outputs.grades is not None:
            return outputs.grades
        if self.calibration is None:
            return outputs.native
        return self.calibration.grades(outputs.scores, outputs.native)

    def sets(self, outputs: Outputs) -> np.ndarray | None:
        """Grade sets (N, K) bool with the calibrated coverage, or None when not calibrated."""
        if self.calibration is None or self.grade_names is None:
            return None
        if outputs.sets is not None:
            return outputs.sets
        return self.calibration.sets(outputs.scores, outputs.probabilities, len(self.grade_names))

    def results(self, sources: list[str], outputs: Outputs) -> list[Grade]:
        """One :class:`Grade` per image, named by ``sources``."""
        grade_names = self.grade_names
        grades = self.grades(outputs) if grade_names is not None else None
        sets = self.sets(outputs)
        results = []
        for i, source in enumerate(sources):
            grade_set = [g for g, kept in zip(grade_names, sets[i]) if kept] if sets is not None else None
            probabilities = None
            if outputs.probabilities is not None and grade_names is not None:
                probabilities = {g: float(p) for g, p in zip(grade_names, outputs.probabilities[i])}
            results.append(
                Grade(
                    source=source,
                    score=float(outputs.scores[i]),
                    name=grade_names[int(grades[i])] if grades is not None else None,
                    index=int(grades[i]) if grades is not None else None,
                    grade_set=grade_set,
                    probabilities=probabilities,
                )
            )
        return results

    def records(self, names: list[str], outputs: Outputs) -> list[dict[str, Any]]:
        """:meth:`results` in their JSON form (:meth:`Grade.to_dict`): image, score, grade,
        grade_index, grade_set, probabilities."""
        return [result.to_dict() for result in self.results(names, outputs)]

    def grade(self, images: np.ndarray, names: list[str], batch_size: int | None = None) -> list[dict[str, Any]]:
        """:meth:`records` for uint8 images (N, H, W, 3) of this grader's ``image_size``.

        To grade files, Pillow images, bytes or arrays of any size, use ``imgrade.Grader``.
        """
        return self.records(names, self.outputs(images, batch_size=batch_size))

    def describe(self) -> dict[str, Any]:
        """The model card served at ``GET /v1/model``: grades, decision rule, input, calibration."""
        conformal = self.conformal
        choice = self.thresholds or {}
        k = len(self.grade_names) if self.grade_names else None
        return {
            "runtime": self.runtime,
            "precision": self.precision,
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
            "input": {
                "size": self.image_size,
                "resize_mode": self.resize_mode,
                "channels": "RGB",
                "dtype": "uint8",
                "layout": "NHWC",
            },
            "version": self.version,
        }
