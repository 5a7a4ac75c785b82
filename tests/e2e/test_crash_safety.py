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

from imgrade.runtime.run_checkpoint import Checkpoint

EPOCHS = 6
KILLS = 6  # at least 5 random moments, one of them while a checkpoint is being written
ARGS = ["--epochs", str(EPOCHS), "--depth", "11", "--task", "corn", "--seed", "3", "--threads", "1"]


def _train(data: Path, out: Path, resume: bool) -> subprocess.Popen:
    argv = ["--resume", "--out", str(out)] if resume else ["--data", str(data), *ARGS, "--out", str(out)]
    return subprocess.Popen(
        [sys.executable, "-m", "imgrade", "train", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "IMGRADE_NO_TCMALLOC": "1"},
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


def kill_and_resume(data: Path, folder: Path, kills: int = KILLS, seed: int = 7) -> dict[str, int]:
    """Train into ``folder``/killed with ``kills`` SIGKILLs (one aimed at a checkpoint write), resuming
    after each, and compare with an uninterrupted run in ``folder``/reference.

    Returns the kills made, how many hit a checkpoint write, and whether weights, history and
    calibration came out identical (1) or not (0). Also used by benchmarks/reliability.py.
    """
    reference = folder / "reference"
    started = time.monotonic()
    _finish(_train(data, reference, resume=False))
    duration = time.monotonic() - started

    run = folder / "killed"
    rng = random.Random(seed)
    made, during_write, process = 0, 0, _train(data, run, resume=False)
    while made < kills:
        if made == 2:  # one kill aimed at a checkpoint write
            hit = _kill_while_writing(process, run, duration)
            during_write += hit
        else:
            time.sleep(rng.uniform(0.2, 0.8) * duration / 2)
            hit = process.poll() is None
            if hit:
                process.send_signal(signal.SIGKILL)
                process.wait()
        if not hit:  # the run ended before the kill
            assert process.returncode == 0, process.stderr.read()
            break
        made += 1
        # what a user does after a crash: resume; a run killed before its first file starts afresh
        process = _train(data, run, resume=(run / "config.yaml").exists())
    if process.poll() is None:
        _finish(process)
    identical = (
        not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
        and all(
            _same_weights(Checkpoint.load(run / n).model_state, Checkpoint.load(reference / n).model_state)
            for n in ("best.pt", "last.pt")
        )
        and _history(run) == _history(reference)
        and Checkpoint.load(run / "best.pt").calibration() == Checkpoint.load(reference / "best.pt").calibration()
    )
    return {"kills": made, "during_write": during_write, "identical": int(identical)}


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_result(synth_dir, tmp_path):
    result = kill_and_resume(synth_dir, tmp_path)
    assert result["kills"] >= 5 and result["during_write"] == 1, result
    assert result["identical"] == 1, "weights, history and calibration equal the uninterrupted run's"
