"""``imgrade serve --collect DIR``: keep every photo the service grades, as an unlabelled pool.

Each photo graded by ``POST /v1/grade`` is written to ``DIR`` under a name the server makes
(``20261208T101530123456Z-3f9a1c2e.jpg``: the UTC time it came, a random part, the extension of
its true format), its original bytes unchanged, and gets one row in ``DIR/index.csv``::

    path,received,name,grade,grade_set,score
    20261208T101530123456Z-3f9a1c2e.jpg,2026-12-08T10:15:30.123456Z,photo 12.jpg,M,M;L,2.137

``path`` is relative to ``DIR``; ``name`` is the client's file name, made safe (only letters,
digits and ``._-() ``, at most 100 characters: it is never used as a path); ``grade_set`` is the
grade set's names joined with ``;``. So both the folder (read recursively for image files) and
the CSV (by its ``path`` column) list the pool for ``train --unlabeled`` and ``suggest``.

The pool keeps the line's current photos: when a new photo would take the folder past its quota
(photo bytes plus the index), the oldest photos and their rows go first, down to
:data:`LOW_WATER` of the quota, so the index is rewritten once per a tenth of the quota rather
than for every photo. Photos are written atomically (a temporary name, then a rename), the index
row is appended in one write after its photo is in place, and the index is rewritten atomically
when photos are removed. The writes run on one thread of their own, never on the event loop; a
photo that cannot be kept (disk full, no permission) is logged as one warning and the grading
answer is unaffected.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

from imgrade.core.errors import ConfigError, OutputError
from imgrade.core.io import atomic_write, remove_stale_temporaries, write_text
from imgrade.data.images import PILLOW_FORMATS, one_line
from imgrade.serve.limits import DEFAULT_QUOTA_MB, MB

logger = logging.getLogger(__name__)

INDEX_FILE = "index.csv"
"""The pool's list of photos, in ``DIR``."""
COLUMNS = ("path", "received", "name", "grade", "grade_set", "score")
"""The index's columns, in order."""
LOW_WATER = 0.9
"""When the quota is reached, the oldest photos are removed until the pool takes this share of it."""
MAX_PENDING = 256
"""Photos waiting to be written; more are not kept (one warning), so a slow disk never fills the memory."""
_EXTENSIONS = {
    "PNG": ".png",
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "BMP": ".bmp",
    "GIF": ".gif",
    "TIFF": ".tif",
    "WEBP": ".webp",
}
_OWN_NAME = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}\.(png|jpg|bmp|gif|tif|webp)")
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-() ]")


@dataclass
class Kept:
    """One photo of the pool: a row of the index, and its file's size."""

    path: str
    received: str
    name: str
    grade: str
    grade_set: str
    score: str
    size: int

    def row(self) -> list[str]:
        return [self.path, self.received, self.name, self.grade, self.grade_set, self.score]


def safe_name(name: str, limit: int = 100) -> str:
    """A client's file name as the index keeps it: its last part, with only safe characters.

    >>> safe_name("../../etc/passwd")
    'passwd'
    >>> safe_name("=cmd|'calc'!A1 <b>.png")
    '_cmd__calc__A1 _b_.png'
    >>> safe_name("-rf .png")
    'rf .png'
    >>> safe_name("C:\\\\photos\\\\line 3\\\\é.jpg")
    '_.jpg'
    """
    last = re.split(r"[/\\]", name)[-1]
    return _UNSAFE.sub("_", last)[-limit:].lstrip("-. ") or "_"


class Collector:
    """Keeps graded photos in a folder under a quota (see the module docstring).

    Args:
        folder: the pool's folder; made if missing.
        quota_mb: most MB (10^6 bytes) the photos and the index may take.

    Raises:
        ConfigError: the folder is a file, cannot be made or written, or is in use by another
            server; a quota that is not a positive number.
    """

    def __init__(self, folder: str | os.PathLike, quota_mb: float = DEFAULT_QUOTA_MB) -> None:
        self.folder = Path(folder)
        self._lock_fd: int | None = None
        if not 0 < quota_mb < float("inf"):
            raise ConfigError(
                f"--collect-quota-mb {quota_mb:g} must be a positive number of MB (default {DEFAULT_QUOTA_MB:g})"
            )
        self.quota_bytes = int(quota_mb * MB)
        self._check_folder()
        self.index = self.folder / INDEX_FILE
        self._lock = threading.Lock()
        self._pending = 0
        self._last_received = datetime.min.replace(tzinfo=UTC)
        self._hold_lock()
        try:
            remove_stale_temporaries(self.folder)
            self.photos = self._read_pool()
            self.photo_bytes = sum(photo.size for photo in self.photos)
            self.index_bytes = _size(_csv_line(list(COLUMNS))) + sum(_size(_csv_line(p.row())) for p in self.photos)
            self._evict(self.quota_bytes)  # a smaller quota than the last server's
            self._rewrite_index()
        except OutputError as error:
            self._release()
            raise ConfigError(f"--collect {self.folder}: {error}") from None
        except BaseException:
            self._release()
            raise
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgrade-collect")

    @property
    def pool_bytes(self) -> int:
        """The bytes the photos and the index take."""
        return self.photo_bytes + self.index_bytes

    def submit(self, uploads: list[tuple[str, bytes]], records: list[dict[str, Any]]) -> None:
        """Keep these graded photos, on the collector's thread; returns at once, never raises."""
        with self._lock:
            if self._pending + len(uploads) > MAX_PENDING:
                logger.warning(
                    "not collecting %d photo(s): %d are still waiting to be written to %s (a slow disk?)",
                    len(uploads),
                    self._pending,
                    self.folder,
                )
                return
            self._pending += len(uploads)
        received = datetime.now(UTC)
        try:
            self._writer.submit(self._keep_all, uploads, records, received)
        except RuntimeError:  # shut down: the server is stopping
            with self._lock:
                self._pending -= len(uploads)

    def wait(self) -> None:
        """Return once every photo submitted so far is written (or has failed)."""
        with contextlib.suppress(RuntimeError):
            future: Future = self._writer.submit(lambda: None)
            future.result()

    def close(self) -> None:
        """Write what is pending, then stop the thread and release the folder."""
        self._writer.shutdown(wait=True)
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def _keep_all(self, uploads: list[tuple[str, bytes]], records: list[dict[str, Any]], received: datetime) -> None:
        for (name, data), record in zip(uploads, records):
            try:
                self._keep(name, data, record, received)
            except Exception as error:  # never fails the grading; one line, no traceback
                logger.warning(
                    "could not collect photo %s into %s (%s): grading goes on; free some space or check the "
                    "folder's permissions",
                    one_line(safe_name(name)),
                    self.folder,
                    " ".join(str(error).split()) or type(error).__name__,
                )
            finally:
                with self._lock:
                    self._pending -= 1

    def _keep(self, name: str, data: bytes, record: dict[str, Any], received: datetime) -> None:
        # one microsecond apart at least: names sort in the order the photos came, one request's too
        received = max(received, self._last_received + timedelta(microseconds=1))
        self._last_received = received
        stamp = received.strftime("%Y%m%dT%H%M%S%fZ")
        file_name = f"{stamp}-{secrets.token_hex(4)}{_extension(data)}"
        grade_set = record.get("grade_set")
        photo = Kept(
            path=file_name,
            received=received.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            name=safe_name(name),
            grade="" if record.get("grade") is None else str(record["grade"]),
            grade_set="" if grade_set is None else ";".join(grade_set),
            score=f"{float(record['score']):.6g}",
            size=len(data),
        )
        line = _csv_line(photo.row())
        if photo.size + _size(line) + _size(_csv_line(list(COLUMNS))) > self.quota_bytes:
            raise OSError(f"the photo is {photo.size:,} bytes, over the whole --collect-quota-mb")
        with self._lock:
            if self.pool_bytes + photo.size + _size(line) > self.quota_bytes:
                self._evict(int(LOW_WATER * self.quota_bytes) - photo.size - _size(line))
                self._rewrite_index()
        with atomic_write(self.folder / file_name) as f:
            f.write(data)
        try:
            _append(self.index, line)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(self.folder / file_name)
            raise
        with self._lock:
            self.photos.append(photo)
            self.photo_bytes += photo.size
            self.index_bytes += _size(line)

    def _evict(self, target_bytes: int) -> None:
        """Remove the oldest photos until the pool takes at most ``target_bytes``; the lock is held."""
        while self.photos and self.pool_bytes > target_bytes:
            oldest = self.photos.pop(0)
            self.photo_bytes -= oldest.size
            self.index_bytes -= _size(_csv_line(oldest.row()))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / oldest.path)

    def _rewrite_index(self) -> None:
        write_text(self.index, "".join(_csv_line(line) for line in [list(COLUMNS), *(p.row() for p in self.photos)]))

    def _read_pool(self) -> list[Kept]:
        """The photos already in the folder, oldest first: the index's rows whose file is there,
        and photos with a server-made name that a crash left without a row."""
        rows: dict[str, list[str]] = {}
        header: list[str] | None = list(COLUMNS)
        with contextlib.suppress(FileNotFoundError, csv.Error, UnicodeDecodeError):
            with self.index.open(encoding="utf-8", newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                rows = {cells[0]: cells for cells in reader if len(cells) == len(COLUMNS)}
        if header is not None and header != list(COLUMNS):
            raise ConfigError(
                f"--collect {self.folder} holds an {INDEX_FILE} that --collect did not write (its header is "
                f"{','.join(header)}): give an empty folder, or one that --collect made"
            )
        photos = []
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):  # the names start with the time
            if _OWN_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                cells = rows.get(entry.name) or [entry.name, "", "", "", "", ""]
                photos.append(Kept(*cells, size=entry.stat(follow_symlinks=False).st_size))
        return photos

    def _check_folder(self) -> None:
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--collect {folder} is a file, not a folder: give a folder to keep the photos in")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(
                f"--collect {folder} cannot be made ({error.strerror}): give a folder you can write"
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(
                f"--collect {folder} is not writable: give a folder you can write, or fix its permissions"
            )

    def _hold_lock(self) -> None:
        """Refuse a folder another server collects into: both would rewrite the index."""
        path = self.folder / ".collect.lock"
        try:
            self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as error:
            raise ConfigError(
                f"--collect {self.folder} is not writable ({error.strerror}): give a folder you can write"
            ) from None
        try:
            import fcntl

            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows
            pass
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ConfigError(
                f"--collect {self.folder} is in use by another imgrade serve: give each server a folder of its own"
            ) from None
        except OSError:
            pass  # no flock on this file system


def _extension(data: bytes) -> str:
    """The extension of the photo's true format (its header, not the client's file name)."""
    with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as image:
        return _EXTENSIONS.get(image.format or "", ".img")


def _csv_line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


def _size(line: str) -> int:
    return len(line.encode())


def _append(path: Path, line: str) -> None:
    """Add ``line`` to the end of ``path`` in one write, so a reader never sees half a row."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        data = line.encode()
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)
