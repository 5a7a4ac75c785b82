"""Grade a large archive of photos on Ray: ``imgrade predict MODEL INPUTS --engine ray``.

The photo paths become a Ray Data dataset; ``map_batches`` sends them to a pool of actors, each
holding the ONNX grader (ONNX Runtime, no torch) and decoding each photo as ``imgrade predict``
does (``imgrade.data.images.load_image``). The rows stream back to this process, which writes them
to one CSV, JSON lines or Parquet file with ``predict``'s columns (``imgrade.pipeline.rows``): a photo
that cannot be read gets its message in the ``error`` column and no grade, and the job goes on.

Ray starts in this process (one actor per CPU) unless ``address`` or ``$RAY_ADDRESS`` names a
cluster, or the program has already called ``ray.init``. On a cluster every node needs imgrade
(``pip install 'imgrade[ray]'``) and must read the photos at the paths given. The model travels
with the job: it is read here and handed to the actors, so the nodes need no copy of it.

    from imgrade.batch import grade_batch

    result = grade_batch("model.onnx", ["photos/"], out="grades.parquet")
    print(result.graded, result.failed)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from imgrade.core.errors import ConfigError, DataError
from imgrade.core.io import open_regular_file, read_regular_file
from imgrade.data.images import IMAGE_EXTENSIONS, list_images, one_line
from imgrade.pipeline.predictor import grade_photos
from imgrade.pipeline.rows import RowLayout, output_format, row_writer
from imgrade.runtime import load_grader, onnx_grader
from imgrade.runtime.grading import Engine
from imgrade.runtime.onnx_engine import OnnxEngine

__all__ = ["BATCH_SIZE", "BatchResult", "grade_batch", "read_paths"]

log = logging.getLogger(__name__)

BATCH_SIZE = 256
"""Photos per call of an actor (and per block of the dataset): large enough that Ray's cost per
call (a few milliseconds) is small beside decoding and grading 256 photos, small enough that a
pool of actors shares out a few thousand photos evenly."""
LIST_SUFFIX = ".txt"
TABLE_SUFFIX = ".parquet"
INSTALL_HINT = "pip install 'imgrade[ray]'"


@dataclass
class BatchResult:
    """What :func:`grade_batch` did."""

    out: str | None
    """The file written, or None for CSV on the stream."""
    photos: int
    """Rows written: one per photo path."""
    failed: int
    """Rows with an error and no grade (missing, corrupt or not an image)."""
    actors: int
    """Actors in the pool, each holding one ONNX grader."""
    seconds: float
    """Wall time of the job from the first photo sent to the last row written (not Ray's start-up)."""

    @property
    def graded(self) -> int:
        return self.photos - self.failed


def grade_batch(
    model: str | os.PathLike,
    inputs: list[str | os.PathLike],
    *,
    out: str | os.PathLike | None = None,
    stream: IO[str] | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    num_actors: int | None = None,
    batch_size: int = BATCH_SIZE,
    tta: bool | None = None,
    runtime: str = "auto",
) -> BatchResult:
    """Grade every photo under ``inputs`` with the ``.onnx`` file ``model`` on Ray Data.

    Args:
        model: an ``.onnx`` file written by ``imgrade export`` (a run folder is refused: export it).
        inputs: photos, folders of photos (read recursively), ``.txt`` lists of paths (one a line)
            or ``.parquet`` tables with a ``path`` column; relative paths start from the current folder.
        out: a ``.csv``, ``.jsonl`` or ``.parquet`` file, written to a temporary name and renamed
            into place; None writes CSV to ``stream`` (stdout).
        address: the Ray cluster to join (``ray://HEAD:10001`` or ``HEAD:6379``); None: ``$RAY_ADDRESS``,
            else a Ray started in this process (unless ``ray.init`` was called already).
        num_cpus: CPUs of a Ray started in this process (default: all of them).
        num_actors: graders in the pool (default: one per CPU of the cluster).
        batch_size: photos per call of an actor.
        tta: as ``predict --tta``: the .onnx file must agree (exported with or without ``--tta``).
        runtime: "auto", "onnx" or "openvino", as for ``predict``; each actor chooses for the node
            it runs on (``imgrade.runtime.onnx_grader``).

    Returns:
        How many photos were graded and how many failed; the rows are in ``out`` in input order.

    Raises:
        ConfigError: Ray is not installed, the model is not an .onnx file, an unknown output format,
            or the cluster cannot be reached.
        OutputError: the folder of ``out`` does not exist, or ``out`` cannot be written.
        CheckpointError: ``model`` is not an imgrade ONNX grader.
        DataError: an input does not exist, a list or table cannot be read, or no photo is given.
    """
    ray = import_ray()
    if out is not None:
        output_format(out)  # a wrong suffix or a missing folder fails before Ray starts
    grader = _check_model(model, tta, runtime)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    paths = [path for item in inputs for path in read_paths(item)]
    if not paths:
        raise DataError(f"no photo paths in {', '.join(map(str, inputs))}: give photos, folders, lists or tables")
    layout = RowLayout.of(grader)
    if num_actors is not None and num_actors < 1:
        raise ConfigError(f"num_actors must be at least 1, got {num_actors}")
    with _ray_session(ray, address, num_cpus):
        actors = num_actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
        # a block is the unit an actor takes: at least one per actor, at most batch_size photos each
        blocks = min(len(paths), max(actors, math.ceil(len(paths) / batch_size)))
        dataset = ray.data.from_items([{"path": path} for path in paths], override_num_blocks=blocks)
        graded = dataset.map_batches(
            _GradeBatch,
            fn_constructor_kwargs={
                "model": Path(model).read_bytes(),
                "name": Path(model).name,
                "base": os.getcwd(),
                "layout": layout,
                "runtime": runtime,
            },
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=1,
        )
        graded.context.execution_options.preserve_order = True  # rows in input order, as predict writes them
        log.info(f"grading {len(paths)} photos on Ray with {actors} actors, {batch_size} photos per call")
        start = time.perf_counter()
        batches = graded.iter_batches(batch_format="pyarrow", batch_size=None)
        failed = 0
        with row_writer(layout, out, stream) as write:
            for batch in batches:
                rows = batch.to_pylist()
                write(rows)
                failed += sum(row["error"] is not None for row in rows)
        seconds = time.perf_counter() - start
    return BatchResult(None if out is None else str(out), len(paths), failed, actors, seconds)


def read_paths(item: str | os.PathLike) -> list[str]:
    """The photo paths ``item`` names: a photo, a folder's photos, a ``.txt`` list or a ``.parquet`` table.

    A list holds one path a line (blank lines and lines starting with ``#`` are skipped); a table's
    ``path`` column is read. Paths are kept as written: they are read where the actors run.

    Raises:
        DataError: ``item`` does not exist, is none of these, a list or table is not a regular file
            (a FIFO, a device), or a table has no ``path`` column.
    """
    path = Path(item)
    suffix = path.suffix.lower()
    name = one_line(str(path))
    if suffix in (LIST_SUFFIX, TABLE_SUFFIX) and path.exists() and not path.is_dir():  # a FIFO too: refused as read
        try:
            if suffix == TABLE_SUFFIX:
                return _table_paths(path)
            text = read_regular_file(path, name, max_bytes=None).decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{name} is not UTF-8 text ({error}): save the list as UTF-8") from None
        except OSError as error:
            raise DataError(f"{name} cannot be read ({error.strerror or error}): check its permissions") from None
        lines = (line.strip() for line in text.splitlines())
        return [line for line in lines if line and not line.startswith("#")]
    if path.is_file() and suffix not in IMAGE_EXTENSIONS:
        raise DataError(
            f"{one_line(str(path))} is not a photo, a folder, a {LIST_SUFFIX} list of paths or a "
            f"{TABLE_SUFFIX} table with a path column: give one of these"
        )
    return [str(p) for p in list_images(path)]  # a photo or a folder; says what is wrong otherwise


class _GradeBatch:
    """A Ray actor: one grader of the .onnx file, called with a batch of paths, returning a table of rows."""

    def __init__(self, model: bytes, name: str, base: str, layout: RowLayout, runtime: str = "auto"):
        # One inference thread: Ray gives each actor one CPU, and the pool has one actor per CPU.
        self.grader = onnx_grader(OnnxEngine.from_bytes(model, threads=1, name=name), model, runtime, threads=1)
        self.base = Path(base)
        self.layout = layout

    def __call__(self, batch: dict[str, np.ndarray]):
        paths = [str(p) if p is not None else "" for p in batch["path"]]
        photos = grade_photos(self.grader, paths, self.base)
        return self.layout.table(
            [self.layout.row(path, grade and grade.to_dict(), error) for path, grade, error in photos]
        )


def _check_model(model: str | os.PathLike, tta: bool | None, runtime: str = "auto") -> Engine:
    """Load the grader here once, so a wrong file (or a runtime not installed) fails in one line before Ray starts."""
    if Path(model).suffix.lower() != ".onnx":
        raise ConfigError(
            f"--engine ray grades an .onnx file, got {model}: export it first with "
            f"`imgrade export {model} --out model.onnx` and grade model.onnx"
        )
    if runtime not in ("auto", "onnx", "openvino"):
        raise ConfigError(f"--engine ray grades an .onnx file with --runtime auto, onnx or openvino, not {runtime}")
    return load_grader(model, runtime=runtime, threads=1, tta=tta)


def _table_paths(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    with open_regular_file(path, one_line(str(path)), max_bytes=None) as file:  # never a FIFO or a device
        try:
            table = pq.ParquetFile(file)
            names = table.schema_arrow.names
        except Exception as error:  # pyarrow's ArrowInvalid and OSError
            raise DataError(
                f"{path} is not a readable Parquet table ({one_line(str(error))[:160]}): write it again"
            ) from None
        if "path" not in names:
            raise DataError(f"{path} has no path column (columns: {', '.join(names)}): name the photos' column path")
        column = table.read(columns=["path"]).column("path")
    return ["" if value is None else str(value) for value in column.to_pylist()]


def import_ray():
    """The ``ray`` module with Ray Data loaded.

    Raises:
        ConfigError: Ray Data is not installed, naming the extra that installs it.
    """
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data is the ray[data] extra)
    except ImportError as error:
        raise ConfigError(f"--engine ray needs Ray Data ({error}): {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def _ray_session(ray, address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Use the Ray this program started, join a cluster, or start one here; leave as found."""
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
            log.info(f"joined the Ray cluster at {address}: {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
    except ConnectionError as error:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({one_line(str(error))[:160]}): check --address "
            "(`ray status` on the head node shows it)"
        ) from None
    try:
        yield
    finally:
        ray.shutdown()
