"""Hostile --config files through the real CLI: one line on stderr and exit status 2, at once."""

from __future__ import annotations

import os
import threading

import pytest

from imgrade.cli import main


def _deep(path):
    path.write_text("data:\n  grades: " + "[" * 20_000 + "]" * 20_000 + "\n")


def _laughs(path):
    lines = ["    - &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"    - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    path.write_text("data:\n  grades:\n" + "\n".join(lines) + "\n")


def _huge_number(path):
    path.write_text("train:\n  seed: " + "9" * 100_000 + "\n")


def _fifo(path):
    os.mkfifo(path)


def within(seconds: float, function, *args):
    """``function(*args)``, failing the test instead of hanging if it has not returned in ``seconds``
    (a guard for the FIFO and the expansions, not a speed goal)."""
    outcome = []

    def run():
        try:
            outcome.append(function(*args))
        except BaseException as error:  # a traceback the CLI let out: the test shows it
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"no result after {seconds} s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


CASES = {
    "deep": (_deep, "nests values more than 32 levels deep"),
    "billion-laughs": (_laughs, "holds more than 10,000 values (aliases expanded)"),
    "huge-number": (_huge_number, "has the integer 999999999999999999999999... (100000 digits), over 64 bits"),
    "fifo": (_fifo, "is a FIFO, device or socket, not a regular file"),
}


@pytest.mark.parametrize("case", CASES)
def test_train_with_a_hostile_config_is_one_line_and_exit_2(case, tmp_path, synth_dir, capsys):
    if case == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    write, expected = CASES[case]
    config = tmp_path / "bad.yaml"
    write(config)
    code = within(
        60, main, ["train", "--data", str(synth_dir), "--config", str(config), "--out", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith(f"imgrade: error: config file {config}") and expected in err, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_resume_with_a_damaged_saved_config_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _laughs(run / "config.yaml")
    assert within(60, main, ["train", "--resume", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{run / 'config.yaml'}" in err and "aliases expanded" in err, err
