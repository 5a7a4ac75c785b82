"""`train --unlabeled`, `--teacher` and `--distill`: a network taught by another on labelled and
unlabelled photos, its teacher trained first when none is given, resumed to the same weights."""

import numpy as np
import pytest
import torch

from imgrade.cli import main
from imgrade.config import load_config
from imgrade.core.rundir import load_split
from imgrade.data.cucumber9 import read_cucumber9
from imgrade.pipeline.teacher import TeacherValues
from imgrade.runtime.run_checkpoint import Checkpoint

TRAIN = ["--epochs", "2", "--depth", "11", "--seed", "3", "--threads", "1", "--compile", "off"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """40 synthetic cucumbers as photo files in grade folders: a pool whose grades nobody reads."""
    out = tmp_path_factory.mktemp("pool") / "pool"
    assert main(["data", "synth", "--out", str(out), "--n", "40", "--seed", "7", "--format", "folders"]) == 0
    return out


@pytest.fixture(scope="module")
def taught_run(tmp_path_factory, synth_dir, pool):
    run = tmp_path_factory.mktemp("runs") / "taught"
    assert (
        main(["train", "--data", str(synth_dir), "--unlabeled", str(pool), "--task", "sord", *TRAIN, "--out", str(run)])
        == 0
    )
    return run


def _weights(run):
    return Checkpoint.load(run / "last.pt").model_state


def _errors(capsys) -> list[str]:
    """The error lines the CLI printed (the logs go to stderr too)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("imgrade: error")]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unlabeled_trains_a_teacher_first_then_a_student_on_both(taught_run, pool, synth_dir):
    teacher = taught_run / "teacher"
    assert (teacher / "best.pt").is_file() and (teacher / "model_card.md").is_file()
    cfg = load_config(taught_run / "config.yaml")
    assert cfg.train.teacher == str(teacher.resolve()) and cfg.data.unlabeled == str(pool.resolve())
    assert load_config(teacher / "config.yaml").data.unlabeled is None  # the teacher saw the labelled photos alone
    kept = TeacherValues.load(taught_run / "teacher.npz")
    split = Checkpoint.load(taught_run / "best.pt")
    assert kept.kind == "probabilities" and len(kept.pool_ids) == 40 and kept.pool_ids[0].endswith(".png")
    n = len(kept.values) - 40
    taught = ~np.isnan(kept.values[:, 0])
    train = load_split(taught_run, read_cucumber9(synth_dir))["train"]
    assert (
        taught[:n].sum() == len(train) and taught[:n][train].all() and taught[n:].all()
    )  # training photos and the pool; never val or test
    np.testing.assert_allclose(kept.values[taught].sum(axis=1), 1.0, atol=1e-5)
    assert split.grade_names is not None
    assert not _same(_weights(taught_run), _weights(teacher))


def test_the_student_exports_and_grades_like_any_run(taught_run, tmp_path, pool):
    assert main(["export", str(taught_run), "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["predict", str(tmp_path / "m.onnx"), str(pool), "--out", str(tmp_path / "g.csv")]) == 0
    assert len((tmp_path / "g.csv").read_text().splitlines()) == 1 + 40


def test_distill_teaches_one_network_with_the_recipes_ensemble(synth_dir, tmp_path):
    run = tmp_path / "distilled"
    args = ["train", "--data", str(synth_dir), "--task", "classification", "--ensemble", "2", "--distill"]
    assert main([*args, "--epochs", "1", "--depth", "11", "--threads", "1", "--out", str(run)]) == 0
    assert Checkpoint.load(run / "teacher" / "best.pt").members == 2
    student = Checkpoint.load(run / "best.pt")
    assert student.members == 1 and student.config.train.ensemble == 1 and student.config.train.distill
    assert len(TeacherValues.load(run / "teacher.npz").pool_ids) == 0  # the labelled photos alone


def test_a_given_teacher_onnx_teaches_a_run_of_another_task(trained_onnx, synth_dir, pool, tmp_path, capsys):
    # the reference regression teacher gives scores: a regression student learns them
    run = tmp_path / "from-onnx"
    args = ["train", "--data", str(synth_dir), "--teacher", str(trained_onnx), "--unlabeled", str(pool)]
    assert main([*args, "--epochs", "1", "--depth", "11", "--threads", "1", "--out", str(run)]) == 0
    kept = TeacherValues.load(run / "teacher.npz")
    assert kept.kind == "scores" and kept.values.shape[1] == 1 and not (run / "teacher").exists()
    # ... but a graded task needs the teacher's probabilities
    code = main([*args, "--task", "sord", "--epochs", "1", "--depth", "11", "--out", str(tmp_path / "sord")])
    errors = _errors(capsys)
    assert code == 2 and len(errors) == 1 and "gives scores, not grade probabilities" in errors[0]


def test_a_resumed_taught_run_has_the_uninterrupted_weights(synth_dir, pool, tmp_path, interrupted_training):
    args = ["train", "--data", str(synth_dir), "--unlabeled", str(pool), "--task", "sord", *TRAIN, "--deterministic"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    with interrupted_training():  # stops after the teacher's first epoch, then after the student's
        assert main([*args, "--out", str(tmp_path / "broken")]) == 130
        assert not (tmp_path / "broken" / "teacher.npz").exists()
        assert main(["train", "--resume", "--out", str(tmp_path / "broken")]) == 130
        assert (tmp_path / "broken" / "teacher.npz").is_file()
    assert main(["train", "--resume", "--out", str(tmp_path / "broken")]) == 0
    assert _same(_weights(tmp_path / "whole" / "teacher"), _weights(tmp_path / "broken" / "teacher"))
    assert _same(_weights(tmp_path / "whole"), _weights(tmp_path / "broken"))


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--unlabeled", "nowhere"], "--unlabeled nowhere does not exist"),
        (["--unlabeled", "{notes}"], "is not a folder, a .csv or a .txt list"),
        (["--unlabeled", "{labelled}"], "are also in the labelled set"),
        (["--teacher", "nowhere"], "run folder nowhere does not exist"),
        (["--distill-weight", "2"], "train.distill_weight 2.0 must be in [0, 1]"),
    ],
)
def test_bad_teaching_input_stops_in_one_line(synth_dir, tmp_path, capsys, extra, expected):
    (tmp_path / "notes.md").write_text("no photos here")
    labelled = tmp_path / "labelled"
    assert main(["data", "synth", "--out", str(labelled), "--n", "20", "--format", "folders"]) == 0
    extra = [e.format(notes=tmp_path / "notes.md", labelled=labelled) for e in extra]
    capsys.readouterr()
    code = main(
        ["train", "--data", str(labelled), *extra, "--epochs", "1", "--depth", "11", "--out", str(tmp_path / "r")]
    )
    errors = _errors(capsys)
    assert code == 2 and len(errors) == 1 and expected in errors[0], errors
    assert not (tmp_path / "r" / "teacher").exists()  # refused before any training


def test_a_teacher_of_other_grades_is_refused(trained_run, tmp_path, capsys):
    other = tmp_path / "other"
    (other / "a").mkdir(parents=True)
    (other / "b").mkdir()
    from PIL import Image

    for grade in "ab":
        for i in range(6):
            Image.fromarray(np.full((32, 32, 3), 30 * i, dtype=np.uint8)).save(other / grade / f"{i}.png")
    code = main(
        [
            "train",
            "--data",
            str(other),
            "--teacher",
            str(trained_run),
            "--epochs",
            "1",
            "--depth",
            "11",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    errors = _errors(capsys)
    assert code == 2 and len(errors) == 1 and "pass a teacher trained on the same grades" in errors[0]


def test_fewshot_refuses_to_teach_in_one_line(synth_dir, pool, tmp_path, capsys):
    code = main(["fewshot", "--data", str(synth_dir), "--unlabeled", str(pool), "--out", str(tmp_path / "few")])
    errors = _errors(capsys)
    assert code == 2 and len(errors) == 1 and "fewshot does not teach" in errors[0]
    assert not (tmp_path / "few").exists()


def test_an_ensemble_learns_from_unlabelled_photos_member_by_member(synth_dir, pool, tmp_path):
    run = tmp_path / "semi-ensemble"
    args = ["train", "--data", str(synth_dir), "--unlabeled", str(pool), "--ensemble", "2", "--task", "sord"]
    assert main([*args, "--epochs", "1", "--depth", "11", "--threads", "1", "--out", str(run)]) == 0
    assert Checkpoint.load(run / "teacher" / "best.pt").members == 2 and Checkpoint.load(run / "best.pt").members == 2
    for member in ("m0", "m1"):
        kept = TeacherValues.load(run / "members" / member / "teacher.npz")
        assert kept.teacher == str((run / "teacher").resolve()) and len(kept.pool_ids) == 40
    assert load_config(run / "config.yaml").train.teacher == str((run / "teacher").resolve())


def test_overwrite_trains_the_teacher_again(synth_dir, pool, tmp_path):
    run = tmp_path / "again"
    args = ["train", "--data", str(synth_dir), "--unlabeled", str(pool), "--epochs", "1", "--depth", "11"]
    assert main([*args, "--threads", "1", "--out", str(run)]) == 0
    first = Checkpoint.load(run / "teacher" / "best.pt").config.train.seed
    assert main([*args, "--threads", "1", "--seed", "5", "--out", str(run), "--overwrite"]) == 0
    assert first == 0 and Checkpoint.load(run / "teacher" / "best.pt").config.train.seed == 5
