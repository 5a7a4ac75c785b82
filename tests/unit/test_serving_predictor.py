"""Grader.for_serving: a run on a CPU is served by ONNX Runtime, exported in memory, or else by eager PyTorch."""

from __future__ import annotations

import dataclasses
import io
import logging
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from starlette import exceptions as starlette_exceptions

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its TestClient; the httpx the project installs still works.
    warnings.simplefilter("ignore", getattr(starlette_exceptions, "StarletteDeprecationWarning", DeprecationWarning))
    from fastapi.testclient import TestClient

from imgrade import pipeline
from imgrade.data.synthetic import generate_cucumbers
from imgrade.runtime import load_grader
from imgrade.runtime import onnx_export as export
from imgrade.runtime.onnx_engine import OnnxEngine
from imgrade.runtime.onnx_export import PARITY_ATOL
from imgrade.runtime.run_checkpoint import Checkpoint
from imgrade.runtime.torch_engine import TorchEngine
from imgrade.serve import create_app

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return generate_cucumbers(40, seed=3).imageset.images


@pytest.fixture(scope="module")
def served_coral(coral_run) -> tuple[TorchEngine, OnnxEngine]:
    """The CORAL run's eager grader and what it serves with (exported once for the module)."""
    predictor = TorchEngine.from_run(coral_run, device="cpu")
    return predictor, predictor.for_serving()


def _runtime_records(caplog) -> list[logging.LogRecord]:
    """What the runtime logged, without the training logs of fixtures that train during the test."""
    return [r for r in caplog.records if r.name.startswith("imgrade.runtime")]


@pytest.mark.parametrize("run_fixture", ["trained_run", "coral_run"])
def test_a_run_on_the_cpu_is_served_by_onnx_runtime_with_the_eager_outputs(run_fixture, photos, request, caplog):
    caplog.set_level(logging.INFO, logger="imgrade")
    predictor = TorchEngine.from_run(request.getfixturevalue(run_fixture), device="cpu")
    served = predictor.for_serving()
    assert isinstance(served, OnnxEngine) and served.runtime == "onnx"
    assert _runtime_records(caplog) == [], "a working export logs nothing"
    eager, got = predictor.outputs(photos), served.outputs(photos)
    np.testing.assert_allclose(got.scores, eager.scores, rtol=0, atol=PARITY_ATOL)
    assert (got.probabilities is None) == (eager.probabilities is None) == (predictor.task == "regression")
    if eager.probabilities is not None:
        np.testing.assert_allclose(got.probabilities, eager.probabilities, rtol=0, atol=PARITY_ATOL)
    names = [f"p{i}" for i in range(len(photos))]
    expected, graded = predictor.records(names, eager), served.records(names, got)
    assert [r["grade"] for r in graded] == [r["grade"] for r in expected]
    assert len({r["grade"] for r in expected}) >= 2, "a constant model would make the grade check empty"


def test_one_photo_and_odd_batch_sizes_when_served(served_coral, photos):
    predictor, served = served_coral
    eager = predictor.outputs(photos[:7], batch_size=3)
    for batch_size in (1, 3, 32):
        np.testing.assert_allclose(
            served.outputs(photos[:7], batch_size=batch_size).scores, eager.scores, rtol=0, atol=PARITY_ATOL
        )
    np.testing.assert_allclose(served.outputs(photos[:1]).scores, eager.scores[:1], rtol=0, atol=PARITY_ATOL)


def test_the_served_grader_carries_the_runs_grades_calibration_card_and_version(served_coral, coral_run):
    predictor, served = served_coral
    ckpt = Checkpoint.load(coral_run / "best.pt")
    assert served.grade_names == predictor.grade_names == ckpt.grade_names
    assert served.calibration == ckpt.calibration() and served.conformal is not None
    assert (served.task, served.image_size, served.version) == ("coral", 32, predictor.version)
    assert (served.tta, served.members) == (False, 1)
    assert served.model_card == predictor.model_card and "coral" in served.model_card.lower()
    assert (served.cut_points, served.rule) == (predictor.cut_points, predictor.rule)
    assert served.meta["source"] == coral_run.name, "the run by its folder's name, never a path"
    described, expected = served.describe(), predictor.describe()
    assert (described.pop("runtime"), expected.pop("runtime")) == ("onnx", "torch")
    assert described == expected


def test_under_tta_the_served_grader_grades_the_views_with_their_own_calibration(coral_run, photos):
    predictor = TorchEngine.from_run(coral_run, device="cpu", tta=True)
    served = predictor.for_serving(threads=1, spinning=False)
    assert isinstance(served, OnnxEngine) and served.tta
    calibration = Checkpoint.load(coral_run / "best.pt").calibration(True)
    assert served.calibration == calibration == predictor.calibration
    np.testing.assert_allclose(
        served.outputs(photos).scores, predictor.outputs(photos).scores, rtol=0, atol=PARITY_ATOL
    )
    plain = TorchEngine.from_run(coral_run, device="cpu", tta=False)
    assert np.abs(plain.outputs(photos).scores - predictor.outputs(photos).scores).max() > 10 * PARITY_ATOL, (
        "the views must move the scores, or this test could not tell TTA from none"
    )


@pytest.mark.parametrize("failure", ["export", "onnxruntime"])
def test_a_failed_export_serves_the_eager_network_and_says_so_in_one_line(failure, served_coral, monkeypatch, caplog):
    predictor, _ = served_coral
    if failure == "export":

        def refuse(predictor):
            raise RuntimeError("the exporter cannot follow this\nbackbone")

        monkeypatch.setattr(export, "onnx_bytes", refuse)
        reason = "RuntimeError: the exporter cannot follow this"
    else:
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
        reason = "onnxruntime"
    caplog.set_level(logging.INFO, logger="imgrade")
    assert predictor.for_serving() is predictor
    (record,) = _runtime_records(caplog)
    message = record.getMessage()
    assert (record.levelno, record.name) == (logging.INFO, "imgrade.runtime.onnx_export")
    assert "\n" not in message and len(message) <= 250
    assert message.startswith("grading with eager PyTorch: the in-memory ONNX export failed (") and reason in message


def test_a_disagreeing_graph_is_not_served(served_coral, monkeypatch, caplog):
    predictor, _ = served_coral
    real = OnnxEngine.outputs

    def off_by_a_little(self, images, batch_size=None):
        outputs = real(self, images, batch_size)
        return dataclasses.replace(outputs, scores=outputs.scores + 10 * PARITY_ATOL)

    monkeypatch.setattr(OnnxEngine, "outputs", off_by_a_little)
    caplog.set_level(logging.INFO, logger="imgrade")
    assert predictor.for_serving() is predictor
    (record,) = _runtime_records(caplog)
    assert "disagrees with PyTorch" in record.getMessage()


def test_graders_that_are_already_fast_serve_themselves(served_coral, coral_run, tmp_path):
    predictor, served = served_coral
    assert served.for_serving() is served
    on_a_gpu = dataclasses.replace(predictor, device=torch.device("cuda"))  # never run: only its device is read
    assert on_a_gpu.for_serving() is on_a_gpu
    pipeline.export(coral_run, out=tmp_path / "m.onnx")
    grader = load_grader(tmp_path / "m.onnx")
    assert grader.for_serving() is grader


def test_the_service_grades_a_run_through_onnx_runtime_and_says_so(served_coral, photos):
    predictor, served = served_coral
    buffer = io.BytesIO()
    Image.fromarray(photos[0]).save(buffer, format="PNG")
    with TestClient(create_app(served, source_name="coral")) as client:
        card = client.get("/v1/model").json()
        answer = client.post("/v1/grade", files=[("files", ("a.png", buffer.getvalue(), "image/png"))])
    assert card["runtime"] == "onnx" and card["model"] == "coral" and card["model_card"] == predictor.model_card
    assert card["grades"] == predictor.grade_names and card["grade_sets"]["method"] == "aps"
    assert answer.status_code == 200
    (result,) = answer.json()["results"]
    assert result == served.grade(photos[:1], ["a.png"])[0], "the answer is ONNX Runtime's"
    (eager,) = predictor.grade(photos[:1], ["a.png"])
    # the grade set is left out: near-uniform probabilities of a barely trained model swap rank
    # within the tolerance, and so the set's edge (tests/e2e/test_export.py allows for it)
    assert result["score"] == pytest.approx(eager["score"], abs=PARITY_ATOL) and result["grade"] == eager["grade"]


def test_onnx_runtime_threads_are_chosen_unless_given(coral_run, monkeypatch):
    from imgrade.core.threads import ThreadChoice
    from imgrade.runtime import onnx_engine as onnx

    predictor = TorchEngine.from_run(coral_run, device="cpu")
    monkeypatch.setattr(onnx, "auto_threads", lambda: ThreadChoice(1, "one busy core of two"))
    chosen = predictor.for_serving()
    assert isinstance(chosen, OnnxEngine) and chosen.session.get_session_options().intra_op_num_threads == 1
    given = predictor.for_serving(threads=3)
    assert given.session.get_session_options().intra_op_num_threads == 3
