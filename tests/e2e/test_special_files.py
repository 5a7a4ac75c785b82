"""A FIFO, a link to /dev/zero or /dev/null, or a socket named like a photo: `imgrade train`,
`evaluate` and `data info` stop with one line naming it (status 2); `predict` gives it an error row
and grades the rest (status 1); the Python API raises one line. Nothing hangs: each call runs
``within`` a limit (tests/conftest.py) that fails the test instead.
"""

import csv
import io
import shutil
from pathlib import Path

import pytest
import torch  # noqa: F401  (imported before the guarded blocks: a first import maps much address space)

from imgrade import Grader
from imgrade.cli import main
from imgrade.core.errors import DataError

LIMIT_S = 60
"""A guard against a hang, far above the time these calls take (seconds, most of it start-up)."""
MEMORY = 4 << 30
"""Address space a guarded call may add: a read of /dev/zero stops there with a MemoryError."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """30 synthetic cucumbers in class folders (one folder per CUCUMBER-9 grade)."""
    out = tmp_path_factory.mktemp("special") / "set"
    assert main(["data", "synth", "--out", str(out), "--format", "folders", "--n", "30", "--seed", "3"]) == 0
    return out


def _error_line(capsys, needle: str) -> str:
    """stderr's one line naming ``needle``, checked to be imgrade's error line."""
    lines = [line for line in capsys.readouterr().err.splitlines() if needle in line]
    assert len(lines) == 1 and lines[0].startswith("imgrade: error: "), lines
    assert "not a regular file" in lines[0]
    return lines[0]


def test_train_on_class_folders_holding_a_special_file_stops_in_one_line(
    folders, tmp_path, special_kind, special_file, within, capsys
):
    kind, called = special_kind
    data = shutil.copytree(folders, tmp_path / "set")
    path = special_file(data / "L" / "x.png", kind)
    with within(LIMIT_S, MEMORY):
        status = main(["train", "--data", str(data), "--epochs", "1", "--depth", "11", "--out", str(tmp_path / "run")])
    assert status == 2
    assert f"{path} is {called}" in _error_line(capsys, str(path))
    assert not (tmp_path / "run" / "best.pt").exists()


def test_train_on_a_csv_naming_a_special_file_stops_at_its_row(
    folders, tmp_path, special_kind, special_file, within, capsys
):
    kind, called = special_kind
    photos = sorted(folders.glob("*/*.png"))[:6]
    special_file(tmp_path / "x.png", kind)
    rows = [f"{photo},{i % 3}" for i, photo in enumerate(photos)]
    (tmp_path / "set.csv").write_text("path,target\n" + "\n".join(rows[:3] + ["x.png,1"] + rows[3:]) + "\n")
    with within(LIMIT_S, MEMORY):
        status = main(["train", "--data", str(tmp_path / "set.csv"), "--epochs", "1", "--out", str(tmp_path / "run")])
    assert status == 2
    assert f"set.csv row 5: image x.png is {called}" in _error_line(capsys, "x.png")


def test_evaluate_and_data_info_on_folders_holding_a_fifo_stop_in_one_line(
    trained_run, folders, tmp_path, special_file, within, capsys
):
    data = shutil.copytree(folders, tmp_path / "set")
    path = special_file(data / "M" / "x.png", "fifo")
    for argv in (
        ["evaluate", str(trained_run), "--data", str(data), "--out", str(tmp_path / "ev")],
        ["data", "info", str(data)],
    ):
        with within(LIMIT_S, MEMORY):
            assert main(argv) == 2
        assert f"{path} is a FIFO (named pipe)" in _error_line(capsys, str(path))


def test_predict_gives_each_special_file_an_error_row_and_grades_the_rest(
    trained_run, folders, tmp_path, special_file, within, capsys
):
    photos = tmp_path / "photos"
    photos.mkdir()
    good = [shutil.copy(path, photos / f"good{i}.png") for i, path in enumerate(sorted(folders.glob("L/*.png"))[:2])]
    special = {
        special_file(photos / "fifo.png", "fifo"): "a FIFO (named pipe)",
        special_file(photos / "null.jpg", "null"): "a link to a character device",
        special_file(photos / "socket.png", "socket"): "a socket",
        special_file(photos / "zero.png", "zero"): "a link to a character device",
    }
    with within(LIMIT_S, MEMORY):
        status = main(["predict", str(trained_run), str(photos), *map(str, special)])  # a folder, and each by name
    assert status == 1
    captured = capsys.readouterr()
    assert captured.err == "imgrade: 8 of 10 photos could not be graded: see the error column on stdout\n"
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [row["image"] for row in rows] == [str(p) for p in sorted([*good, *special])] + [str(p) for p in special]
    for row in rows:
        path = Path(row["image"])
        if path in special:
            assert row["error"] == (
                f"{path} is {special[path]}, not a regular file: imgrade reads only regular files "
                "(a pipe, device or socket can block or never end); put the file itself there, or remove it"
            )
            assert row["score"] == row["grade"] == ""
        else:
            assert not row["error"] and row["grade"]


def test_the_python_api_refuses_a_special_file_in_one_line(trained_run, tmp_path, special_kind, special_file, within):
    kind, called = special_kind
    path = special_file(tmp_path / "x.png", kind)
    grader = Grader.load(trained_run)
    with within(LIMIT_S, MEMORY), pytest.raises(DataError) as excinfo:
        grader.grade(path)
    assert str(excinfo.value).startswith(f"{path} is {called}, not a regular file")
    assert len(str(excinfo.value).splitlines()) == 1
