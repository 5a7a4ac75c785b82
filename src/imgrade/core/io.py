"""File IO: inputs are read only from regular files; outputs go to a temporary name in the same
folder, then are renamed (atomic writes)."""

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
from typing import IO, BinaryIO

from imgrade.core.errors import DataError, OutputError

MAX_FILE_BYTES = 256 << 20
"""Input files larger than this (256 MiB) are refused unread: no photo comes near it, while a
huge file would fill the memory it is read into."""

# A FIFO opens at once instead of waiting for a writer; no device becomes our controlling terminal.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_KINDS = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a file whose ``st_mode`` is ``mode`` is, in words.

    >>> file_kind(os.stat("/dev/null").st_mode)
    'a character device'
    """
    return next((kind for is_kind, kind in _KINDS if is_kind(mode)), "a special file")


def not_regular_file(name: str, mode: int, path: str | os.PathLike | None = None) -> DataError:
    """The error for an input ``name`` (on one line) whose ``st_mode``, links followed, is ``mode``:
    not a regular file. Given the ``path``, a link is named as one."""
    link = "a link to " if path is not None and os.path.islink(path) else ""
    if stat.S_ISDIR(mode):
        return DataError(f"{name} is {link}a folder, not a regular file: pass a file")
    return DataError(
        f"{name} is {link}{file_kind(mode)}, not a regular file: imgrade reads only regular files "
        "(a pipe, device or socket can block or never end); put the file itself there, or remove it"
    )


@contextlib.contextmanager
def open_regular_file(path: str | os.PathLike, name: str, max_bytes: int | None = MAX_FILE_BYTES) -> Iterator[BinaryIO]:
    """Open ``path`` for reading if, links followed, it is a regular file of at most ``max_bytes``.

    Nothing else is opened: a FIFO blocks ``open`` until a writer comes, a device such as
    /dev/zero never ends, a socket cannot be opened. The type is checked before opening (so no
    device is opened: opening some has side effects), then again on the open file, which is what
    will be read (the path may have been replaced in between); the open does not block, so a
    FIFO swapped in meanwhile is refused too.

    Args:
        path: the file; a link is followed.
        name: the file as messages name it, on one line.
        max_bytes: the largest size accepted; None for any.

    Raises:
        DataError: ``path`` is not a regular file (a folder, FIFO, device, socket), or is larger
            than ``max_bytes``.
        OSError: ``path`` does not exist or cannot be opened; callers word these.
    """
    _check_regular(os.stat(path), name, max_bytes, path)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as error:
        if error.errno == errno.ENXIO:  # a socket (or a device without its hardware) put there since the stat
            raise not_regular_file(name, os.stat(path).st_mode, path) from None
        raise
    try:
        _check_regular(os.fstat(fd), name, max_bytes, path)
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        yield file


def read_regular_file(path: str | os.PathLike, name: str, max_bytes: int | None = MAX_FILE_BYTES) -> bytes:
    """The bytes of ``path``, if it is a regular file of at most ``max_bytes`` (see ``open_regular_file``).

    At most one byte more than the size found when opening is read: a file still growing (being
    written) is refused rather than read on without end.

    Raises:
        DataError: not a regular file, larger than ``max_bytes``, or grew while being read.
        OSError: ``path`` does not exist or cannot be read; callers word these.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     _ = f.write(b"abc"); f.flush()
    ...     read_regular_file(f.name, "f")
    b'abc'
    """
    with open_regular_file(path, name, max_bytes) as file:
        size = os.fstat(file.fileno()).st_size
        data = file.read(size + 1)
    if len(data) > size:
        raise DataError(
            f"{name} grew while it was read (more than the {size:,} bytes it had when opened): "
            "wait until whatever writes it has finished, then try again"
        )
    return data


def _check_regular(found: os.stat_result, name: str, max_bytes: int | None, path: str | os.PathLike) -> None:
    if not stat.S_ISREG(found.st_mode):
        raise not_regular_file(name, found.st_mode, path)
    if max_bytes is not None and found.st_size > max_bytes:
        raise DataError(
            f"{name} is {found.st_size:,} bytes, over the {max_bytes:,}-byte limit for one input file "
            f"({max_bytes >> 20} MiB): check that it is the right file, or make it smaller"
        )


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
