"""``imgrade serve --label TO_LABEL.csv [--labels LABELS.csv]``: label photos in the web page.

``TO_LABEL.csv`` lists the photos to label: a header with ``path`` (relative to the CSV's folder,
or absolute) and any other columns, of which only ``suggested`` (or the first column whose name
starts with it) is read, to show beside the photo. ``LABELS.csv`` (default: ``labels.csv``
beside TO_LABEL.csv) is the labelled manifest ``imgrade train --data LABELS.csv`` reads: a header
``path,target``, paths relative to its folder, one row per label, the target a grade name. A
``grades.txt`` beside it gives train the model's grade order; it is written when missing, and a
server whose model has other grades than an existing one refuses to start.

A label is added by reading LABELS.csv, adding the row, writing a temporary file, fsync and
rename (:func:`imgrade.core.io.atomic_write`), all under one lock, so two clicks never lose a
row and an edit made to the file meanwhile is kept. A photo already in LABELS.csv is not
labelled twice; the labels added since the server started can be undone, last first.

The web page reads photos only by their index in TO_LABEL.csv, never by a path from the client.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from imgrade.core.errors import ConfigError, DataError
from imgrade.core.io import atomic_write, open_regular_file, write_text
from imgrade.data.folders import GRADES_FILE, read_grades_file
from imgrade.data.images import IMAGE_EXTENSIONS, one_line

LABELS_FILE = "labels.csv"
"""LABELS.csv's name when ``--labels`` is not given: beside TO_LABEL.csv."""
HEADER = ["path", "target"]


@dataclass(frozen=True)
class Photo:
    """One row of TO_LABEL.csv."""

    written: str  # the path as TO_LABEL.csv has it
    file: Path  # where it is
    label_path: str  # the path as LABELS.csv writes it: relative to its folder where possible
    suggested: str

    @property
    def key(self) -> str:
        return _key(self.file)


class LabelQueue:
    """The photos of TO_LABEL.csv and the labels of LABELS.csv (see the module docstring).

    Args:
        to_label: the manifest to fill in.
        labels: the labelled manifest; None: ``labels.csv`` beside ``to_label``.
        grade_names: the model's grade names, in order: the only targets accepted.

    Raises:
        ConfigError: a model without grades; a TO_LABEL.csv that is missing, unreadable, without
            a ``path`` column or without rows; a LABELS.csv without ``path`` and ``target``
            columns; a grades.txt beside LABELS.csv that names other grades than the model's;
            a LABELS.csv folder that cannot be written.
    """

    def __init__(self, to_label: str | os.PathLike, labels: str | os.PathLike | None, grade_names: list[str] | None):
        if not grade_names:
            raise ConfigError(
                "--label needs a model that names grades, and this one has a continuous target: serve an ordinal model"
            )
        self.to_label = Path(to_label)
        self.labels = Path(labels) if labels is not None else self.to_label.parent / LABELS_FILE
        self.grade_names = list(grade_names)
        self.photos = self._read_to_label()
        self._lock = threading.Lock()
        self._added: list[tuple[str, str]] = []  # (label path, grade) added by this server, for undo
        self._check_grades_file()
        self.labelled = self._labelled(self._read_rows())  # _key of each labelled file -> grade

    def state(self, start: int = 0) -> dict:
        """Progress, and the first photo from ``start`` on (then from the top) without a label."""
        with self._lock:
            labelled = dict(self.labelled)
            last = self._added[-1] if self._added else None
        order = [*range(start, len(self.photos)), *range(0, min(start, len(self.photos)))]
        upcoming = next((k for k in order if self.photos[k].key not in labelled), None)
        return {
            "total": len(self.photos),
            "labelled": sum(photo.key in labelled for photo in self.photos),
            "next": None if upcoming is None else self._describe(upcoming),
            "last": None if last is None else {"path": last[0], "grade": last[1]},
            "labels_file": self.labels.name,
            "grades": self.grade_names,
        }

    def photo(self, index: int) -> Photo:
        """The photo at ``index`` in TO_LABEL.csv; DataError outside the list."""
        if not 0 <= index < len(self.photos):
            raise PhotoNotFound(f"no photo number {index}: TO_LABEL.csv lists photos 0 to {len(self.photos) - 1}")
        return self.photos[index]

    def read_photo(self, index: int) -> bytes:
        """The bytes of the photo at ``index``.

        Raises:
            DataError: outside the list; a file that is not an image, is missing or is not a regular file.
        """
        photo = self.photo(index)
        if photo.file.suffix.lower() not in IMAGE_EXTENSIONS:
            raise NotAnImage(f"photo {index} ({one_line(photo.written)}) is not an image file: fix TO_LABEL.csv")
        try:
            with open_regular_file(photo.file, one_line(photo.written)) as f:
                return f.read()
        except FileNotFoundError:
            raise PhotoNotFound(
                f"photo {index} ({one_line(photo.written)}) does not exist: skip it, or fix TO_LABEL.csv"
            ) from None
        except OSError as error:
            raise DataError(f"photo {index} ({one_line(photo.written)}) cannot be read ({error.strerror})") from None

    def add(self, index: int, grade: str) -> dict:
        """Label the photo at ``index`` with ``grade``: one row added to LABELS.csv, atomically.

        Raises:
            DataError: an index outside the list, a grade not of the model, a photo labelled already.
            OutputError: LABELS.csv cannot be written.
        """
        photo = self.photo(index)
        if grade not in self.grade_names:
            raise DataError(
                f"grade {one_line(grade)!r} is not one of the model's grades: {', '.join(self.grade_names)}"
            )
        with self._lock:
            rows = self._read_rows()
            self.labelled = self._labelled(rows)
            if photo.key in self.labelled:
                raise LabelledAlready(
                    f"photo {index} ({one_line(photo.written)}) is labelled already, as {self.labelled[photo.key]}: "
                    "undo that label first to change it"
                )
            self._write_rows([*rows, (photo.label_path, grade)])
            self._added.append((photo.label_path, grade))
            self.labelled[photo.key] = grade
        return self.state(index + 1)

    def undo(self) -> dict:
        """Remove the last label this server added (its last row in LABELS.csv).

        Raises:
            DataError: no label to undo.
        """
        with self._lock:
            if not self._added:
                raise DataError("no label to undo: only the labels added since the server started can be undone")
            path, grade = self._added[-1]
            rows = self._read_rows()
            at = max((k for k, row in enumerate(rows) if row == (path, grade)), default=None)
            if at is not None:
                self._write_rows(rows[:at] + rows[at + 1 :])
                rows = rows[:at] + rows[at + 1 :]
            self._added.pop()
            self.labelled = self._labelled(rows)
        index = next(k for k, photo in enumerate(self.photos) if photo.label_path == path)
        return self.state(index)

    def _describe(self, index: int) -> dict:
        photo = self.photos[index]
        return {"index": index, "path": photo.written, "suggested": photo.suggested or None}

    def _read_to_label(self) -> list[Photo]:
        rows, columns = _read_csv(self.to_label, "--label", "path")
        suggested_at = columns.get("suggested")
        if suggested_at is None:
            suggested_at = next((at for name, at in columns.items() if name.startswith("suggested")), None)
        photos = []
        for number, cells in rows:
            written = _cell(cells, columns["path"])
            if not written:
                raise ConfigError(f"{self.to_label} row {number}: the path is empty: give the photo's file")
            file = Path(written) if Path(written).is_absolute() else self.to_label.parent / written
            photos.append(Photo(written, file, _relative(file, self.labels.parent), _cell(cells, suggested_at)))
        if not photos:
            raise ConfigError(f"{self.to_label} lists no photos: write one row per photo under the header path")
        return photos

    def _labelled(self, rows: list[tuple[str, str]]) -> dict[str, str]:
        """The labelled files (``_key``) and their grades, from LABELS.csv's rows."""
        folder = self.labels.parent
        return {
            _key(Path(path) if Path(path).is_absolute() else folder / path): target for path, target in rows if path
        }

    def _read_rows(self) -> list[tuple[str, str]]:
        """LABELS.csv's rows as (path, target), as written; [] where it does not exist yet."""
        if not self.labels.exists():
            return []
        rows, columns = _read_csv(self.labels, "--labels", "path", "target")
        return [(_cell(cells, columns["path"]), _cell(cells, columns["target"])) for _, cells in rows]

    def _write_rows(self, rows: list[tuple[str, str]]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
        with atomic_write(self.labels, "w") as f:
            f.write(buffer.getvalue())

    def _check_grades_file(self) -> None:
        path = self.labels.parent / GRADES_FILE
        if path.exists():
            try:
                names = read_grades_file(path)
            except DataError as error:
                raise ConfigError(str(error)) from None
            if names != self.grade_names:
                raise ConfigError(
                    f"{path} names the grades {', '.join(names)} but the model grades {', '.join(self.grade_names)}: "
                    "write LABELS.csv elsewhere with --labels, or serve the model these labels are for"
                )
            return
        try:
            write_text(path, "".join(f"{name}\n" for name in self.grade_names))
        except OSError as error:  # OutputError included
            raise ConfigError(
                f"cannot write {path} ({one_line(str(error))}): give --labels in a folder you can write"
            ) from None


class LabelledAlready(DataError):
    """The photo has a label already (a 409)."""


class PhotoNotFound(DataError):
    """No such photo number, or its file is missing (a 404)."""


class NotAnImage(DataError):
    """The photo's file has no image extension (a 415)."""


def _read_csv(path: Path, flag: str, *wanted: str) -> tuple[list[tuple[int, list[str]]], dict[str, int]]:
    """(row number, cells) of each non-blank row, and the header's columns (lower case -> position)."""
    try:
        with (
            open_regular_file(path, one_line(str(path)), max_bytes=None) as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f,
        ):
            reader = csv.reader(f)
            header = next(reader, None) or []
            columns = {name.strip().lower(): at for at, name in reversed(list(enumerate(header)))}
            missing = [name for name in wanted if name not in columns]
            if missing:
                raise ConfigError(
                    f"{flag} {path} has no column {', '.join(missing)} in its header row: "
                    f"the first row must name {','.join(wanted)}"
                )
            return [(reader.line_num, cells) for cells in reader if any(cell.strip() for cell in cells)], columns
    except FileNotFoundError:
        raise ConfigError(f"{flag} {path} does not exist: give a CSV file") from None
    except (OSError, DataError) as error:
        raise ConfigError(
            f"{flag} {path} cannot be read ({one_line(str(error))}): give a CSV file you can read"
        ) from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(f"{flag} {path} is not a UTF-8 CSV ({error}): save it as comma-separated UTF-8") from None


def _cell(cells: list[str], at: int | None) -> str:
    return cells[at].strip() if at is not None and at < len(cells) else ""


def _key(file: Path) -> str:
    """One spelling per file: absolute, normalised (``a/./b`` and ``a/c/../b`` are ``a/b``)."""
    return os.path.normpath(os.path.abspath(file))


def _relative(file: Path, folder: Path) -> str:
    """``file`` as LABELS.csv in ``folder`` writes it: relative where possible, with / separators.

    >>> _relative(Path("/data/pool/a.png"), Path("/data"))
    'pool/a.png'
    >>> _relative(Path("/data/pool/a.png"), Path("/data/labels"))
    '../pool/a.png'
    """
    try:
        return Path(os.path.relpath(os.path.abspath(file), os.path.abspath(folder))).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(os.path.abspath(file)).as_posix()
