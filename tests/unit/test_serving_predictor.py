"""Predictor.prepare_for_serving: the frozen network the HTTP service grades with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgrade.data.synthetic import generate_cucumbers
from imgrade.runtime import load_grader
from imgrade.runtime.predictor import Predictor


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return generate_cucumbers(40, seed=3).imageset.images


@pytest.mark.parametrize("run_fixture", ["trained_run", "coral_run"])
def test_frozen_network_grades_as_the_eager_one(run_fixture, photos, request):
    predictor = Predictor.from_run(request.getfixturevalue(run_fixture), device="cpu")
    eager = predictor.outputs(photos)
    predictor.prepare_for_serving()
    assert isinstance(predictor.network, torch.jit.ScriptModule)
    frozen = predictor.outputs(photos)
    np.testing.assert_allclose(frozen.scores, eager.scores, rtol=1e-4, atol=1e-5)
    if eager.probabilities is not None:
        np.testing.assert_allclose(frozen.probabilities, eager.probabilities, rtol=1e-4, atol=1e-5)
    # the same grade for every photo whose score is not within rounding of a cut point
    clear = np.abs(eager.scores - np.round(eager.scores)) < 0.49
    np.testing.assert_array_equal(frozen.native[clear], eager.native[clear])


def test_one_photo_and_odd_batch_sizes_after_freezing(trained_run, photos):
    predictor = Predictor.from_run(trained_run, device="cpu")
    eager = predictor.outputs(photos[:7], batch_size=3)
    predictor.prepare_for_serving()
    for batch_size in (1, 3, 32):
        np.testing.assert_allclose(
            predictor.outputs(photos[:7], batch_size=batch_size).scores, eager.scores, rtol=1e-4, atol=1e-5
        )


def test_a_failed_trace_keeps_the_eager_network_and_says_so(trained_run, photos, monkeypatch, capsys):
    predictor = Predictor.from_run(trained_run, device="cpu")
    expected = predictor.outputs(photos[:5]).scores

    def refuse(*args, **kwargs):
        raise RuntimeError("tracer cannot follow this\nmodel")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    predictor.prepare_for_serving()
    assert predictor.network is None
    err = capsys.readouterr().err.strip()
    assert err == "imgrade: grading with the eager network (tracer cannot follow this model)"
    np.testing.assert_array_equal(predictor.outputs(photos[:5]).scores, expected)


def test_onnx_grader_needs_no_preparation(trained_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from imgrade.runtime.export import export_onnx

    export_onnx(trained_run, tmp_path / "m.onnx")
    grader = load_grader(tmp_path / "m.onnx")
    assert grader.prepare_for_serving() is None  # a no-op that exists for every runtime
