"""Run folders under stress: a second trainer, a full or read-only disk, a stop before calibration, a
calibration, evaluation or export into a run that is still training."""

import errno
import os
import shutil

import pytest

from imgrade.cli import main
from imgrade.core import io as core_io
from imgrade.core.rundir import run_lock
from imgrade.runtime.run_checkpoint import Checkpoint

TRAIN = ["--epochs", "3", "--depth", "11", "--seed", "1"]


def test_a_second_trainer_into_the_same_folder_is_refused(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    with run_lock(out):  # as a first `imgrade train` holds it
        assert main(["train", "--data", str(synth_dir), *TRAIN, "--out", str(out)]) == 2
        assert [p.name for p in out.iterdir()] == [".imgrade.lock"], "the refused run wrote nothing"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "in use by another imgrade train (pid " in err and str(os.getpid()) in err
    # once the first one is done, the folder is free again
    assert main(["train", "--data", str(synth_dir), *TRAIN, "--out", str(out)]) == 0


@pytest.mark.parametrize(
    "code, expected", [(errno.ENOSPC, "No space left on device"), (errno.EROFS, "Read-only file system")]
)
def test_a_full_or_read_only_disk_is_one_line_and_keeps_the_last_good_checkpoint(
    code, expected, synth_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    real_fsync, calls = os.fsync, {"last.pt": 0}

    def failing_fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(".last.pt."):
            calls["last.pt"] += 1
            if calls["last.pt"] == 2:  # epoch 2's last.pt: the disk is full now
                raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(core_io.os, "fsync", failing_fsync)
    assert main(["train", "--data", str(synth_dir), *TRAIN, "--out", str(out)]) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("imgrade: error:")]
    assert f"cannot write {out / 'last.pt'}" in err and expected in err
    assert Checkpoint.load(out / "last.pt").epoch == 1, "the previous last.pt is intact"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(core_io.os, "fsync", real_fsync)  # space freed: the run goes on
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert Checkpoint.load(out / "last.pt").epoch == 3


def test_a_run_stopped_between_training_and_calibration_is_calibrated_on_resume(synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(synth_dir), *TRAIN, "--out", str(out)]) == 0
    best = Checkpoint.load(out / "best.pt")
    calibration = best.calibration()
    assert calibration is not None
    best.with_calibration(None).save(out / "best.pt")  # as if killed before calibrating
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert "calibrating it now" in capsys.readouterr().err
    assert Checkpoint.load(out / "best.pt").calibration() == calibration
    assert main(["train", "--resume", "--out", str(out)]) == 2
    assert "already finished" in capsys.readouterr().err


def _files(folder):
    """Every file under ``folder`` with its bytes and modification time: what a rewrite would change."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".imgrade.lock"
    }


@pytest.mark.parametrize(
    "verb, argv",
    [
        ("calibrate", ["calibrate", "{run}"]),
        ("evaluate", ["evaluate", "{run}"]),  # writes eval-test/ and the model card into the run
        ("export", ["export", "{run}", "--out", "{run}/model.onnx"]),
    ],
)
def test_a_verb_that_writes_into_a_run_waits_for_its_training(verb, argv, trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = _files(run)
    with run_lock(run):  # as `imgrade train` holds it until its run is finished
        assert main([a.format(run=run) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"imgrade: error: {run} is in use by imgrade train (pid {os.getpid()}): "
        f"wait for it to finish, then run imgrade {verb} again"
    )
    assert _files(run) == before, "nothing in the run was rewritten"
    if verb == "calibrate":  # once the training is done, the same command runs
        assert main([a.format(run=run) for a in argv]) == 0
        assert _files(run)["best.pt"] != before["best.pt"]


def test_reading_a_run_while_it_trains_is_not_refused(trained_run, synth_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with run_lock(run):
        assert (
            main(["evaluate", str(run), "--data", str(synth_dir), "--out", str(tmp_path / "eval"), "--gallery", "0"])
            == 0
        )
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_a_training_waits_for_a_calibration_of_its_run(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with run_lock(run, "calibrate"):
        assert main(["train", "--resume", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        f"{run} is in use by imgrade calibrate (pid {os.getpid()}): wait for it to finish, or choose another --out"
        in err
    )
