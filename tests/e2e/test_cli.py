"""The real CLI, in-process, on small generated sets: assert on the files and what a user reads."""

import csv
import importlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from imgrade.cli import main
from imgrade.runtime.run_checkpoint import Checkpoint

TRAINING = importlib.import_module("imgrade.pipeline.trainer")  # the module; `pipeline.train` is the function

GRADES = ["2L", "L", "M", "S", "2S", "BL", "BM", "BS", "C"]


def _is_png(path):
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200


def test_no_arguments_prints_usage_with_examples(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "imgrade train --data" in out and "imgrade evaluate" in out and "imgrade demo" in out


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "imgrade", "model", "summary", "--depth", "11"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Trainable params" in result.stdout


def test_model_summary_reference_totals(capsys):
    assert main(["model", "summary"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 848,497" in out
    assert "Trainable params: 843,281" in out
    assert "Non-trainable params: 5,216" in out


def test_train_writes_a_complete_run(trained_run):
    for name in ("config.yaml", "split.json", "data.json", "best.pt", "last.pt", "history.csv", "loss_curve.png"):
        assert (trained_run / name).is_file(), name
    with open(trained_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(r["val_loss"])) for r in rows)
    split = json.loads((trained_run / "split.json").read_text())
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (54, 18, 18)
    assert not set(split["train"]) & set(split["test"])
    ckpt = Checkpoint.load(trained_run / "best.pt")
    assert ckpt.grade_names == GRADES and ckpt.mean_image.shape == (3, 32, 32)
    assert _is_png(trained_run / "loss_curve.png")


def test_evaluate_writes_metrics_predictions_and_pictures(trained_run, capsys):
    assert main(["evaluate", str(trained_run)]) == 0
    out = capsys.readouterr().out
    assert "qwk" in out.lower() and "2L" in out and "BS" in out
    folder = trained_run / "eval-test"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["n"] == 18
    for key in ("mae", "rmse", "accuracy", "within1", "qwk", "confusion", "per_grade"):
        assert key in metrics
    assert np.asarray(metrics["confusion"]).sum() == 18 and list(metrics["per_grade"]) == GRADES
    with open(folder / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    split = json.loads((trained_run / "split.json").read_text())
    assert [r["image"] for r in rows] == split["ids"]["test"]
    assert {r["true_grade"] for r in rows} <= set(GRADES) and {r["predicted_grade"] for r in rows} <= set(GRADES)
    # the printed MAE is the mean of the per-image errors in the CSV
    assert abs(np.mean([abs(float(r["error"])) for r in rows]) - metrics["mae"]) < 1e-3
    for name in ("scatter.png", "error_violin.png", "confusion.png", "loss_curve.png"):
        assert _is_png(folder / name), name


def test_train_writes_a_model_card_and_evaluate_rewrites_it_with_its_figures(trained_run, tmp_path_factory, capsys):
    card = trained_run / "model_card.md"
    text = card.read_text()
    assert text.startswith(f"# Model card: {trained_run.name}\n")
    assert "- Source: synthetic cucumbers in CUCUMBER-9 prototype 1 format (folder synth)" in text
    assert "| test | 18 |" in text and "| train | 54 |" in text and "## Intended use and limits" in text
    assert str(tmp_path_factory.getbasetemp()) not in text  # names, never the paths of this machine
    card.unlink()
    assert main(["evaluate", str(trained_run)]) == 0
    metrics = json.loads((trained_run / "eval-test" / "metrics.json").read_text())
    refreshed = card.read_text()
    headline = "| " + " | ".join(
        f"{metrics[k]:.3f}" for k in ("accuracy", "within1", "grade_mae", "qwk", "mae", "rmse")
    )
    assert refreshed == text and headline in refreshed  # the card's figures are evaluate's
    assert f"| {GRADES[0]} | {metrics['per_grade'][GRADES[0]]['n']} | " in refreshed


def test_predict_csv_and_json_on_a_folder(trained_run, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    assert main(["predict", str(trained_run), str(photos)]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == ["p0.png", "p1.png", "p2.png"]
    assert all(r["grade"] in GRADES for r in rows)
    assert main(["predict", str(trained_run), str(photos / "p1.png"), "--format", "json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["grade"] in GRADES and item["score"] == pytest.approx(float(rows[1]["score"]), abs=1e-4)


def test_same_seed_gives_identical_runs(synth_dir, tmp_path):
    runs = []
    for name in ("a", "b"):
        assert (
            main(["train", "--data", str(synth_dir), "--epochs", "1", "--depth", "11", "--out", str(tmp_path / name)])
            == 0
        )
        runs.append(Checkpoint.load(tmp_path / name / "last.pt"))
    assert runs[0].training.history[0]["val_loss"] == runs[1].training.history[0]["val_loss"]
    for key, value in runs[0].model_state.items():
        assert torch.equal(value, runs[1].model_state[key]), key


def test_resume_continues_to_the_same_weights(synth_dir, tmp_path, monkeypatch):
    args = ["--data", str(synth_dir), "--epochs", "3", "--depth", "11"]
    assert main(["train", *args, "--out", str(tmp_path / "full")]) == 0

    real_write = TRAINING.write_history

    def interrupt_after_two_epochs(path, history):
        real_write(path, history)
        if len(history) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(TRAINING, "write_history", interrupt_after_two_epochs)
    assert main(["train", *args, "--out", str(tmp_path / "cut")]) == 130
    monkeypatch.setattr(TRAINING, "write_history", real_write)
    assert Checkpoint.load(tmp_path / "cut" / "last.pt").epoch == 2
    # a plain train into the unfinished run is refused; --resume (with the same flags, or none) finishes it
    assert main(["train", *args, "--out", str(tmp_path / "cut")]) == 2
    assert main(["train", *args, "--resume", "--out", str(tmp_path / "cut")]) == 0
    full, cut = Checkpoint.load(tmp_path / "full" / "last.pt"), Checkpoint.load(tmp_path / "cut" / "last.pt")
    assert [r["val_loss"] for r in full.training.history] == [r["val_loss"] for r in cut.training.history]
    for key, value in full.model_state.items():
        assert torch.equal(value, cut.model_state[key]), key


def test_finished_run_is_not_overwritten_without_flag(trained_run, synth_dir, capsys):
    before = (trained_run / "best.pt").read_bytes()
    assert main(["train", "--data", str(synth_dir), "--epochs", "1", "--out", str(trained_run)]) == 2
    err = capsys.readouterr().err
    assert "already holds a finished run" in err and "--overwrite" in err
    assert (trained_run / "best.pt").read_bytes() == before


def test_evaluate_on_other_data_matches_grades_by_name(trained_run, tmp_path, capsys):
    # class folders holding only three of the grades, in another order on disk
    root = tmp_path / "folders"
    rng = np.random.default_rng(1)
    for grade in ("C", "M", "2L"):
        (root / grade).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / grade / f"{i}.png")
    assert main(["evaluate", str(trained_run), "--data", str(root), "--out", str(tmp_path / "ev")]) == 0
    with open(tmp_path / "ev" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["true_grade"] for r in rows) == ["2L", "2L", "C", "C", "M", "M"]


@pytest.fixture(scope="session")
def continuous_run(tmp_path_factory):
    """1 epoch regressing the synthetic cucumbers' length from a CSV manifest (60 images)."""
    folders = tmp_path_factory.mktemp("data") / "folders"
    assert main(["data", "synth", "--out", str(folders), "--n", "60", "--format", "folders"]) == 0
    run = tmp_path_factory.mktemp("runs") / "continuous"
    assert (
        main(
            [
                "train",
                "--data",
                str(folders / "attributes.csv"),
                "--target-column",
                "length",
                "--target",
                "continuous",
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


def test_continuous_target_from_a_csv_manifest(continuous_run, capsys):
    run = continuous_run
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert metrics["n"] == 12 and "r2" in metrics and "qwk" not in metrics
    assert _is_png(run / "eval-test" / "scatter.png") and _is_png(run / "eval-test" / "error_violin.png")


def test_train_card_of_a_continuous_target_gives_its_range_and_error(continuous_run):
    text = (continuous_run / "model_card.md").read_text()
    assert "- Source: CSV manifest attributes.csv" in text and "## Calibration" not in text
    assert "| MAE | RMSE | R2 | Pearson |" in text and "predictions outside that range are extrapolation" in text


def test_demo_runs_end_to_end_small(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--n", "60", "--epochs", "1"]) == 0
    err = capsys.readouterr().err  # the demo is a tour: its data summary, metrics and pointers are all log lines
    assert "per grade:" in err and "qwk" in err.lower()
    assert err.index("QWK  ") < err.index("Look at") < err.rindex("scatter.png")
    assert _is_png(tmp_path / "demo" / "run" / "eval-test" / "error_violin.png")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["train", "--data", "/nonexistent/set", "--out", "{tmp}/r", "--epochs", "1"],
            "/nonexistent/set does not exist",
        ),
        (["evaluate", "{tmp}/no-run"], "no-run does not exist"),
        (["train", "--data", "{tmp}", "--out", "{tmp}/r", "--depth", "30"], "--depth"),
        (["predict", "{tmp}/no-run", "x.png"], "no-run does not exist"),
        (["data", "info", "{tmp}/empty"], "empty"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, expected, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imgrade: error:") and len(err.splitlines()) == 1
    assert expected in err


def test_run_without_checkpoint_and_foreign_checkpoint_version(trained_run, tmp_path, capsys):
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    assert main(["evaluate", str(empty_run)]) == 2
    assert "has no checkpoint best.pt" in capsys.readouterr().err
    old = Checkpoint.load(trained_run / "best.pt")
    old.save(empty_run / "best.pt")
    torch.save({**old.to_payload(), "format_version": 99}, empty_run / "best.pt")
    assert main(["evaluate", str(empty_run)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint format 99" in err and "retrain" in err
    (empty_run / "best.pt").write_bytes(b"not a checkpoint at all")
    assert main(["evaluate", str(empty_run)]) == 2
    assert "not a readable imgrade checkpoint" in capsys.readouterr().err


def test_data_info_on_the_real_sample(shared_dir, capsys):
    path = shared_dir / "data" / "cucumber9-p1-sample" / "cucumber-9-python"
    assert main(["data", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "images:     248" in out
    expected = {"2L": 32, "L": 24, "M": 32, "S": 23, "2S": 26, "BL": 28, "BM": 30, "BS": 25, "C": 28}
    for grade, count in expected.items():
        assert any(line.split() == [grade, str(count)] for line in out.splitlines()), grade
    assert "32x32" in out


def test_train_and_evaluate_on_the_real_sample(shared_dir, tmp_path, capsys):
    path = shared_dir / "data" / "cucumber9-p1-sample" / "cucumber-9-python"
    run = tmp_path / "p1"
    assert main(["train", "--data", str(path), "--epochs", "1", "--out", str(run)]) == 0
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    split = json.loads((run / "split.json").read_text())
    assert len(split["test"]) in (49, 50)  # 20% of 248, stratified per grade
    assert metrics["n"] == len(split["test"]) == sum(v["n"] for v in metrics["per_grade"].values())
    assert metrics["data"].startswith("CUCUMBER-9 prototype 1")


def test_predict_names_a_corrupt_photo(trained_run, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["predict", str(trained_run), str(bad)]) == 1
    captured = capsys.readouterr()
    (row,) = csv.DictReader(captured.out.splitlines())
    assert row["image"] == str(bad) and "broken.jpg" in row["error"] and row["score"] == ""
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "1 of 1 photos could not be graded" in err


def test_csv_manifest_errors_name_file_and_row(tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    manifest = tmp_path / "set.csv"
    manifest.write_text("path,target\na.png,1\na.png,big\n")
    assert main(["train", "--data", str(manifest), "--out", str(tmp_path / "run"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "set.csv" in err and "row 3" in err and "big" in err
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_published_split_keeps_the_test_batch(synth_dir, tmp_path):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(synth_dir),
                "--split",
                "published",
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
    split = json.loads((run / "split.json").read_text())
    assert split["ids"]["test"] and all(i.startswith("test_batch:") for i in split["ids"]["test"])
    assert not any(i.startswith("test_batch:") for i in split["ids"]["train"] + split["ids"]["val"])


# ----------------------------------------------------------------------------- formulations


def test_training_calibrates_thresholds_and_grade_sets(coral_run, capsys):
    calibration = Checkpoint.load(coral_run / "best.pt").calibration()
    assert calibration.thresholds["kind"] in ("tuned", "rounding") and calibration.thresholds["reason"]
    assert len(calibration.thresholds["thresholds"]) == 8
    assert calibration.conformal.kind == "aps" and calibration.conformal.alpha == 0.1


def test_evaluate_reports_decisions_sets_and_html(coral_run, capsys):
    assert main(["evaluate", str(coral_run)]) == 0
    out = capsys.readouterr().out
    assert "coral rule" in out and "grade sets (aps, alpha 0.1)" in out
    folder = coral_run / "eval-test"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["task"] == "coral" and 0 <= metrics["grade_sets"]["coverage"] <= 1
    assert metrics["grade_sets"]["mean_size"] >= 1
    with open(folder / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:  # every grade set is a |-separated run of grade names holding at least one grade
        assert set(row["grade_set"].split("|")) <= set(GRADES)
    page = (folder / "report.html").read_text()
    assert "data:image/png;base64," in page and "Per grade" in page and "http://" not in page


def test_predict_prints_the_grade_set_and_probabilities(coral_run, tmp_path, capsys):
    photo = tmp_path / "p.png"
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(photo)
    assert main(["predict", str(coral_run), str(photo), "--format", "json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert list(item) == ["image", "score", "grade", "grade_index", "grade_set", "probabilities"]  # Grade.to_dict
    assert item["grade"] == GRADES[item["grade_index"]] and set(item["grade_set"]) <= set(GRADES)
    assert abs(sum(item["probabilities"].values()) - 1) < 1e-3
    assert main(["predict", str(coral_run), str(photo)]) == 0
    (row,) = csv.DictReader(capsys.readouterr().out.splitlines())
    assert row["grade_set"] == "|".join(item["grade_set"]) and row["grade"] == item["grade"]
    assert list(row) == ["image", "score", "grade", "grade_set", *(f"p_{g}" for g in GRADES), "error"]
    assert [float(row[f"p_{g}"]) for g in GRADES] == [round(p, 4) for p in item["probabilities"].values()]


def test_calibrate_verb_changes_alpha_and_sets_get_wider(coral_run, capsys):
    assert main(["calibrate", str(coral_run), "--alpha", "0.5"]) == 0
    loose = Checkpoint.load(coral_run / "best.pt").calibration().conformal
    assert main(["calibrate", str(coral_run), "--alpha", "0.1"]) == 0
    strict = Checkpoint.load(coral_run / "best.pt").calibration().conformal
    assert loose.alpha == 0.5 and strict.alpha == 0.1 and strict.qhat >= loose.qhat
    assert "alpha: 0.1" in (coral_run / "config.yaml").read_text()


def test_calibrate_rewrites_the_model_card(coral_run, capsys):
    assert main(["calibrate", str(coral_run), "--objective", "accuracy", "--alpha", "0.2"]) == 0
    text = (coral_run / "model_card.md").read_text()
    assert "- Objective of the cut points: accuracy on the validation split" in text
    assert "alpha 0.2 (each set should hold the true grade 80% of the time)" in text
    assert main(["calibrate", str(coral_run), "--objective", "qwk", "--alpha", "0.1"]) == 0  # as the others expect
    assert "alpha 0.1 (" in (coral_run / "model_card.md").read_text()


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--alpha", "1.5"], "--alpha 1.5 must be between 0 and 1"),
        (["--alpha", "0.01"], "needs at least 99 validation images"),
    ],
)
def test_calibrate_bad_alpha_is_one_line(coral_run, extra, expected, capsys):
    before = (coral_run / "best.pt").read_bytes()
    assert main(["calibrate", str(coral_run), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err
    assert (coral_run / "best.pt").read_bytes() == before


def test_unknown_task_suggests_the_closest(synth_dir, tmp_path, capsys):
    assert main(["train", "--data", str(synth_dir), "--task", "clasification", "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'classification'" in capsys.readouterr().err


def test_thresholds_of_a_continuous_run_are_refused(continuous_run, capsys):
    capsys.readouterr()
    assert main(["calibrate", str(continuous_run)]) == 2
    assert "continuous target" in capsys.readouterr().err


def test_compare_two_tasks_writes_tables_plots_and_report(synth_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                "--data",
                str(synth_dir),
                "--tasks",
                "regression,classification",
                "--seeds",
                "2",
                "--epochs",
                "1",
                "--depth",
                "11",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| regression, rounding |" in printed and printed.strip().splitlines()[-1].startswith("use ")
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * 2  # tasks x seeds x (own rule, calibrated)
    assert {r["formulation"] for r in rows} == {
        "regression, rounding",
        "regression, calibrated",
        "classification, own rule",
        "classification, calibrated",
    }
    with open(out / "summary.csv") as f:
        summary = {r["formulation"]: r for r in csv.DictReader(f)}
    ref = [float(r["qwk"]) for r in rows if r["formulation"] == "regression, rounding"]
    assert float(summary["regression, rounding"]["qwk"]) == pytest.approx(np.mean(ref))
    assert "qwk_diff" in summary["classification, calibrated"]
    assert _is_png(out / "boxes.png") and "data:image/png;base64," in (out / "report.html").read_text()
    assert (out / "summary.md").read_text().count("\n|") >= 5
    # every run is a complete run folder that can be evaluated later
    assert (out / "runs" / "classification-seed1" / "best.pt").is_file()


def test_compare_folds_use_disjoint_test_sets(synth_dir, tmp_path, capsys):
    out = tmp_path / "cv"
    assert (
        main(
            [
                "compare",
                "--data",
                str(synth_dir),
                "--tasks",
                "regression",
                "--seeds",
                "1",
                "--folds",
                "3",
                "--epochs",
                "1",
                "--depth",
                "11",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    tests = [json.loads((out / "runs" / f"regression-fold{f}" / "split.json").read_text())["test"] for f in range(3)]
    assert sorted(sum(tests, [])) == list(range(90))


def test_calibration_holdout_keeps_grade_set_images_out_of_selection(synth_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(synth_dir),
                "--task",
                "classification",
                "--calibration-holdout",
                "0.5",
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
    assert "held-out calibration coverage" in capsys.readouterr().err
    split = json.loads((run / "split.json").read_text())
    parts = [set(split[name]) for name in ("train", "val", "test", "cal")]
    assert sum(len(p) for p in parts) == 90 and len(set().union(*parts)) == 90  # disjoint, complete
    assert len(split["cal"]) == 9 and len(split["val"]) == 9
    conformal = Checkpoint.load(run / "best.pt").calibration().conformal
    assert conformal.n == len(split["cal"])
    assert main(["calibrate", str(run), "--alpha", "0.2"]) == 0  # the verb uses the held-out images too
    assert Checkpoint.load(run / "best.pt").calibration().conformal.n == 9
