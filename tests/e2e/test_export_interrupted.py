"""``imgrade export`` stopped by SIGTERM while it writes its file leaves no temporary file and the
old file intact; the temporary file an export killed outright left is removed by the next export.
(Ctrl-C unwinds as SIGTERM now does: tests/unit/test_atomic_write.py.)

The export runs in a real process that is stopped by a real signal. To stop it at the one moment
that matters, half-way through writing the file, the child process (not imgrade) wraps os.fsync:
when the temporary .onnx file is about to be synced it says "writing" on stdout and waits.
"""

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgrade.cli import main
from imgrade.core.io import ABANDONED_AGE_S

EXPORT_S = 300  # an export imports torch and checks ONNX Runtime against PyTorch: slow on 2 busy cores

CHILD = """
import os, sys, time

real_fsync = os.fsync


def fsync_then_wait(fd):
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".m.onnx."):
        print("writing", flush=True)  # the temporary file exists and is not yet renamed
        time.sleep(600)  # the test's signal ends this
    real_fsync(fd)


os.fsync = fsync_then_wait
from imgrade.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _export_until_writing(run: Path, out: Path) -> subprocess.Popen:
    """``imgrade export RUN --out OUT`` in a child process, returned once it is writing OUT."""
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, "export", str(run), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "IMGRADE_NO_TCMALLOC": "1"},
    )
    ready, _, _ = select.select([process.stdout], [], [], EXPORT_S)
    line = process.stdout.readline() if ready else ""
    if line != "writing\n":
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"the export never started writing {out.name} within {EXPORT_S} s: {err}")
    return process


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the child finds its file through /proc")
def test_sigterm_mid_export_leaves_nothing_and_the_next_export_removes_a_killed_ones_file(
    trained_run, tmp_path, caplog
):
    import fcntl

    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")
    process = _export_until_writing(trained_run, out)
    assert len(_temporaries(tmp_path)) == 1, "the signal comes while the file is half-written"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == "imgrade: terminated (SIGTERM)"
    assert _temporaries(tmp_path) == [] and out.read_bytes() == b"the previous export"

    # What an export killed outright (SIGKILL, a power cut) leaves, beside files it must not touch
    planted = {
        "killed": tmp_path / ".m.onnx.dead1234.tmp",  # no process holds it: removed
        "young": tmp_path / ".m.onnx.young123.tmp",  # may be a live writer's, between create and lock
        "held": tmp_path / ".m.onnx.held1234.tmp",  # a live writer's: it holds the lock
        "other target": tmp_path / ".m.onnx.bak.abcd1234.tmp",  # m.onnx.bak's, not m.onnx's
    }
    past = time.time() - 10 * ABANDONED_AGE_S
    for kind, path in planted.items():
        path.write_bytes(b"partial")
        if kind != "young":
            os.utime(path, (past, past))  # as if the export had been killed a while ago
    with open(planted["held"], "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        caplog.set_level("INFO", logger="imgrade")
        assert main(["export", str(trained_run), "--out", str(out)]) == 0
    assert "removed 1 temporary file(s) of" in caplog.text
    assert _temporaries(tmp_path) == sorted(p.name for k, p in planted.items() if k != "killed")
    assert out.stat().st_size > 10_000
