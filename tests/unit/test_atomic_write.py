"""Atomic writes: nothing half-written is left, and what a killed writer left is removed only when
no live writer can own it."""

import fcntl
import os
import time

import pytest

from imgrade.core.io import ABANDONED_AGE_S, atomic_write, remove_abandoned_temporaries


def _age(path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past), follow_symlinks=False)


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_write(target) as f:
        f.write(b"half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] and target.read_bytes() == b"old"


def test_a_write_in_progress_holds_its_temporary_file(tmp_path):
    target = tmp_path / "m.onnx"
    with atomic_write(target) as f:
        f.write(b"half")
        (temporary,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        _age(temporary, 10 * ABANDONED_AGE_S)  # even an old-looking file is left while its writer lives
        assert remove_abandoned_temporaries(target) == []
    assert target.read_bytes() == b"half"


def test_only_the_targets_abandoned_temporaries_are_removed(tmp_path):
    target = tmp_path / "m.onnx"
    old = 10 * ABANDONED_AGE_S
    files = {
        ".m.onnx.dead1234.tmp": old,  # a killed writer's: removed
        ".m.onnx.young123.tmp": 0,  # a writer may be between creating and locking it
        ".m.onnx.held1234.tmp": old,  # locked below: a live writer's
        ".m.onnx.bak.abcd1234.tmp": old,  # another target's (m.onnx.bak)
        ".n.onnx.dead1234.tmp": old,  # another target's
        "m.onnx.dead1234.tmp": old,  # not a temporary name
    }
    for name, age in files.items():
        (tmp_path / name).write_bytes(b"partial")
        _age(tmp_path / name, age)
    os.mkfifo(tmp_path / ".m.onnx.fifo1234.tmp")  # opening it must not hang; it is left alone
    _age(tmp_path / ".m.onnx.fifo1234.tmp", old)
    os.symlink(tmp_path / "elsewhere", tmp_path / ".m.onnx.link1234.tmp")  # never followed
    (tmp_path / "elsewhere").write_bytes(b"keep")
    _age(tmp_path / "elsewhere", old)
    with open(tmp_path / ".m.onnx.held1234.tmp", "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert remove_abandoned_temporaries(target) == [".m.onnx.dead1234.tmp"]
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {*files, ".m.onnx.fifo1234.tmp", ".m.onnx.link1234.tmp", "elsewhere"} - {".m.onnx.dead1234.tmp"}


def test_a_missing_folder_has_nothing_to_remove(tmp_path):
    assert remove_abandoned_temporaries(tmp_path / "no-such-folder" / "m.onnx") == []
