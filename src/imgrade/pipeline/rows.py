"""The rows ``imgrade predict`` writes, one per photo, and the files that hold them.

Both engines (this process, and ``--engine ray`` in ``imgrade.batch``) build every row with
:meth:`RowLayout.row` and write them with :func:`row_writer`, so a CSV, JSON lines or Parquet file
has the same columns, in the same order, whichever engine graded the photos:

    image, score, grade, grade_set, p_<grade> ..., error

``grade`` only for a model with grades, ``grade_set`` only for a calibrated one, one ``p_<grade>``
per grade only for a head with probabilities; ``error`` always, empty (null) for a graded photo
and the reason for one that could not be graded, whose other columns are then empty.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from imgrade.core.errors import ConfigError, OutputError
from imgrade.core.io import atomic_write
from imgrade.core.registry import head_entry, task_names
from imgrade.runtime.grading import Engine

OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
"""``--out``'s suffix -> the format written (both engines)."""
PROBABILITY_PREFIX = "p_"
"""A grade's probability column is this prefix and the grade's name: ``p_2L``."""
DECIMALS = 4
"""Score and probabilities are rounded to this many decimals in every format, so that a CSV, a
JSON lines and a Parquet file of the same photos hold the same numbers."""
PARQUET_HINT = "pip install pyarrow"
FORMAT_OR_OUT = (
    "--format picks what goes to stdout, --out FILE's suffix (.csv, .jsonl, .parquet) the file's format: "
    "give one of them"
)

RowWrite = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True)
class RowLayout:
    """The columns of ``predict``'s rows for one grader; builds each row."""

    grades: tuple[str, ...] | None
    """The grade names, when the rows have a grade column; None for a continuous target."""
    grade_sets: bool
    """Whether the rows have a grade_set column (a calibrated model)."""
    probabilities: bool
    """Whether the rows have a p_<grade> column per grade (a head with grade probabilities)."""

    @classmethod
    def of(cls, grader: Engine) -> RowLayout:
        """The layout of ``grader``'s rows."""
        grades = tuple(grader.grade_names) if grader.grade_names is not None else None
        probabilities = grades is not None and grader.task in task_names() and head_entry(grader.task).probabilities
        return cls(grades, grades is not None and grader.conformal is not None, probabilities)

    @property
    def columns(self) -> list[str]:
        """The column names, in order.

        >>> RowLayout(("L", "M"), grade_sets=True, probabilities=True).columns
        ['image', 'score', 'grade', 'grade_set', 'p_L', 'p_M', 'error']
        >>> RowLayout(None, grade_sets=False, probabilities=False).columns
        ['image', 'score', 'error']
        """
        columns = ["image", "score"]
        if self.grades is not None:
            columns.append("grade")
            if self.grade_sets:
                columns.append("grade_set")
            if self.probabilities:
                columns += [PROBABILITY_PREFIX + grade for grade in self.grades]
        return [*columns, "error"]

    def row(self, image: str, record: dict[str, Any] | None = None, error: str | None = None) -> dict[str, Any]:
        """One photo's row: its grade in JSON form (:meth:`Grade.to_dict`), or the error that kept
        it from being graded. Every column is a key; an empty cell is None. The grade set is its
        names joined by ``|``; score and probabilities are rounded to ``DECIMALS``.

        >>> layout = RowLayout(("L", "M"), grade_sets=True, probabilities=True)
        >>> layout.row("a.png", {"image": "a.png", "score": 0.23456, "grade": "L", "grade_index": 0,
        ...     "grade_set": ["L", "M"], "probabilities": {"L": 0.712345, "M": 0.287655}})
        {'image': 'a.png', 'score': 0.2346, 'grade': 'L', 'grade_set': 'L|M', 'p_L': 0.7123, 'p_M': 0.2877, 'error': None}
        >>> layout.row("b.png", error="b.png is empty (0 bytes)")["error"], layout.row("b.png", error="x")["score"]
        ('b.png is empty (0 bytes)', None)
        """
        row: dict[str, Any] = dict.fromkeys(self.columns)
        row["image"] = image
        if record is None:
            assert error is not None, "a photo without a grade has an error"
            row["error"] = error
            return row
        row["score"] = round(record["score"], DECIMALS)
        if "grade" in row:
            row["grade"] = record["grade"]
        if "grade_set" in row and record["grade_set"] is not None:
            row["grade_set"] = "|".join(record["grade_set"])
        if self.probabilities and record["probabilities"] is not None:
            for grade, probability in record["probabilities"].items():
                row[PROBABILITY_PREFIX + grade] = round(probability, DECIMALS)
        return row

    def schema(self):
        """The Parquet (Arrow) schema: score and probabilities float64, the others strings."""
        import pyarrow as pa

        numbers = {"score", *(PROBABILITY_PREFIX + g for g in self.grades or ())} if self.probabilities else {"score"}
        return pa.schema([(name, pa.float64() if name in numbers else pa.string()) for name in self.columns])

    def table(self, rows: list[dict[str, Any]]):
        """``rows`` as an Arrow table of :meth:`schema`."""
        import pyarrow as pa

        return pa.table({name: [row[name] for row in rows] for name in self.columns}, schema=self.schema())


def json_record(image: str, record: dict[str, Any] | None = None, error: str | None = None) -> dict[str, Any]:
    """One photo in ``predict --format json``: a graded photo's record is the one ``POST /v1/grade``
    answers (:meth:`Grade.to_dict`), as it is; a photo that could not be graded has the same
    fields, None but ``image``, and ``error``.

    >>> json_record("b.png", error="b.png is empty")
    {'image': 'b.png', 'score': None, 'grade': None, 'grade_index': None, 'grade_set': None, 'probabilities': None, 'error': 'b.png is empty'}
    """
    if record is not None:
        return record
    assert error is not None, "a photo without a grade has an error"
    empty = dict.fromkeys(("score", "grade", "grade_index", "grade_set", "probabilities"))
    return {"image": image, **empty, "error": error}


def output_format(out: str | os.PathLike) -> str:
    """The format ``--out`` asks for (csv, jsonl or parquet), checked before anything is graded.

    Raises:
        ConfigError: another suffix, or Parquet without pyarrow.
        OutputError: the folder of ``out`` does not exist.
    """
    path = Path(out)
    kind = OUTPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(
            f"--out {out} is not a .csv, .jsonl or .parquet file: name it {path.stem}.csv, "
            f"{path.stem}.jsonl (one JSON record a line) or {path.stem}.parquet"
        )
    if kind == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"--out {out} needs pyarrow to write Parquet: {PARQUET_HINT}, or write {path.stem}.csv"
            ) from None
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"--out {out}: the folder {folder} does not exist: create it first, or write elsewhere")
    return kind


@contextlib.contextmanager
def row_writer(
    layout: RowLayout, out: str | os.PathLike | None = None, stream: IO[str] | None = None
) -> Iterator[RowWrite]:
    """A function that writes a list of rows (:meth:`RowLayout.row`) as they come.

    ``out``: a .csv, .jsonl or .parquet file, written to a temporary name and renamed into place
    when the block ends without an error (a failed job leaves no file under ``out``); None: CSV on
    ``stream`` (stdout), a header first.
    """
    if out is None:
        yield _csv_rows(stream or sys.stdout, layout)
        return
    kind = output_format(out)
    if kind == "parquet":
        import pyarrow.parquet as pq

        with atomic_write(out, "wb") as file, pq.ParquetWriter(file, layout.schema()) as parquet:
            yield lambda rows: parquet.write_table(layout.table(rows))
        return
    with atomic_write(out, "w") as file:
        yield _csv_rows(file, layout) if kind == "csv" else _json_lines(file)


def _csv_rows(file: IO[str], layout: RowLayout) -> RowWrite:
    writer = csv.DictWriter(file, fieldnames=layout.columns)  # None is written as an empty cell
    writer.writeheader()

    def write(rows: list[dict[str, Any]]) -> None:
        writer.writerows(rows)
        file.flush()  # a reader of the stream sees each batch when it is graded

    return write


def _json_lines(file: IO[str]) -> RowWrite:
    def write(rows: list[dict[str, Any]]) -> None:
        file.writelines(json.dumps(row) + "\n" for row in rows)

    return write
