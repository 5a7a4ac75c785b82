"""Other imgrade commands computing on this machine now: each one announces itself while it runs.

Two trainings started together look at the cores at the same instant, while both are still
starting up, and each sees idle cores. So a command that computes hard writes its process id
into a folder this user's imgrade processes share, before it looks, and counts the live ones it
finds there as cores taken (``imgrade.core.threads``). The file goes when the process exits; one
left by a killed process is ignored and removed, since no process of that id is alive.

This module never imports torch.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import tempfile
from pathlib import Path

FOLDER = Path(tempfile.gettempdir()) / f"imgrade-{os.getuid() if hasattr(os, 'getuid') else 'user'}-computing"
"""Where the running commands announce themselves, one empty file per process id."""


def announce(folder: Path = FOLDER) -> None:
    """Say that this process computes until it exits."""
    with contextlib.suppress(OSError):  # a read-only temporary folder only costs the announcement
        folder.mkdir(parents=True, exist_ok=True)
        mine = folder / str(os.getpid())
        mine.touch()
        atexit.register(mine.unlink, missing_ok=True)


def others(folder: Path = FOLDER) -> int:
    """How many other live processes announced themselves in ``folder``."""
    count = 0
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if _alive(int(entry.name)):
            count += 1
        else:
            entry.unlink(missing_ok=True)  # left by a process that was killed
    return count


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
