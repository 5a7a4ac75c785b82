"""`imgrade export` and the ONNX runtime: parity with PyTorch, a complete file, no torch needed."""

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

import imgrade
from imgrade.calibration.conformal import _aps_mass
from imgrade.cli import main
from imgrade.data.cucumber9 import read_cucumber9
from imgrade.data.synthetic import generate_cucumbers
from imgrade.runtime import load_grader
from imgrade.runtime.onnx_engine import METADATA_KEY, OnnxEngine
from imgrade.runtime.run_checkpoint import Checkpoint


@pytest.fixture(scope="module", params=["regression", "classification", "coral", "corn"])
def graded_run(request, tmp_path_factory, synth_dir, trained_run, coral_run) -> Path:
    """One calibrated run per task; regression is the reference network (depth 29)."""
    known = {"regression": trained_run, "coral": coral_run}
    if request.param in known:
        return known[request.param]
    run = tmp_path_factory.mktemp("runs") / request.param
    assert (
        main(
            [
                "train",
                "--data",
                str(synth_dir),
                "--task",
                request.param,
                "--epochs",
                "1",
                "--depth",
                "11",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    return run


def _with_tuned_cut_points(run: Path, folder: Path) -> Path:
    """A copy of ``run`` whose calibration kept tuned (deliberately uneven) cut points."""
    copy = folder / f"{run.name}-tuned"
    shutil.copytree(run, copy)
    ckpt = Checkpoint.load(copy / "best.pt")
    k = len(ckpt.grade_names)
    cuts = [float(i + 0.5 + 0.3 * np.sin(i)) for i in range(k - 1)]
    calibration = ckpt.calibration()
    tuned = dataclasses.replace(calibration, thresholds={**calibration.thresholds, "kind": "tuned", "thresholds": cuts})
    ckpt.with_calibration(tuned).save(copy / "best.pt")
    return copy


def _a_rounding_tie(grader, outputs, i: int, a: list[str], b: list[str], tol: float = 1e-5) -> bool:
    """Whether sets ``a`` and ``b`` of image ``i`` differ only where a 1e-5 change could flip them."""
    names, qhat = grader.grade_names, grader.conformal.threshold
    diff = sorted(names.index(g) for g in set(a) ^ set(b))
    if grader.conformal.kind == "interval":
        return len(diff) == 1 and abs(abs(outputs.scores[i] - diff[0]) - qhat) <= tol
    p = outputs.probabilities[i]
    if len(diff) == 2:  # two near-equal probabilities swapped rank at the set's edge
        return abs(p[diff[0]] - p[diff[1]]) <= tol
    mass = _aps_mass(outputs.probabilities[i : i + 1])[0]
    return len(diff) == 1 and abs(mass[diff[0]] - qhat) <= tol


def _real_or_synthetic_images(n: int = 248) -> tuple[np.ndarray, str]:
    sample = Path(__file__).resolve().parents[3] / "shared/data/cucumber9-p1-sample/cucumber-9-python"
    if sample.is_dir():
        return read_cucumber9(sample).images[:n], "real"
    return generate_cucumbers(n, seed=5).imageset.images, "synthetic"


def test_onnx_matches_pytorch_scores_and_every_grade(graded_run, tmp_path):
    run = _with_tuned_cut_points(graded_run, tmp_path)
    out = tmp_path / "model.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    images, _ = _real_or_synthetic_images()
    names = [f"img{i}" for i in range(len(images))]
    torch_grader, onnx_grader = load_grader(run), load_grader(out)
    assert (torch_grader.runtime, onnx_grader.runtime) == ("torch", "onnx")
    expected, got = torch_grader.grade(images, names), onnx_grader.grade(images, names, batch_size=100)
    assert max(abs(a["score"] - b["score"]) for a, b in zip(expected, got)) <= 1e-4
    assert [r["grade"] for r in got] == [r["grade"] for r in expected]
    # A grade set's edge is a discontinuity: a set may differ only where float rounding decides it
    # (these barely trained models have near-uniform probabilities, so near-ties are common)
    outputs = torch_grader.outputs(images)
    differ = [i for i, (a, b) in enumerate(zip(expected, got)) if a["grade_set"] != b["grade_set"]]
    assert all(_a_rounding_tie(torch_grader, outputs, i, expected[i]["grade_set"], got[i]["grade_set"]) for i in differ)
    assert len({r["grade"] for r in expected}) >= 2, "a constant model would make the grade check empty"
    if expected[0]["probabilities"] is not None:
        diff = max(
            abs(a["probabilities"][g] - b["probabilities"][g])
            for a, b in zip(expected, got)
            for g in a["probabilities"]
        )
        assert diff <= 1e-4
    # the tuned cut points, not the head's rule, decided the ONNX grades too
    assert onnx_grader.cut_points == torch_grader.cut_points and onnx_grader.rule == "tuned cut points"


def test_the_file_alone_is_a_complete_grader(coral_run, tmp_path):
    out = tmp_path / "coral.onnx"
    assert main(["export", str(coral_run), "--out", str(out)]) == 0
    meta = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}[METADATA_KEY])
    ckpt = Checkpoint.load(coral_run / "best.pt")
    assert meta["grade_names"] == ckpt.grade_names and meta["task"] == "coral"
    assert meta["image_size"] == 32 and meta["input"]["dtype"] == "uint8" and meta["input"]["layout"] == "NHWC"
    assert meta["calibration"]["conformal"] == ckpt.calibration().conformal.to_dict()
    assert meta["calibration"]["thresholds"]["thresholds"] == ckpt.calibration().thresholds["thresholds"]
    assert meta["imgrade_version"] and list(meta["outputs"]) == [
        "score",
        "probabilities",
        "native",
        "grade",
        "grade_set",
    ]
    grader = OnnxEngine.from_file(out)
    card = grader.describe()
    assert card["grades"] == ckpt.grade_names and card["grade_sets"]["method"] == "aps" and card["runtime"] == "onnx"


def test_the_file_carries_the_model_card_and_no_path_of_this_machine(trained_run, trained_onnx, tmp_path_factory):
    payload = trained_onnx.read_bytes()
    meta = json.loads({p.key: p.value for p in onnx.load(trained_onnx).metadata_props}[METADATA_KEY])
    assert meta["model_card"] == (trained_run / "model_card.md").read_text()
    assert OnnxEngine.from_file(trained_onnx).model_card == meta["model_card"]
    assert meta["source"] == trained_run.name and meta["data_source"].endswith("(folder synth)")
    # neither the run's and data's folders nor imgrade's or torch's source files (the exporter's stack traces)
    for path in (tmp_path_factory.getbasetemp(), Path(imgrade.__file__).parent, Path(torch.__file__).parent):
        assert str(path).encode() not in payload, path


def test_predict_with_onnx_prints_what_pytorch_prints(trained_run, trained_onnx, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(generate_cucumbers(6, seed=3).imageset.images):
        Image.fromarray(image).resize((64, 48)).save(photos / f"c{i}.png")
    out = trained_onnx
    assert main(["predict", str(trained_run), str(photos)]) == 0
    with_torch = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert main(["predict", str(out), str(photos), "--runtime", "onnx"]) == 0
    with_onnx = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(with_onnx) == 6 and list(with_onnx[0]) == ["image", "score", "grade", "grade_set", "error"]
    for a, b in zip(with_torch, with_onnx):
        assert (a["image"], a["grade"], a["grade_set"]) == (b["image"], b["grade"], b["grade_set"])
        assert float(a["score"]) == pytest.approx(float(b["score"]), abs=2e-4)


def test_onnx_predict_runs_where_torch_cannot_be_imported(trained_run, trained_onnx, tmp_path):
    out = trained_onnx
    photo = tmp_path / "c.png"
    Image.fromarray(generate_cucumbers(1, seed=4).imageset.images[0]).save(photo)
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises
        "from imgrade.cli import main\n"
        f"rc = main(['predict', {str(out)!r}, {str(photo)!r}, '--format', 'json'])\n"
        "assert 'torch' not in [m.split('.')[0] for m, v in sys.modules.items() if v is not None]\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["grade"] in Checkpoint.load(trained_run / "best.pt").grade_names
    # a run folder there gives one clear line, not a traceback
    code = code.replace(repr(str(out)), repr(str(trained_run)))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "needs PyTorch" in done.stderr and "imgrade export" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _onnx_without_metadata(path: Path) -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["score"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), path)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.write_bytes(b"\x00garbage" * 50), "is not a readable ONNX model"),
        (lambda p: p.write_bytes(b""), "is not a readable ONNX model"),
        (_onnx_without_metadata, "not an imgrade grader"),
    ],
    ids=["random-bytes", "empty", "foreign-onnx"],
)
def test_foreign_onnx_files_are_refused_in_one_line(make, expected, tmp_path, capsys):
    path = tmp_path / "model.onnx"
    make(path)
    photo = tmp_path / "c.png"
    Image.new("RGB", (32, 32)).save(photo)
    assert main(["predict", str(path), str(photo)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and str(path) in err and "imgrade export" in err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["export", "{run}", "--out", "{tmp}/model.pt"], "must end in .onnx"),
        (["predict", "{run}", "{tmp}", "--runtime", "onnx"], "--runtime onnx needs an .onnx file"),
        (["export", "{tmp}/nothing", "--out", "{tmp}/m.onnx"], "does not exist"),
    ],
)
def test_export_usage_errors_are_one_line(argv, expected, trained_run, tmp_path, capsys):
    argv = [a.format(run=trained_run, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err


def test_a_failed_export_leaves_the_previous_file_intact(trained_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous export")
    from imgrade.runtime import onnx_export as export

    def disagree(predictor, payload):
        raise export.ImgradeError("the exported graph disagrees with PyTorch: nothing written")

    monkeypatch.setattr(export, "_check_parity", disagree)
    assert main(["export", str(trained_run), "--out", str(out)]) == 2
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"], "no temporary file is left behind"
    assert "disagrees" in capsys.readouterr().err


def test_batching_does_not_change_onnx_results(trained_onnx):
    grader = OnnxEngine.from_file(trained_onnx)
    images = generate_cucumbers(37, seed=9).imageset.images
    whole, chunked = grader.outputs(images, batch_size=256), grader.outputs(images, batch_size=5)
    np.testing.assert_allclose(whole.scores, chunked.scores, atol=1e-5)
    np.testing.assert_array_equal(whole.native, chunked.native)
    single = np.concatenate([grader.outputs(images[i : i + 1]).scores for i in range(len(images))])
    np.testing.assert_allclose(single, whole.scores, atol=1e-5)


CONSUMER = Path(__file__).resolve().parents[2] / "examples" / "grade_with_onnxruntime.py"


def _plain_consumer(model: Path, photos: list[Path]) -> list[dict]:
    """examples/grade_with_onnxruntime.py on ``photos`` in a fresh interpreter, which must not import imgrade."""
    script = (
        "import runpy, sys\n"
        f"sys.argv = ['consumer', {str(model)!r}] + sys.argv[1:]\n"
        f"runpy.run_path({str(CONSUMER)!r}, run_name='__main__')\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('imgrade', 'torch')], 'the consumer imported imgrade'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, photos)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return list(csv.DictReader(done.stdout.splitlines()))


def test_plain_onnxruntime_reads_imgrades_grade_and_set_from_the_file(graded_run, tmp_path):
    run = _with_tuned_cut_points(graded_run, tmp_path) if graded_run.name == "regression" else graded_run
    out = tmp_path / "model.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    images, _ = _real_or_synthetic_images()
    photos = []
    for i, pixels in enumerate(images):
        photos.append(tmp_path / f"photo{i:03d}.png")
        Image.fromarray(pixels).save(photos[-1])
    rows = _plain_consumer(out, photos)
    assert [row["image"] for row in rows] == [str(p) for p in photos]

    # the same runtime through imgrade: exactly the same grades and sets
    from_file = imgrade.Grader.load(out).grade(photos)
    assert [row["grade"] for row in rows] == [g.name for g in from_file]
    assert [row["grade_set"].split("|") for row in rows] == [g.grade_set for g in from_file]
    # the run itself (PyTorch): the same grades; a set differs only where float rounding decides it
    from_run = imgrade.Grader.load(run).grade(photos)
    assert [row["grade"] for row in rows] == [g.name for g in from_run]
    torch_grader = load_grader(run)
    outputs = torch_grader.outputs(images)
    for i, (row, expected) in enumerate(zip(rows, from_run)):
        got = row["grade_set"].split("|")
        assert got == expected.grade_set or _a_rounding_tie(torch_grader, outputs, i, expected.grade_set, got)
    if run.name.endswith("-tuned"):
        assert OnnxEngine.from_file(out).rule == "tuned cut points"
        # the tuned cut points decide: reading the head's own grade would give other grades
        native = OnnxEngine.from_file(out).outputs(images).native
        assert any(torch_grader.grade_names[n] != row["grade"] for n, row in zip(native, rows))


def test_an_any_size_file_resizes_photos_itself_as_imgrade_does(trained_run, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "any.onnx"
    assert main(["export", str(trained_run), "--out", str(out), "--any-size"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == ["height", "width", 3]
    meta = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert meta["input"]["any_size"] is True and meta["input"]["shape"] == ["batch", "height", "width", 3]
    names = [o.name for o in session.get_outputs()]
    grader = imgrade.Grader.load(trained_run)
    rng = np.random.default_rng(3)
    for height, width in ((120, 50), (20, 70), (32, 32), (301, 300)):
        photos = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
        got = dict(zip(names, session.run(None, {"images": photos})))
        expected = grader.grade(list(photos))
        assert [meta["grade_names"][i] for i in got["grade"]] == [g.name for g in expected]
        assert np.abs(got["score"] - [g.score for g in expected]).max() <= 1e-4
    # imgrade reads it as any other file: it feeds photos it resized itself, which the graph leaves as they are
    photos = list(rng.integers(0, 256, (4, 90, 40, 3), dtype=np.uint8))
    assert [g.name for g in imgrade.Grader.load(out).grade(photos)] == [g.name for g in grader.grade(photos)]
