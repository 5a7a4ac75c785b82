"""`imgrade train --init`: fine-tune from another run, in-process, on generated images."""

from pathlib import Path

import yaml

from imgrade.cli import main


def test_finetune_from_a_run_records_and_logs_the_source(trained_run, synth_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(trained_run.parent)  # a relative --init is stored resolved
    out = tmp_path / "tuned"
    args = ["--init", trained_run.name, "--freeze-backbone-epochs", "1", "--backbone-lr-scale", "0.1"]
    assert main(["train", "--data", str(synth_dir), "--epochs", "2", "--out", str(out), *args]) == 0
    err = capsys.readouterr().err
    assert f"init: backbone and head from {trained_run.resolve() / 'best.pt'}\n" in err
    train = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert train["init"] == str(trained_run.resolve())
    assert train["freeze_backbone_epochs"] == 1 and train["backbone_lr_scale"] == 0.1
    assert (out / "best.pt").is_file() and len((out / "history.csv").read_text().splitlines()) == 3


def test_another_task_keeps_the_backbone_and_starts_a_fresh_head(trained_run, synth_dir, tmp_path, capsys):
    out = tmp_path / "coral"
    photometric = ["--color-jitter", "0.1", "--rotate", "10", "--blur", "1"]  # for real photos: exercised here too
    assert (
        main(
            [
                "train",
                "--data",
                str(synth_dir),
                "--task",
                "coral",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--init",
                str(trained_run),
                *photometric,
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "; fresh head because the task differs (regression there, coral here)" in err


def _renamed_grades(tmp_path: Path) -> Path:
    """A class-folder set whose grades are not CUCUMBER-9's: g1 (best) .. g9."""
    data = tmp_path / "other"
    assert main(["data", "synth", "--format", "folders", "--out", str(data), "--n", "36", "--seed", "2"]) == 0
    old = (data / "grades.txt").read_text().split()
    new = [f"g{i + 1}" for i in range(len(old))]
    for before, after in zip(old, new):
        if (data / before).is_dir():
            (data / before).rename(data / after)
    (data / "grades.txt").write_text("".join(f"{name}\n" for name in new))
    (data / "attributes.csv").unlink()
    return data


def test_other_grade_names_are_refused_and_nothing_is_written(trained_run, tmp_path, capsys):
    data = _renamed_grades(tmp_path)
    capsys.readouterr()
    out = tmp_path / "refused"
    assert main(["train", "--data", str(data), "--epochs", "1", "--out", str(out), "--init", str(trained_run)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("imgrade: error: --init ") and str(trained_run / "best.pt") in error
    assert "2L,L,M,S,2S,BL,BM,BS,C" in error and "this data has grades g1,g2,g3,g4,g5,g6,g7,g8,g9" in error
    assert not out.exists()


def test_a_missing_source_fails_before_reading_the_data(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(synth_dir), "--out", str(out), "--init", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere does not exist" in err
    assert not out.exists()
