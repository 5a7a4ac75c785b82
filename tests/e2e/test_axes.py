"""`--task axes` end to end: train with a grade table, evaluate, export to ONNX and grade with the file."""

import csv
import json

import numpy as np
import onnx
import pytest
import yaml
from PIL import Image

from imgrade.cli import main
from imgrade.data.synthetic import generate_cucumbers
from imgrade.runtime import load_grader
from imgrade.runtime.onnx_engine import METADATA_KEY
from imgrade.runtime.run_checkpoint import Checkpoint

# CUCUMBER-9's grades with shape as the first axis and the rows in another order than the grades
TABLE = "grade,shape,size\nC,C,\nBL,bent,L\nBM,bent,M\nBS,bent,S\n2L,straight,2L\nL,straight,L\nM,straight,M\nS,straight,S\n2S,straight,2S\n"


@pytest.fixture(scope="module")
def axes_run(tmp_path_factory, synth_dir):
    """A 2-epoch depth-11 axes run on the synthetic set, trained from a table file that is then deleted."""
    folder = tmp_path_factory.mktemp("axes")
    table = folder / "table.csv"
    table.write_text(TABLE)
    run = folder / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(synth_dir),
                "--task",
                "axes",
                "--axes",
                str(table),
                "--depth",
                "11",
                "--epochs",
                "2",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    table.unlink()  # everything after training must work from the run alone
    return run, table


def test_the_run_keeps_its_grade_table(axes_run):
    run, table = axes_run
    ckpt = Checkpoint.load(run / "best.pt")
    assert ckpt.task == "axes"
    grade_axes = ckpt.head_state["grade_axes"]
    assert grade_axes["axes"] == {"shape": ["C", "bent", "straight"], "size": ["L", "M", "S", "2L", "2S"]}
    assert grade_axes["grades"]["C"] == ["C", None] and grade_axes["grades"]["BS"] == ["bent", "S"]
    assert list(grade_axes["grades"]) == ckpt.grade_names  # the data's order, not the file's
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["axes"] == str(table.resolve())
    assert ckpt.model_state["head.layers.0.weight"].shape[0] == 3 + 5


def test_evaluate_export_and_grade_with_the_onnx_file(axes_run, tmp_path, capsys):
    run, _ = axes_run
    assert main(["evaluate", str(run), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "axes" and "axes rule" in metrics["decisions"]
    predicted = list(csv.DictReader((tmp_path / "eval" / "predictions.csv").open()))
    assert len(predicted) == metrics["n"] > 0
    assert {r["predicted_grade"] for r in predicted} <= set(Checkpoint.load(run / "best.pt").grade_names)

    out = tmp_path / "axes.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    meta = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}[METADATA_KEY])
    assert meta["task"] == "axes" and list(meta["outputs"]) == [
        "score",
        "probabilities",
        "native",
        "grade",
        "grade_set",
    ]
    assert meta["head_state"] == {"grade_axes": Checkpoint.load(run / "best.pt").head_state["grade_axes"]}

    images = generate_cucumbers(120, seed=5).imageset.images
    torch_grader, onnx_grader = load_grader(run), load_grader(out)
    expected, got = torch_grader.outputs(images), onnx_grader.outputs(images, batch_size=50)
    assert np.abs(expected.scores - got.scores).max() <= 1e-4
    assert np.abs(expected.probabilities - got.probabilities).max() <= 1e-4
    np.testing.assert_allclose(got.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.array_equal(expected.native, got.native)
    assert np.array_equal(got.native, got.probabilities.argmax(axis=1))  # the most probable grade
    assert np.array_equal(torch_grader.grades(expected), onnx_grader.grades(got))
    assert onnx_grader.rule == torch_grader.rule in ("most probable grade", "tuned cut points")

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(images[:5]):
        Image.fromarray(image).save(photos / f"c{i}.png")
    capsys.readouterr()
    assert main(["predict", str(out), str(photos), "--runtime", "onnx"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    names = torch_grader.grade_names
    assert [r["grade"] for r in rows] == [names[k] for k in torch_grader.grades(expected)[:5]]


def test_a_bad_table_stops_training_with_one_line(synth_dir, tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("grade,size\n2L,big\nL,big\n")
    code = main(
        [
            "train",
            "--data",
            str(synth_dir),
            "--task",
            "axes",
            "--axes",
            str(table),
            "--epochs",
            "1",
            "--depth",
            "11",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert str(table) in err[-1] and "has no row for grade(s) M,S,2S,BL,BM,BS,C" in err[-1]
    assert not (tmp_path / "r" / "best.pt").exists()
