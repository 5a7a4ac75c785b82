"""A new head with a setting of its own and state of its own: one class, one register_head line.

The head shifts the grade axis by ``--offset``, keeps the offset as its state, and must then
train, calibrate, export, serve and grade like the built-in heads, with its flag in ``--help``.
"""

import io
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from imgrade.cli import main
from imgrade.core.grades import rounding_cut_points
from imgrade.core.registry import register_head, unregister_head
from imgrade.models.heads import RegressionHead
from imgrade.runtime import load_grader
from imgrade.runtime.api import Grader
from imgrade.runtime.run import RunFolder

pytestmark = pytest.mark.slow


class OffsetHead(RegressionHead):
    """Regression whose score is the output plus a fixed offset: the offset is a setting, kept as state."""

    name = "offset"

    @dataclass
    class Settings:
        offset: float = 0.0
        """Added to every score: where the grade axis starts."""

    @classmethod
    def create(cls, in_features, num_grades, architecture="auto", class_weights=None, settings=None, state=None):
        head = cls(in_features, architecture, "mse", num_grades, class_weights)
        head.offset = float((state or {}).get("offset", settings.offset if settings is not None else 0.0))
        return head

    @classmethod
    def initial_state(cls, settings, data_path, grade_names):
        return {"offset": settings.offset}, {}

    def state(self):
        return {"offset": self.offset}

    def decode(self, outputs):
        return outputs[:, 0].float() + self.offset

    def loss(self, outputs, target):
        return F.mse_loss(self.decode(outputs), target.float())


@pytest.fixture(scope="module")
def offset_head():
    register_head(
        "offset",
        OffsetHead,
        "regression on a shifted grade axis",
        probabilities=False,
        needs_grades=False,
        rule="rounding",
        cut_points=rounding_cut_points,
    )
    yield
    unregister_head("offset")


@pytest.fixture(scope="module")
def offset_run(offset_head, tmp_path_factory):
    root = tmp_path_factory.mktemp("offset")
    assert main(["data", "synth", "--out", str(root / "data"), "--n", "120", "--seed", "4"]) == 0
    run = root / "run"
    args = ["train", "--data", str(root / "data"), "--out", str(run), "--task", "offset", "--offset", "0.25"]
    assert main([*args, "--depth", "11", "--epochs", "2", "--threads", "1", "--seed", "0"]) == 0
    return run


def test_its_flag_is_in_the_help(offset_head, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert (
        "--offset OFFSET --task offset: Added to every score: where the grade axis starts (default: 0.0)" in help_text
    )


def test_it_trains_and_calibrates_with_its_setting_and_state_in_the_run(offset_run):
    run = RunFolder.open(offset_run)
    assert run.checkpoint.head_state == {"offset": 0.25}
    assert run.config.model.head_settings() == {"offset": 0.25}
    assert "offset: 0.25" in (offset_run / "config.yaml").read_text()
    assert run.checkpoint.calibration() is not None and run.checkpoint.calibration(True) is not None
    assert main(["calibrate", str(offset_run), "--alpha", "0.3"]) == 0
    assert RunFolder.open(offset_run).checkpoint.calibration().conformal.alpha == 0.3


def test_its_state_decides_the_scores_everywhere(offset_run, tmp_path):
    engine = RunFolder.open(offset_run).grader(device="cpu")
    assert engine.model.head.offset == 0.25 and engine.cut_points == [k + 0.5 for k in range(8)]
    photos = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    raw = engine.model(torch.zeros(1, 3, 32, 32))
    assert float(engine.model.decode(raw)[0]) == pytest.approx(float(raw[0, 0]) + 0.25)

    out = tmp_path / "offset.onnx"
    assert main(["export", str(offset_run), "--out", str(out)]) == 0
    exported = load_grader(out)
    assert exported.meta["head_state"] == {"offset": 0.25}
    torch_grades = engine.grade(photos, [f"p{i}" for i in range(6)])
    onnx_grades = exported.grade(photos, [f"p{i}" for i in range(6)])
    assert [g["grade"] for g in torch_grades] == [g["grade"] for g in onnx_grades]
    np.testing.assert_allclose([g["score"] for g in torch_grades], [g["score"] for g in onnx_grades], atol=1e-4)

    photo = tmp_path / "photo.png"
    Image.fromarray(photos[0]).save(photo)
    assert Grader.load(out).grade(photo).name == Grader.load(offset_run, device="cpu").grade(photo).name


def test_it_serves(offset_run):
    from fastapi.testclient import TestClient

    from imgrade.serve import create_app

    grader = load_grader(offset_run, device="cpu")
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (30, 140, 50)).save(buffer, format="PNG")
    with TestClient(create_app(grader, source_name="offset")) as client:
        answer = client.post("/v1/grade", files=[("files", ("a.png", buffer.getvalue()))])
        assert answer.status_code == 200, answer.text
        (record,) = answer.json()["results"]
    expected = Grader.load(offset_run, device="cpu").grade(buffer.getvalue())
    assert record["grade"] == expected.name and record["score"] == pytest.approx(expected.score, abs=1e-4)
