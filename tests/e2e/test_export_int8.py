"""`imgrade export --int8`: a smaller file, checked on the validation split, that predict, the API and serve run."""

import csv
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from starlette import exceptions as starlette_exceptions

import imgrade
from imgrade.cli import main
from imgrade.core.errors import ConfigError
from imgrade.data.synthetic import generate_cucumbers
from imgrade.evaluation.metrics import quadratic_weighted_kappa
from imgrade.pipeline import export
from imgrade.runtime import load_grader, onnx_quantize
from imgrade.runtime.onnx_engine import METADATA_KEY, OnnxEngine
from imgrade.runtime.run import RunFolder
from imgrade.serve import create_app

with warnings.catch_warnings():  # as tests/unit/test_serve_api.py: Starlette 1.x suggests httpx2
    warnings.simplefilter("ignore", getattr(starlette_exceptions, "StarletteDeprecationWarning", DeprecationWarning))
    from fastapi.testclient import TestClient


def _metadata(path: Path) -> dict:
    return json.loads({p.key: p.value for p in onnx.load(path).metadata_props}[METADATA_KEY])


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> tuple[Path, Path]:
    """``trained_run`` exported in fp32 and in int8 (a wide tolerance: these tests read the file)."""
    folder = tmp_path_factory.mktemp("int8")
    fp32, int8 = folder / "m.onnx", folder / "m.int8.onnx"
    assert main(["export", str(trained_run), "--out", str(fp32)]) == 0
    assert main(["export", str(trained_run), "--out", str(int8), "--int8", "--int8-tolerance", "1"]) == 0
    return fp32, int8


def test_int8_is_smaller_says_so_and_carries_its_validation_numbers(trained_run, exported):
    fp32, int8 = exported
    assert int8.stat().st_size * 2.5 <= fp32.stat().st_size
    meta, plain = _metadata(int8), _metadata(fp32)
    assert meta["precision"] == "int8" and "precision" not in plain
    assert meta["grade_names"] == plain["grade_names"] and meta["calibration"] == plain["calibration"]
    assert meta["quantization"]["int8_layers"]["Conv"] > 0 and meta["quantization"]["fp32_layers"]
    # the numbers are those of the run's validation split, graded by each file
    imageset, split = RunFolder.open(trained_run).data()
    val = imageset.subset(split["val"])
    y = val.targets.astype(np.int64)
    check = meta["int8_check"]
    assert check["n"] == len(val) and check["tolerance"] == 1
    for precision, path in (("fp32", fp32), ("int8", int8)):
        grader = OnnxEngine.from_file(path)
        grades = grader.grades(grader.outputs(val.images))
        assert check[f"{precision}_accuracy"] == pytest.approx(np.mean(grades == y))
        assert check[f"{precision}_qwk"] == pytest.approx(quadratic_weighted_kappa(y, grades, 9))
    # the int8 graph keeps the uint8 NHWC input and the float outputs, and grades close to fp32
    session = OnnxEngine.from_file(int8).session
    assert session.get_inputs()[0].type == "tensor(uint8)" and session.get_outputs()[0].type == "tensor(float)"
    images = generate_cucumbers(40, seed=8).imageset.images
    scores = [OnnxEngine.from_file(p).outputs(images).scores for p in exported]
    assert np.abs(scores[0] - scores[1]).max() < 1.0


def test_the_first_convolution_and_the_head_stay_fp32(exported):
    fp32, int8 = exported
    model = onnx.load(fp32)
    kept = onnx_quantize.fp32_layers(model)
    op = {node.name: node.op_type for node in model.graph.node}
    assert [op[name] for name in kept] == ["Conv", "Gemm", "Gemm"]  # the reference head: hidden and output layer
    assert kept[0] == next(node.name for node in model.graph.node if node.op_type == "Conv")
    assert _metadata(int8)["quantization"]["fp32_layers"] == kept
    # in the int8 graph only the other layers read dequantized (int8) inputs
    graph = onnx.load(int8).graph
    made_by = {output: node.op_type for node in graph.node for output in node.output}
    for node in graph.node:
        if node.op_type in onnx_quantize.QUANTIZED_OPS:
            dequantized = [made_by.get(name) == "DequantizeLinear" for name in node.input[:2]]
            assert dequantized == ([False, False] if node.name in kept else [True, True]), node.name
    # without the exporter's module paths: the dense layers after the last convolution
    for node in model.graph.node:
        del node.metadata_props[:]
    assert onnx_quantize.fp32_layers(model) == kept


def test_predict_and_the_python_api_grade_with_the_int8_file(exported, tmp_path, capsys):
    _, int8 = exported
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(generate_cucumbers(5, seed=3).imageset.images):
        Image.fromarray(image).resize((64, 48)).save(photos / f"c{i}.png")
    assert main(["predict", str(int8), str(photos)]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    names = _metadata(int8)["grade_names"]
    assert len(rows) == 5 and all(row["grade"] in names for row in rows)
    grader = imgrade.Grader.load(int8)
    graded = grader.grade(str(photos / "c0.png"))
    assert (graded.name, graded.score) == (rows[0]["grade"], pytest.approx(float(rows[0]["score"]), abs=1e-4))
    with TestClient(create_app(load_grader(int8), source_name="int8")) as client:
        answer = client.post("/v1/grade", files=[("files", ("c0.png", (photos / "c0.png").read_bytes()))])
        card = client.get("/v1/model").json()
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["grade"] == rows[0]["grade"] and card["runtime"] == "onnx"
    assert card["precision"] == "int8" and grader.backend.precision == "int8"


@pytest.mark.parametrize("tolerance", ["-0.01", "1.5", "nan"])
def test_a_tolerance_outside_0_to_1_is_refused_in_one_line(trained_run, tolerance, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(trained_run), "--out", str(out), "--int8", "--int8-tolerance", tolerance]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--int8-tolerance {tolerance}" in err and "between 0 and 1" in err
    assert not out.exists()
    with pytest.raises(ConfigError, match="between 0 and 1"):
        export(trained_run, out=out, int8=True, int8_tolerance=-1)


def test_an_int8_copy_that_loses_too_much_is_not_written(trained_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous export")
    real = onnx_quantize.compare

    def worse(fp32, int8, images, targets, tolerance):
        """The real comparison, with the int8 graph's exact accuracy 0.3 lower."""
        check = real(fp32, int8, images, targets, tolerance)
        return dataclasses.replace(check, int8_accuracy=check.fp32_accuracy - 0.3)

    monkeypatch.setattr(onnx_quantize, "compare", worse)
    assert main(["export", str(trained_run), "--out", str(out), "--int8", "--int8-tolerance", "0.2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing written" in err and "--int8-tolerance 0.2" in err
    assert "exact accuracy fp32" in err and "QWK fp32" in err and "export without --int8" in err
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"], "no temporary file is left behind"
