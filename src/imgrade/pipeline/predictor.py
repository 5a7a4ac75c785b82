"""``imgrade predict``: grade image files, batch by batch, into CSV, JSON lines, Parquet or JSON.
No torch import for .onnx graders.

The photos are listed first, then graded ``CHUNK`` at a time while a few decoder threads decode the
next chunks (``imgrade.data.prefetch``); each chunk's rows are written, in input order, as soon as
it is graded, and at most ``imgrade.data.prefetch.AHEAD`` chunks are decoded ahead of it, so memory stays flat however
many photos there are. A photo that cannot be read gets an error row (``imgrade.pipeline.rows``)
and the job goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from imgrade.core.errors import ConfigError
from imgrade.core.threads import auto_threads
from imgrade.data.images import PROGRESS_MIN_IMAGES, list_images
from imgrade.data.prefetch import ChunkDecoder, Decoded, auto_decode_threads, decode_photos
from imgrade.pipeline.rows import FORMAT_OR_OUT, RowLayout, RowWrite, json_record, output_format, row_writer
from imgrade.runtime import load_grader
from imgrade.runtime.grading import Engine, Grade

CHUNK = 256
"""Photos decoded and graded per batch: enough to keep the network's passes full (32 a pass on a
CPU, 256 on a GPU), few enough that the decoded pixels stay small (768 kB at 32x32)."""
STDOUT_FORMATS = ("csv", "json")


@dataclass(frozen=True)
class Failure:
    """A photo that could not be graded."""

    image: str
    """Its path, as listed."""
    error: str
    """Why: one line naming the file and the fix (the ``error`` column of its row)."""


@dataclass
class Prediction:
    """What :func:`predict` did: the grades (unless ``keep_grades=False``) and the failures."""

    photos: int
    """Photos listed: one row each."""
    grades: list[Grade] = field(default_factory=list)
    """The graded photos' grades, in input order (empty with ``keep_grades=False``)."""
    failures: list[Failure] = field(default_factory=list)
    """The photos that could not be graded, in input order."""
    out: str | None = None
    """The file written, or None when the rows went to the stream."""

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def graded(self) -> int:
        return self.photos - self.failed


def predict(
    run: str | Path,
    inputs: list[str],
    *,
    out: str | os.PathLike | None = None,
    fmt: str | None = None,
    device: str = "auto",
    runtime: str = "auto",
    stream: IO[str] | None = None,
    tta: bool | None = None,
    keep_grades: bool = True,
    decode_threads: int | None = None,
) -> Prediction:
    """Grade each photo under ``inputs``, writing one row per photo as each batch is graded.

    Args:
        run: a run folder or checkpoint (PyTorch) or an exported ``.onnx`` file (ONNX Runtime).
        inputs: photos, or folders of photos (read recursively).
        out: a ``.csv``, ``.jsonl`` (one JSON record a line) or ``.parquet`` file for the rows
            (``imgrade.pipeline.rows``), written to a temporary name and renamed into place at the
            end; None: the rows go to ``stream`` (stdout) in ``fmt``.
        fmt: for ``stream`` only: ``"csv"`` (the default: the rows) or ``"json"`` (one JSON list of
            records: :meth:`Grade.to_dict` for a graded photo, the same fields as None but ``image``
            and an ``error`` for one that could not be graded; ``imgrade.pipeline.rows.json_record``).
        device, runtime, tta: as for :func:`imgrade.runtime.load_grader`.
        stream: where rows go without ``out`` (default: stdout).
        keep_grades: keep every grade in the result; False keeps memory flat for any number of
            photos (the rows are only written).
        decode_threads: threads that decode the next chunks while one is graded; None: half the
            threads the network computes on (``imgrade.core.threads.auto_threads``), at least one
            (:func:`imgrade.data.prefetch.auto_decode_threads`); 0: each chunk is decoded in this
            thread, then graded.

    Returns:
        The grades of the graded photos and the photos that could not be graded, each with its reason.

    Raises:
        ConfigError: a bad ``fmt`` or ``out`` (or both given), a negative ``decode_threads``, or a
            runtime that cannot read ``run``.
        CheckpointError: ``run`` is not a model imgrade can load.
        DataError: an input does not exist or is a folder without photos.
        OutputError: the folder of ``out`` does not exist, or ``out`` cannot be written.
    """
    if out is not None and fmt is not None:
        raise ConfigError(FORMAT_OR_OUT)
    if fmt is not None and fmt not in STDOUT_FORMATS:
        raise ConfigError(f"--format {fmt!r} is not csv or json")
    if out is not None:
        output_format(out)  # a wrong suffix or a missing folder fails before the model loads
    if decode_threads is not None and decode_threads < 0:
        raise ConfigError(
            f"--decode-threads {decode_threads} is negative: use 0 (decode in the grading thread) or a count"
        )
    grader = load_grader(run, runtime=runtime, device=device, tta=tta)
    threads = auto_decode_threads(auto_threads().threads) if decode_threads is None else decode_threads
    paths = [str(p) for item in inputs for p in list_images(item)]
    layout = RowLayout.of(grader)
    result = Prediction(len(paths), out=None if out is None else str(out))
    quiet = len(paths) <= PROGRESS_MIN_IMAGES or not sys.stderr.isatty()
    with (
        _json_list(stream) if fmt == "json" else row_writer(layout, out, stream) as write,
        tqdm(total=len(paths), desc="grading", unit="photo", disable=quiet) as progress,
    ):
        decoder = ChunkDecoder(paths, grader.resize, chunk=CHUNK, threads=threads)
        with decoder as chunks:
            for decoded in chunks:
                photos = list(_graded(grader, decoded))
                for image, grade, error in photos:
                    if grade is None:
                        result.failures.append(Failure(image, error))
                    elif keep_grades:
                        result.grades.append(grade)
                if fmt == "json":
                    write([json_record(image, grade and grade.to_dict(), error) for image, grade, error in photos])
                else:
                    write([layout.row(image, grade and grade.to_dict(), error) for image, grade, error in photos])
                progress.update(len(photos))
    return result


def grade_photos(
    grader: Engine, paths: list[str], base: Path | None = None
) -> Iterator[tuple[str, Grade | None, str | None]]:
    """(path, grade, None) for each photo that decodes, (path, None, reason) for each that does not,
    in order, the photos decoded one after another in this thread: one batch of the Ray job's actors
    (``imgrade.batch``, one CPU each); ``predict`` grades the chunks its decoder threads decode the
    same way.

    A relative path is read below ``base`` where given (an absolute one stays as it is).
    """
    return _graded(grader, decode_photos(paths, grader.resize, base))


def _graded(grader: Engine, decoded: Decoded) -> Iterator[tuple[str, Grade | None, str | None]]:
    """:func:`grade_photos`'s rows for a chunk already decoded."""
    good = decoded.good
    grades = grader.results([decoded.paths[i] for i in good], grader.outputs(decoded.images)) if good else []
    by_index = dict(zip(good, grades))
    for i, path in enumerate(decoded.paths):
        yield path, by_index.get(i), decoded.errors.get(i)


@contextlib.contextmanager
def _json_list(stream: IO[str] | None) -> Iterator[RowWrite]:
    """``--format json`` on a stream: one JSON list, written a batch of records at a time."""
    stream = stream or sys.stdout
    separator = "["

    def write(records: list[dict[str, Any]]) -> None:
        nonlocal separator
        for record in records:
            stream.write(f"{separator}\n{json.dumps(record)}")
            separator = ","
        stream.flush()

    yield write
    stream.write("[]\n" if separator == "[" else "\n]\n")
