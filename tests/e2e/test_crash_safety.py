"""Training killed with SIGKILL at random moments, resumed each time, ends exactly where an
uninterrupted run ends: the same weights, history and calibration, bit for bit, on the CPU."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from imgrade.core.checkpoint import load_checkpoint

EPOCHS = 6
KILLS = 6  # at least 5 random moments, one of them while a checkpoint is being written
ARGS = ["--epochs", str(EPOCHS), "--depth", "11", "--task", "corn", "--seed", "3", "--threads", "1"]


def _train(data: Path, out: Path, resume: bool) -> subprocess.Popen:
    argv = ["--resume", "--out", str(out)] if resume else ["--data", str(data), *ARGS, "--out", str(out)]
    return subprocess.Popen(
        [sys.executable, "-m", "imgrade", "train", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "IMGRADE_NO_TCMALLOC": "1"},
    )


def _finish(process: subprocess.Popen) -> str:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return err


def _kill_while_writing(process: subprocess.Popen, out: Path, seconds: float) -> bool:
    """SIGKILL ``process`` as soon as a checkpoint's temporary file appears; False if none did."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if out.is_dir() and any(name.endswith(".tmp") and ".pt." in name for name in os.listdir(out)):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
    return False


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_result(synth_dir, tmp_path):
    reference = tmp_path / "reference"
    started = time.monotonic()
    _finish(_train(synth_dir, reference, resume=False))
    duration = time.monotonic() - started

    run = tmp_path / "killed"
    rng = random.Random(7)
    kills, during_write, process = 0, 0, _train(synth_dir, run, resume=False)
    while kills < KILLS:
        if kills == 2:  # one kill aimed at a checkpoint write
            hit = _kill_while_writing(process, run, duration)
            during_write += hit
        else:
            time.sleep(rng.uniform(0.2, 0.8) * duration / 2)
            hit = process.poll() is None
            if hit:
                process.send_signal(signal.SIGKILL)
                process.wait()
        if not hit:  # the run ended before the kill: start the rest of it anyway
            assert process.returncode == 0, process.stderr.read()
            break
        kills += 1
        # what a user does after a crash: resume; a run killed before its first file starts afresh
        process = _train(synth_dir, run, resume=(run / "config.yaml").exists())
    if process.poll() is None or process.returncode == 0:
        _finish(process) if process.poll() is None else None
    assert kills >= 5 and during_write == 1, f"{kills} kills, {during_write} during a checkpoint write"
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")], "no temporary file survives a resumed run"

    for name in ("best.pt", "last.pt"):
        got, want = load_checkpoint(run / name), load_checkpoint(reference / name)
        assert _same_weights(got["model_state"], want["model_state"]), name
        assert got["epoch"] == want["epoch"]
    assert _history(run) == _history(reference)
    assert load_checkpoint(run / "best.pt")["calibration"] == load_checkpoint(reference / "best.pt")["calibration"]
