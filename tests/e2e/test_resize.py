"""--resize crop and pad end to end: the run stores the mode, and predict, the Python API, evaluate,
serve, Ray's actors and the exported .onnx file all resize a photo that is not square its way."""

from __future__ import annotations

import csv
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette import exceptions as starlette_exceptions

import imgrade
from imgrade.cli import main
from imgrade.data.images import load_image
from imgrade.data.resize import Resize
from imgrade.runtime.onnx_engine import METADATA_KEY
from imgrade.runtime.run_checkpoint import Checkpoint

with warnings.catch_warnings():
    warnings.simplefilter("ignore", getattr(starlette_exceptions, "StarletteDeprecationWarning", DeprecationWarning))
    from fastapi.testclient import TestClient

GRADES = ("A", "B", "C")


def _photo(rng: np.random.Generator, grade: int, width: int, height: int) -> np.ndarray:
    """A photo whose grade shows as coloured bands at both ends of its long side (which crop cuts)."""
    pixels = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    band = 4 * (grade + 1)
    if width >= height:
        pixels[:, :band, grade] += 150
        pixels[:, -band:, (grade + 1) % 3] += 150
    else:
        pixels[:band, :, grade] += 150
        pixels[-band:, :, (grade + 1) % 3] += 150
    return pixels


@pytest.fixture(scope="module")
def wide_photos(tmp_path_factory) -> Path:
    """Class folders A, B, C of ten 64x32 photos each."""
    root = tmp_path_factory.mktemp("wide") / "photos"
    rng = np.random.default_rng(0)
    for k, grade in enumerate(GRADES):
        (root / grade).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(_photo(rng, k, 64, 32)).save(root / grade / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def new_photos(tmp_path_factory) -> list[Path]:
    """Photos no run saw: wide 64x32, tall 24x56, and one square."""
    folder = tmp_path_factory.mktemp("new")
    rng = np.random.default_rng(1)
    paths = []
    for i, (width, height) in enumerate([(64, 32), (64, 32), (24, 56), (40, 40), (96, 30)]):
        paths.append(folder / f"new{i}.png")
        Image.fromarray(_photo(rng, i % 3, width, height)).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def runs(tmp_path_factory, wide_photos) -> dict[str, Path]:
    """A one-epoch run (depth 11) per mode, trained on the wide photos."""
    found = {}
    for mode in ("crop", "pad"):
        run = tmp_path_factory.mktemp("runs") / mode
        argv = ["train", "--data", str(wide_photos), "--resize", mode, "--epochs", "1", "--depth", "11"]
        assert main([*argv, "--out", str(run)]) == 0
        found[mode] = run
    return found


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for mode, run in runs.items():
        out[mode] = tmp_path_factory.mktemp("onnx") / f"{mode}.onnx"
        assert main(["export", str(run), "--out", str(out[mode])]) == 0
    return out


def test_the_run_stores_crop_and_predict_grades_as_the_grader(runs, new_photos, capsys):
    run = runs["crop"]
    assert Checkpoint.load(run / "best.pt").config.data.resize == "crop"
    assert "resize: crop" in (run / "config.yaml").read_text()
    grader = imgrade.Grader.load(run, device="cpu")
    assert grader.resize_mode == "crop" and grader.describe()["input"]["resize_mode"] == "crop"

    capsys.readouterr()
    assert main(["predict", str(run), str(new_photos[0]), "--format", "json"]) == 0
    predicted = json.loads(capsys.readouterr().out)[0]
    expected = grader.grade(new_photos[0]).to_dict()
    assert predicted["grade"] == expected["grade"] and predicted["score"] == pytest.approx(expected["score"], abs=1e-6)

    # the grader really crops: its scores are those of the cropped pixels, not the squashed ones
    crop = grader.backend.outputs(np.stack([load_image(p, Resize(32, "crop")) for p in new_photos])).scores
    squash = grader.backend.outputs(np.stack([load_image(p, 32) for p in new_photos])).scores
    np.testing.assert_allclose([g.score for g in grader.grade(new_photos)], crop, atol=1e-6)
    assert np.abs(crop - squash)[[0, 1, 2, 4]].max() > 1e-5  # the square photo (3) is the same either way


@pytest.mark.parametrize("mode", ["crop", "pad"])
def test_the_onnx_file_states_the_mode_and_grades_as_the_run(mode, runs, exported, new_photos):
    import onnx

    meta = json.loads({p.key: p.value for p in onnx.load(exported[mode]).metadata_props}[METADATA_KEY])
    assert meta["input"]["resize_mode"] == mode and meta["input"]["resize"].startswith(f"{mode}: ")
    on_run = imgrade.Grader.load(runs[mode], device="cpu")
    on_file = imgrade.Grader.load(exported[mode])
    assert on_file.backend.runtime == "onnx" and on_file.resize_mode == mode
    # paths, bytes, Pillow images and arrays alike
    items = [*new_photos, new_photos[0].read_bytes(), Image.open(new_photos[2]), np.asarray(Image.open(new_photos[4]))]
    from_run, from_file = on_run.grade(items), on_file.grade(items)
    assert [g.name for g in from_file] == [g.name for g in from_run]
    np.testing.assert_allclose([g.score for g in from_file], [g.score for g in from_run], atol=1e-4)


def test_evaluate_on_other_photos_resizes_as_the_run(runs, new_photos, wide_photos, tmp_path, capsys):
    run = runs["pad"]
    out = tmp_path / "eval"
    assert main(["evaluate", str(run), "--data", str(wide_photos), "--out", str(out)]) == 0
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    grader = imgrade.Grader.load(run, device="cpu")
    graded = grader.grade([wide_photos / row["image"] for row in rows])
    assert [row["predicted_grade"] for row in rows] == [g.name for g in graded]
    np.testing.assert_allclose([float(row["score"]) for row in rows], [g.score for g in graded], atol=1e-4)


def test_serve_and_the_ray_actor_resize_as_the_run(runs, exported, new_photos):
    from imgrade.batch import _GradeBatch
    from imgrade.pipeline.rows import RowLayout
    from imgrade.runtime import load_grader
    from imgrade.serve import create_app

    expected = imgrade.Grader.load(runs["pad"], device="cpu").grade(new_photos)
    grader = load_grader(runs["pad"], device="cpu")
    files = [("files", (p.name, p.read_bytes())) for p in new_photos]
    with TestClient(create_app(grader, source_name="pad")) as client:
        response = client.post("/v1/grade", files=files)
    assert response.status_code == 200, response.text
    served = response.json()["results"]
    np.testing.assert_allclose([r["score"] for r in served], [g.score for g in expected], atol=1e-4)

    pytest.importorskip("pyarrow", reason="the Ray job's tables are pyarrow's (imgrade[ray])")
    onnx = load_grader(exported["pad"])
    actor = _GradeBatch(exported["pad"].read_bytes(), "pad.onnx", "/", RowLayout.of(onnx))
    table = actor({"path": np.asarray([str(p) for p in new_photos], dtype=object)})
    np.testing.assert_allclose(table.column("score").to_pylist(), [g.score for g in expected], atol=1e-4)


def test_data_info_prints_photo_sizes_and_warns_when_photos_shrink_over_4x(tmp_path, capsys, caplog):
    rng = np.random.default_rng(2)
    for grade in ("A", "B"):
        (tmp_path / "big" / grade).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (80, 160, 3), dtype=np.uint8)).save(
                tmp_path / "big" / grade / f"{i}.jpg"
            )
    with caplog.at_level(logging.WARNING, logger="imgrade"):
        assert main(["data", "info", str(tmp_path / "big"), "--resize", "pad"]) == 0
    out = capsys.readouterr().out
    assert "photos:     all 160x80; 6 of 6 not square" in out
    assert "resized to 32x32 RGB (--image-size); photos not square are padded (--resize pad)" in out
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "\n" not in warned[0]
    assert warned[0].startswith("warning: 6 of 6 photos are shrunk more than 4x to 32x32 (median 5.0x)")
    assert "--image-size 64" in warned[0] and "padded (--resize pad)" in warned[0]

    caplog.clear()  # crop keeps an 80x80 square: shrunk 2.5x, no warning; --image-size 16 shrinks it 5x
    assert main(["data", "info", str(tmp_path / "big"), "--resize", "crop"]) == 0
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert main(["data", "info", str(tmp_path / "big"), "--resize", "crop", "--image-size", "16"]) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "(median 5.0x)" in warned[0] and "--image-size 32" in warned[0]
