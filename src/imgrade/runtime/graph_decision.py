"""The run's decision as graph operations, so that an exported file gives imgrade's grade by itself.

:meth:`imgrade.runtime.grading.Engine.grades` and :meth:`~imgrade.runtime.grading.Engine.sets`
decide in NumPy after the network; :class:`Decision` does the same in PyTorch operations that the
ONNX exporter turns into plain comparisons and sums, with the calibration (tuned cut points, the
conformal threshold) as constants. A consumer in C#, C++ or a browser then reads ``grade`` and
``grade_set`` from the file's outputs and gets what ``imgrade.Grader`` says.

Both work in float64 on the same float32 scores and probabilities, so on the same network outputs
they agree exactly (``onnx_export._check_parity`` checks it at every export).
"""

from __future__ import annotations

import torch

from imgrade.calibration.decision import Calibration


class Decision(torch.nn.Module):
    """(score (N,), probabilities (N, K) or None, native (N,)) -> (grade (N,) int64, grade_set (N, K) bool or None).

    >>> from imgrade.calibration import Conformal
    >>> tuned = Calibration({"kind": "tuned", "thresholds": [0.4, 1.6]}, Conformal("interval", 0.1, 0.3, 20))
    >>> grade, grade_set = Decision(3, tuned)(torch.tensor([0.3, 1.0, 2.2, 5.0]), None, torch.zeros(4, dtype=torch.long))
    >>> grade.tolist(), grade_set.int().tolist()
    ([0, 1, 2, 2], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    """

    def __init__(self, num_grades: int, calibration: Calibration | None):
        super().__init__()
        self.num_grades = num_grades
        cut_points = calibration.cut_points if calibration is not None else None
        self.tuned = cut_points is not None
        if self.tuned:
            self.register_buffer("cut_points", torch.tensor(cut_points, dtype=torch.float64))  # (K - 1,)
        conformal = calibration.conformal if calibration is not None else None
        self.set_kind = conformal.kind if conformal is not None else None
        self.set_threshold = conformal.threshold if conformal is not None else 0.0
        self.register_buffer("grade_axis", torch.arange(num_grades, dtype=torch.float64))  # (K,)

    def forward(
        self, score: torch.Tensor, probabilities: torch.Tensor | None, native: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        score = score.double()
        if self.tuned:
            # apply_thresholds: the number of cut points at or below the score
            grade = (score.unsqueeze(1) >= self.cut_points).long().sum(dim=1)  # (N,)
        else:
            grade = native.long()
        if self.set_kind is None:
            return grade, None
        if self.set_kind == "aps":
            assert probabilities is not None, "aps sets are fitted on probabilities"
            return grade, self._aps_sets(probabilities.double())
        return grade, self._interval_sets(score)

    def _interval_sets(self, score: torch.Tensor) -> torch.Tensor:
        """``conformal.prediction_sets`` for kind interval: the grades within the threshold of the
        score, else the nearest grade (ties up, as ``round_to_grades``)."""
        sets = (score.unsqueeze(1) - self.grade_axis).abs() <= self.set_threshold  # (N, K)
        nearest = torch.floor(score + 0.5).clamp(0, self.num_grades - 1)  # (N,)
        empty = ~sets.any(dim=1, keepdim=True)  # (N, 1)
        return sets | (empty & (self.grade_axis == nearest.unsqueeze(1)))

    def _aps_sets(self, p: torch.Tensor) -> torch.Tensor:
        """``conformal.prediction_sets`` for kind aps, without a sort: a grade's mass is the
        probability of the grades ranked at or above it (higher probability, or equal and not after it)."""
        k = torch.arange(self.num_grades, device=p.device)
        mine, others = p.unsqueeze(2), p.unsqueeze(1)  # (N, K, 1) grade k's, (N, 1, K) grade j's
        ahead = (others > mine) | ((others == mine) & (k.view(1, 1, -1) <= k.view(1, -1, 1)))  # (N, K, K)
        mass = (ahead.double() * others).sum(dim=2)  # (N, K)
        top = torch.argmax(p, dim=1, keepdim=True)  # (N, 1), the first of equal probabilities
        return (mass <= self.set_threshold) | (k.view(1, -1) == top)
