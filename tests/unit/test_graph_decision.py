"""The graph's decision (runtime/graph_decision.py) is the engine's (calibration/decision.py), op for op."""

import numpy as np
import pytest
import torch

from imgrade.calibration import Conformal
from imgrade.calibration.decision import Calibration
from imgrade.runtime.graph_decision import Decision

K = 5


def _inputs(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    scores = rng.uniform(-1, K, n).astype(np.float32)
    scores[:K] = np.arange(K, dtype=np.float32) + 0.5  # exactly on rounding's cut points
    logits = rng.normal(size=(n, K)).astype(np.float32)
    logits[::7, 1] = logits[::7, 3]  # exact ties between two grades
    probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    native = rng.integers(0, K, n)
    return scores, probabilities, native


@pytest.mark.parametrize("kind", ["interval", "aps", None])
@pytest.mark.parametrize("tuned", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_graph_decides_as_the_engine_does(kind, tuned, seed):
    scores, probabilities, native = _inputs(seed)
    thresholds = {"kind": "tuned" if tuned else "round", "thresholds": [0.3, 1.7, 2.5, 3.2]}
    conformal = None
    if kind == "interval":
        # a qhat that is some image's own |score - k|, the case a calibration image is in
        conformal = Conformal("interval", 0.1, float(abs(np.float64(scores[10]) - 2)), 50)
    elif kind == "aps":
        conformal = Conformal("aps", 0.1, 0.8, 50)
    calibration = Calibration(thresholds, conformal)
    grade, grade_set = Decision(K, calibration)(
        torch.from_numpy(scores), torch.from_numpy(probabilities), torch.from_numpy(native)
    )
    expected_grades = calibration.grades(scores, native)
    assert grade.tolist() == expected_grades.tolist()
    if tuned:
        assert grade.tolist() != native.tolist()
    expected_sets = calibration.sets(scores, probabilities if kind == "aps" else None, K)
    if kind is None:
        assert grade_set is None and expected_sets is None
    else:
        assert grade_set.numpy().tolist() == expected_sets.tolist()
        assert grade_set.any(dim=1).all(), "a set is never empty"
        assert 1 < grade_set.sum(dim=1).float().mean() < K, (
            "the sets must not be trivial for the check to mean anything"
        )


def test_a_set_keeps_a_grade_a_float_rounding_past_qhat():
    """The calibration image that fixed qhat stays in its set when another runtime's score is a few ulps off."""
    score = np.float32(1.3)
    qhat = float(abs(np.float64(score) - 2))
    conformal = Conformal("interval", 0.1, qhat, 50)
    nudged = np.nextafter(score, np.float32(0), dtype=np.float32)  # one ulp further from grade 2
    for s in (score, nudged):
        sets = Calibration(None, conformal).sets(np.array([s]), None, 4)
        assert sets[0].tolist() == [False, True, True, False]
        graph = Decision(4, Calibration(None, conformal))(torch.tensor([s]), None, torch.zeros(1, dtype=torch.long))[1]
        assert graph[0].tolist() == [False, True, True, False]
