"""`imgrade evaluate MODEL.onnx --data D`: the shipped file accepted on photos, with the run's numbers."""

import hashlib
import json

import imgrade
from imgrade.cli import main


def test_the_exported_file_scores_what_the_run_scores_on_the_same_photos(trained_run, synth_dir, tmp_path, capsys):
    model = tmp_path / "ship" / "grader.onnx"
    assert main(["export", str(trained_run), "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(trained_run), "--data", str(synth_dir), "--out", str(tmp_path / "run-eval")]) == 0
    run_printed = capsys.readouterr().out
    assert main(["evaluate", str(model), "--data", str(synth_dir)]) == 0
    file_printed = capsys.readouterr().out

    out = model.parent / "grader-eval-synth"  # the default: beside the file
    from_run = json.loads((tmp_path / "run-eval" / "metrics.json").read_text())
    from_file = json.loads((out / "metrics.json").read_text())
    assert from_file["n"] == from_run["n"] == 90
    for key in ("accuracy", "within1", "qwk", "grade_mae"):
        assert from_file[key] == from_run[key], key
    assert abs(from_file["mae"] - from_run["mae"]) < 1e-4
    assert from_file["grade_sets"]["coverage"] == from_run["grade_sets"]["coverage"]
    assert from_file["per_grade"].keys() == from_run["per_grade"].keys()
    assert file_printed == run_printed  # the printed tables too

    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert from_file["model"]["sha256"] == sha and from_file["model"]["precision"] == "fp32"
    card = (out / "model_card.md").read_text()
    assert (trained_run / "model_card.md").read_text().strip().splitlines()[0] in card  # the file's own card first
    assert f"SHA-256 `{sha}`" in card and "## Acceptance: grader.onnx" in card
    assert str(synth_dir) not in card and "(folder synth)" in card  # the photos' folder by name only
    assert sha in (out / "report.html").read_text()
    assert (out / "predictions.csv").read_text().count("\n") == 91


def test_the_python_evaluate_takes_the_file_too(trained_onnx, synth_dir, tmp_path):
    metrics = imgrade.evaluate(trained_onnx, data=str(synth_dir), out=tmp_path / "e")
    assert metrics["n"] == 90 and metrics["model"]["runtime"] == "onnx"
    assert (tmp_path / "e" / "report.html").is_file()


def test_a_file_without_photos_to_grade_is_one_line(trained_onnx, capsys):
    assert main(["evaluate", str(trained_onnx)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data" in err and trained_onnx.name in err
