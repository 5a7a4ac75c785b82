"""Atomic file writes: outputs go to a temporary name in the same folder, then are renamed."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from imgrade.core.errors import OutputError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    The temporary file is ``.<name>.<random>.tmp``, locked (``flock``) while it is written. On any
    exception (KeyboardInterrupt, and the CLI's SIGTERM, included) it is removed and ``path`` is left as it was. An OSError
    from the file system (disk full, read-only folder, no permission) becomes an ``OutputError``
    naming ``path``.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_write(p, "w") as f:
    ...     _ = f.write("hello")
    >>> p.read_text()
    'hello'
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
    except OSError as error:
        raise _output_error(path, error) from None
    _hold(fd)  # until the file is closed: tells remove_abandoned_temporaries that its writer lives
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.errno is not None:
            raise _output_error(path, error) from None
        raise


TEMPORARY_SUFFIX = ".tmp"
"""atomic_write's temporary files are named ``.<name>.<random>.tmp`` beside their target."""


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete the temporary files a killed writer left in ``folder``; returns their names.

    Call it only while no other process writes into ``folder`` (e.g. under the run's lock).
    """
    folder = Path(folder)
    removed = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry.name.startswith(".") and entry.name.endswith(TEMPORARY_SUFFIX) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry.name)
    return removed


ABANDONED_AGE_S = 10.0
"""How old (since last written) an unlocked temporary file must be for remove_abandoned_temporaries."""


def remove_abandoned_temporaries(path: str | os.PathLike) -> list[str]:
    """Delete the temporary files of ``path`` (``.<name>.*.tmp`` beside it, as atomic_write names
    them) that a killed writer left; returns their names. Safe while other processes write ``path``.

    A temporary file is abandoned when no process holds its ``flock`` (atomic_write holds it from
    creating the file to closing it, and the kernel drops it when the writer dies, even by SIGKILL)
    and it was last written ``ABANDONED_AGE_S`` or more ago. The age covers the instants between
    creating the file and locking it and between closing and renaming it, network file systems
    whose clocks differ by a few seconds, and file systems without ``flock``, where a writer's file
    stays fresh while it is written. Only regular files are touched, and never followed links.
    """
    path = Path(path)
    # mkstemp's random part has no dot, so .x.onnx.bak's temporaries are not x.onnx's
    own = re.compile(re.escape(f".{path.name}.") + r"[^.]+" + re.escape(TEMPORARY_SUFFIX))
    removed = []
    try:
        with os.scandir(path.parent) as found:
            entries = [entry for entry in found if own.fullmatch(entry.name)]
    except OSError:
        return removed
    for entry in entries:
        if _abandoned(entry.path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return removed


def _abandoned(file: str) -> bool:
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO would block a plain open
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or time.time() - info.st_mtime < ABANDONED_AGE_S:
            return False
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: the age alone
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer is alive
        except OSError:
            pass  # no flock on this file system: the age alone
        return True
    finally:
        os.close(fd)  # drops the lock taken here


def _hold(fd: int) -> None:
    """Lock the temporary file ``fd`` for its writer's lifetime; nothing where flock is missing."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):  # Windows, or a file system without flock: the age protects it
        pass


def _output_error(path: Path, error: OSError) -> OutputError:
    fix = {
        errno.ENOSPC: "free some disk space, or write somewhere else",
        errno.EDQUOT: "free some of your disk quota, or write somewhere else",
        errno.EROFS: "the file system is read-only: write somewhere else",
        errno.EACCES: "check the folder's permissions, or write somewhere else",
        errno.EPERM: "check the folder's permissions, or write somewhere else",
    }.get(error.errno, "check the folder, or write somewhere else")
    return OutputError(f"cannot write {path} ({error.strerror or error}): {fix}; files already written are intact")


def write_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write dict rows as CSV, atomically; the columns are every key, in first-seen order."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
