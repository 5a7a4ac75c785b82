"""`imgrade fewshot` end to end, its building blocks, and the domain gap in `imgrade evaluate`."""

import contextlib
import io
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import yaml
from PIL import Image

from imgrade.cli import main
from imgrade.data.imageset import ImageSet
from imgrade.pipeline.fewshot_trainer import FINETUNE_DEFAULTS, recipe_config, synthetic_for

FAST = ["--synthetic-n", "200", "--pretrain-epochs", "1", "--epochs", "1", "--depth", "11", "--threshold-folds", "2"]


class Recipe(NamedTuple):
    out: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def fewshot_run(tmp_path_factory, synth_dir) -> Recipe:
    """The whole recipe on the 90-image synthetic set standing in for a small real one."""
    out = tmp_path_factory.mktemp("few") / "few"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert main(["fewshot", "--data", str(synth_dir), "--out", str(out), *FAST]) == 0
    return Recipe(out, stdout.getvalue(), stderr.getvalue())


def test_recipe_runs_every_stage_and_prints_the_gap(fewshot_run):
    out, err = fewshot_run.stdout, fewshot_run.stderr
    fewshot_run = fewshot_run.out
    for stage in ("synthetic (pretrain test split)", "zero-shot on real", "fine-tuned on real", "sim-to-real gap"):
        assert stage in out
    assert "[1/4] generating 200 synthetic cucumbers" in err
    result = json.loads((fewshot_run / "fewshot.json").read_text())
    stages = result["stages"]
    assert stages["zero-shot on real"]["n"] == stages["fine-tuned on real"]["n"] == result["test_images"] > 0
    for m in stages.values():
        assert 0 <= m["accuracy"] <= m["within1"] <= 1
    assert (fewshot_run / "summary.md").read_text().count("\n|") >= 4
    assert (fewshot_run / "finetune" / "eval-test" / "report.html").is_file()  # the final model's report
    assert "zero-shot on real: accuracy" in err
    # one suggestion of what to do next, the recipe's, not one per run it trained
    assert [line.split()[:3] for line in err.splitlines() if line.startswith("next:")] == [
        ["next:", "imgrade", "evaluate"]
    ]
    # the fine-tuning run started from the pretraining run, with the recipe's settings
    config = yaml.safe_load((fewshot_run / "finetune" / "config.yaml").read_text())
    assert config["train"]["init"] == str((fewshot_run / "pretrain").resolve())
    assert config["model"]["task"] == FINETUNE_DEFAULTS["model.task"]
    assert config["train"]["color_jitter"] == FINETUNE_DEFAULTS["train.color_jitter"]
    pretrain_config = yaml.safe_load((fewshot_run / "pretrain" / "config.yaml").read_text())
    assert pretrain_config["data"]["path"] == str((fewshot_run / "synthetic").resolve())
    assert pretrain_config["model"]["depth"] == 11


def test_a_finished_recipe_is_not_overwritten(fewshot_run, synth_dir, capsys):
    fewshot_run = fewshot_run.out
    before = (fewshot_run / "fewshot.json").read_bytes()
    assert main(["fewshot", "--data", str(synth_dir), "--out", str(fewshot_run), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds a finished fewshot recipe" in err
    assert (fewshot_run / "fewshot.json").read_bytes() == before


def test_an_interrupted_recipe_reuses_the_finished_pretraining(fewshot_run, synth_dir, capsys, tmp_path):
    fewshot_run = fewshot_run.out
    out = tmp_path / "again"
    out.mkdir()
    (out / "pretrain").symlink_to(fewshot_run / "pretrain", target_is_directory=True)
    (out / "synthetic").symlink_to(fewshot_run / "synthetic", target_is_directory=True)
    pretrained = (fewshot_run / "pretrain" / "best.pt").read_bytes()
    assert main(["fewshot", "--data", str(synth_dir), "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "already finished: reusing it" in err and "generating" not in err
    assert (fewshot_run / "pretrain" / "best.pt").read_bytes() == pretrained
    assert (out / "finetune" / "best.pt").is_file()


def test_init_reuses_a_pretrained_run_without_generating(fewshot_run, synth_dir, capsys, tmp_path):
    fewshot_run = fewshot_run.out
    out = tmp_path / "reuse"
    assert (
        main(["fewshot", "--data", str(synth_dir), "--init", str(fewshot_run / "pretrain"), "--out", str(out), *FAST])
        == 0
    )
    assert "generating" not in capsys.readouterr().err
    assert not (out / "synthetic").exists() and (out / "finetune" / "best.pt").is_file()


def test_init_from_a_checkpoint_file_whose_data_is_gone_still_fine_tunes(fewshot_run, synth_dir, capsys, tmp_path):
    fewshot_run = fewshot_run.out
    moved = tmp_path / "pretrain"
    moved.mkdir()
    (moved / "best.pt").write_bytes((fewshot_run / "pretrain" / "best.pt").read_bytes())
    (fewshot_run / "synthetic").rename(tmp_path / "synthetic-moved")  # the pretraining's data is gone
    try:
        out = tmp_path / "reuse"
        assert (
            main(["fewshot", "--data", str(synth_dir), "--init", str(moved / "best.pt"), "--out", str(out), *FAST]) == 0
        )
    finally:
        (tmp_path / "synthetic-moved").rename(fewshot_run / "synthetic")
    captured = capsys.readouterr()
    assert "no synthetic test row" in captured.err
    stages = json.loads((out / "fewshot.json").read_text())["stages"]
    assert list(stages) == ["zero-shot on real", "fine-tuned on real"]
    assert "sim-to-real gap" not in captured.out


def test_grades_the_generator_cannot_draw_are_one_clear_line(tmp_path, capsys):
    data = tmp_path / "bolts"
    for grade in ("good", "bad"):
        (data / grade).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(data / grade / f"{i}.png")
    assert main(["fewshot", "--data", str(data), "--out", str(tmp_path / "out"), *FAST]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("imgrade: error:")]
    assert len(errors) == 1
    assert "does not draw" in errors[0] and "good" in errors[0] and "--init" in errors[0]
    assert not (tmp_path / "out" / "synthetic").exists()


def test_synthetic_photos_take_the_real_sets_grade_names_and_order():
    real = ImageSet(
        images=np.zeros((3, 32, 32, 3), np.uint8),
        targets=np.array([0, 1, 2], np.float32),
        grade_names=["C", "2L", "BM"],
        ids=["a", "b", "c"],
    )
    images, labels, names = synthetic_for(real, 120, image_size=32, seed=3, randomize=0.0)
    assert names == ["C", "2L", "BM"] and len(images) == len(labels) == 120
    assert set(np.unique(labels)) == {0, 1, 2}
    # the same cucumbers, labelled by name: what is C (0) in one order is C (2) in the other
    images_b, labels_b, names_b = synthetic_for(
        ImageSet(images=real.images, targets=real.targets, grade_names=["2L", "BM", "C"], ids=real.ids),
        120,
        image_size=32,
        seed=3,
        randomize=0.0,
    )
    assert names_b == ["2L", "BM", "C"] and np.array_equal(images, images_b)
    remap = np.array([2, 0, 1])  # C, 2L, BM -> their index in 2L, BM, C
    assert np.array_equal(remap[labels], labels_b)


def test_recipe_defaults_sit_between_code_defaults_and_the_users_settings(tmp_path):
    cfg = recipe_config(None, {"data.path": "x"})
    assert cfg.model.task == FINETUNE_DEFAULTS["model.task"] and cfg.train.epochs == FINETUNE_DEFAULTS["train.epochs"]
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  epochs: 7\n  lr: 0.002\n")
    cfg = recipe_config(str(config), {"train.lr": 0.005})
    assert cfg.train.epochs == 7 and cfg.train.lr == 0.005
    assert cfg.train.freeze_backbone_epochs == FINETUNE_DEFAULTS["train.freeze_backbone_epochs"]


def test_evaluate_on_other_data_reports_the_domain_gap(trained_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["data", "synth", "--out", str(other), "--n", "40", "--seed", "9"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(trained_run), "--data", str(other), "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "domain gap" in printed and "run's own test split" in printed and "gap (this - own)" in printed
    gap = json.loads((tmp_path / "eval" / "metrics.json").read_text())["domain_gap"]
    assert gap["this"]["n"] == 40
    assert gap["gap"]["accuracy"] == pytest.approx(gap["this"]["accuracy"] - gap["own"]["accuracy"])
    assert "domain gap" in (tmp_path / "eval" / "report.html").read_text()


def test_evaluate_on_the_runs_own_data_has_no_gap(trained_run, synth_dir, tmp_path, capsys):
    assert main(["evaluate", str(trained_run), "--data", str(synth_dir), "--out", str(tmp_path / "eval")]) == 0
    assert "domain gap" not in capsys.readouterr().out
    assert "domain_gap" not in json.loads((tmp_path / "eval" / "metrics.json").read_text())
