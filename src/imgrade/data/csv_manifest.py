"""A CSV manifest of image paths and targets (paths relative to the CSV's folder; ``split`` optional)::

path,target,split
images/a.jpg,0,train
images/b.jpg,2,test

A ``grades.txt`` beside the CSV (one grade name a line, best first, as class folders have it)
gives the order of grade names in the target column.
"""

from __future__ import annotations

import csv
import io
import math
import os
import stat
from pathlib import Path

import numpy as np

from imgrade.core.errors import ConfigError, DataError
from imgrade.core.io import not_regular_file, open_regular_file
from imgrade.data.cache import DecodeOptions, decode_images
from imgrade.data.folders import GRADES_FILE, read_grades_file
from imgrade.data.images import one_line
from imgrade.data.imageset import SPLIT_NAMES, ImageSet
from imgrade.data.resize import Resize

MAX_INTEGER_GRADES = 1000


def read_csv_manifest(
    csv_path: str | os.PathLike,
    resize: Resize | int,
    grade_order: list[str] | None = None,
    target_column: str = "target",
    continuous: bool | None = None,
    decode: DecodeOptions | None = None,
) -> ImageSet:
    """Read a CSV with a header and the columns ``path``, ``target`` and optionally ``split``.

    Column names match case-insensitively; other columns are ignored, as are blank rows.
    Paths are relative to the CSV's folder (absolute paths work too); ``ids`` are the paths as
    written. ``split`` is train, val, test or empty. Targets:

    - with ``grade_order``: grade names from that order (an integer like 2 also matches the
      name "2", so a run trained on integer grades can read a new manifest);
    - else, with a ``grades.txt`` beside the CSV (and ``continuous`` not True): grade names in its
      order, unless every target is a number that is not one of its names (``imgrade data synth``
      writes grades.txt beside attributes.csv, whose targets are grade indexes), which are read
      as below;
    - else numbers: ``continuous=None`` reads all-integer targets as ordinal grades and anything
      else as a continuous value. Integer grades k become the names str(k) for k from the smallest
      to the largest value seen, and grade index k - smallest (the smallest integer ranks first).
      Continuous targets have no grade names and are kept as float32.

    Errors name the CSV and the row, counting the header as row 1, as a spreadsheet does.

    Raises:
        DataError: a missing file, header or column; a missing, non-numeric or unknown target; a bad grades.txt;
            integer grades spanning over ``MAX_INTEGER_GRADES``; a path that does not exist or is
            not a regular file (a FIFO, a device, a socket); a bad split; no rows; a corrupt image
            (naming the file).
        ConfigError: ``grade_order`` together with ``continuous=True``.
    """
    csv_path = Path(csv_path)
    if grade_order is not None and continuous:
        raise ConfigError(
            "a grade order (--grades) names ordinal grades, but the target was set to continuous: drop one of them"
        )
    rows = _read_csv_rows(csv_path, target_column)
    if not rows:
        raise DataError(f"{csv_path} has a header but no rows: add one row per image (path,{target_column})")
    paths, ids, values, splits = [], [], [], []
    for row_number, path_text, target_text, split_text in rows:
        where = f"{csv_path} row {row_number}"
        if not path_text:
            raise DataError(f"{where}: the path is empty: give the image file, relative to {csv_path.parent}")
        path = Path(path_text) if Path(path_text).is_absolute() else csv_path.parent / path_text
        if not os.path.isfile(path):  # unlike Path.is_file, False for a name too long for the system
            mode = _mode(path)
            if mode is not None and not stat.S_ISDIR(mode):  # a FIFO, a device, a socket (links followed)
                raise DataError(f"{where}: {not_regular_file(f'image {one_line(path_text)}', mode, path)}")
            raise DataError(
                f"{where}: image {one_line(path_text)} does not exist (looked for {one_line(str(path))}): "
                "paths are relative to the CSV's folder"
            )
        if not target_text:
            raise DataError(f"{where}: the {target_column} is missing: give a value for every image")
        split = split_text.lower()
        if split and split not in SPLIT_NAMES:
            raise DataError(f"{where}: split {split_text!r} is not one of train, val, test: fix it or leave it empty")
        paths.append(path)
        ids.append(path_text)
        values.append((row_number, target_text))
        splits.append(split)
    fix = "add the grade to --grades"
    if grade_order is None and not continuous:
        grade_order = _grades_beside(csv_path, [text for _, text in values])
        fix = f"add the grade to {csv_path.parent / GRADES_FILE}"
    if grade_order is not None:
        grade_names: list[str] | None = list(grade_order)
        targets = _grade_indexes(values, grade_names, csv_path, fix)
    else:
        grade_names, targets = _numeric_targets(values, csv_path, target_column, continuous)
    return ImageSet(
        images=decode_images(paths, resize, decode),
        targets=targets,
        grade_names=grade_names,
        ids=ids,
        source=f"CSV manifest {csv_path}",
        split=np.asarray(splits) if any(splits) else None,
    )


def _read_csv_rows(csv_path: Path, target_column: str) -> list[tuple[int, str, str, str]]:
    """(row number, path, target, split) for each non-blank row, all stripped."""
    try:
        with (
            open_regular_file(csv_path, one_line(str(csv_path)), max_bytes=None) as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f,
        ):
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DataError(
                    f"{csv_path} is empty: write a header row path,{target_column}[,split] then one row per image"
                )
            columns = {name.strip().lower(): i for i, name in reversed(list(enumerate(header)))}
            wanted = ["path", target_column.lower()]
            missing = [name for name in wanted if name not in columns]
            if missing:
                raise DataError(
                    f"{csv_path} has no column {', '.join(missing)} in its header row (columns seen: "
                    f"{', '.join(repr(name) for name in header)}): the first row must name path,{target_column}[,split]"
                )
            path_at, target_at, split_at = columns["path"], columns[target_column.lower()], columns.get("split")
            rows = []
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue
                rows.append((reader.line_num, _cell(cells, path_at), _cell(cells, target_at), _cell(cells, split_at)))
            return rows
    except FileNotFoundError as error:
        raise DataError(f"{csv_path} does not exist: check the path to the CSV manifest") from error
    except OSError as error:
        raise DataError(f"{csv_path} cannot be read ({error.strerror}): pass a CSV file you can read") from error
    except UnicodeDecodeError as error:
        raise DataError(f"{csv_path} is not UTF-8 text ({error}): save the CSV as UTF-8") from error
    except csv.Error as error:
        raise DataError(f"{csv_path} is not a valid CSV ({error}): save it as comma-separated text") from error


def _mode(path: Path) -> int | None:
    """``path``'s st_mode, links followed; None where it does not exist or its name is impossible."""
    try:
        return os.stat(path).st_mode
    except (OSError, ValueError):
        return None


def _cell(cells: list[str], at: int | None) -> str:
    """The stripped cell at column ``at``; "" for a short row or an absent column."""
    return cells[at].strip() if at is not None and at < len(cells) else ""


def _grades_beside(csv_path: Path, targets: list[str]) -> list[str] | None:
    """The grade order of the grades.txt beside ``csv_path`` if it names these targets; else None.

    None where there is no grades.txt, or where every target is a number that is not one of its
    names (grade indexes, as in the attributes.csv ``imgrade data synth`` writes beside one).
    """
    path = csv_path.parent / GRADES_FILE
    if not path.exists() or path.is_dir():  # a FIFO too: refused as it is read
        return None
    names = read_grades_file(path)
    known = set(names)
    if all(text not in known and _parse_number(text) is not None for text in targets):
        return None
    return names


def _grade_indexes(
    values: list[tuple[int, str]], grade_names: list[str], csv_path: Path, fix: str = "add the grade to --grades"
) -> np.ndarray:
    index = {name: i for i, name in enumerate(grade_names)}
    targets = np.empty(len(values), dtype=np.float32)
    for k, (row_number, text) in enumerate(values):
        name = text
        if name not in index:
            number = _parse_number(text)
            if number is not None and number.is_integer():
                name = str(int(number))
        if name not in index:
            raise DataError(
                f"{csv_path} row {row_number}: grade {text!r} is not in the grade order {grade_names}: "
                f"fix the target, or {fix}"
            )
        targets[k] = index[name]
    return targets


def _numeric_targets(
    values: list[tuple[int, str]], csv_path: Path, target_column: str, continuous: bool | None
) -> tuple[list[str] | None, np.ndarray]:
    numbers = []
    for row_number, text in values:
        number = _parse_number(text)
        if number is None:
            raise DataError(
                f"{csv_path} row {row_number}: {target_column} {text!r} is not a number: "
                "give a number, or pass the grade names in order (--grades) to use names"
            )
        if continuous is False and not number.is_integer():
            raise DataError(
                f"{csv_path} row {row_number}: {target_column} {text!r} is not an integer grade: "
                "ordinal targets are integers (or grade names with --grades); use a continuous target for measurements"
            )
        numbers.append(number)
    if continuous is None:
        continuous = not all(number.is_integer() for number in numbers)
    if continuous:
        for (row_number, text), number in zip(values, numbers):
            if abs(number) > float(np.finfo(np.float32).max):  # would become inf in float32
                raise DataError(
                    f"{csv_path} row {row_number}: {target_column} {text!r} is too large: rescale the targets"
                )
        return None, np.asarray(numbers, dtype=np.float32)
    low, high = int(min(numbers)), int(max(numbers))
    if high - low >= MAX_INTEGER_GRADES:
        raise DataError(
            f"{csv_path}: the {target_column} integers run from {float(low):g} to {float(high):g}, more than "
            f"{MAX_INTEGER_GRADES:,} grades: if they are measurements, pass --target continuous"
        )
    return [str(k) for k in range(low, high + 1)], (np.asarray(numbers) - low).astype(np.float32)


def _parse_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
