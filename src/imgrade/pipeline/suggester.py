"""``imgrade suggest``: which unlabelled photos to label next, written as a manifest to fill in.

The pool (``imgrade.data.unlabeled``) is decoded as the grader takes its input, less the photos of
a labelled set; the grader grades it; :mod:`imgrade.evaluation.acquisition` ranks it by how
unsure the grade is, spread over how the photos look: the network's pooled features for a run
(PyTorch), its grade probabilities (or score) beside an 8x8 thumbnail for an .onnx file. No torch
import for an .onnx grader.

The file written, ``path,target,suggested,grade_set,uncertainty,rank``, is a CSV manifest
(``imgrade.data.csv_manifest``) once its target column is filled in: ``train --data`` reads path
and target and ignores the rest.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgrade.config import DataConfig
from imgrade.core.errors import ConfigError, DataError, OutputError
from imgrade.core.io import write_csv
from imgrade.data.loader import load_dataset
from imgrade.data.unlabeled import PhotoPool, drop_labelled, list_pool, read_pool
from imgrade.evaluation.acquisition import (
    DEFAULT_DIVERSITY,
    balanced,
    cut_point_closeness,
    expected_grade_error,
    select,
    thumbnails,
)
from imgrade.runtime import load_grader
from imgrade.runtime.grading import Engine

COLUMNS = ("path", "target", "suggested", "grade_set", "uncertainty", "rank")
"""The header of the file written."""
DEFAULT_OUT = "to-label.csv"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranking:
    """A pool ranked for labelling: what :func:`rank` returns."""

    order: np.ndarray
    """(n,) the indexes of the photos to label, best first."""
    uncertainty: np.ndarray
    """(N,) each photo's uncertainty (see ``measure``)."""
    grades: np.ndarray
    """(N,) the grade index the grader gives each photo."""
    sets: np.ndarray | None
    """(N, K) bool, each photo's grade set; None for a grader without calibrated sets."""
    measure: str
    """What ``uncertainty`` is: "expected grade error" or "cut-point closeness"."""
    embedding: str
    """Where distances were measured: "pooled features", or "probabilities + 8x8 thumbnail" (or the
    score's) for a back end without features."""


@dataclass(frozen=True)
class Suggestion:
    """One row of the file written."""

    path: str
    """The photo, relative to the file's folder where it lies below it, else absolute."""
    suggested: str
    """The grade the grader gives it."""
    grade_set: list[str] | None
    """Its calibrated grade set; None for a grader without one."""
    uncertainty: float
    rank: int
    """1 for the photo to label first."""

    def row(self) -> dict[str, str]:
        grade_set = "|".join(self.grade_set) if self.grade_set is not None else ""
        return dict(zip(COLUMNS, (self.path, "", self.suggested, grade_set, f"{self.uncertainty:.4f}", str(self.rank))))


@dataclass
class Suggestions:
    """What :func:`suggest` did."""

    rows: list[Suggestion]
    out: str
    """The file written."""
    pool: int
    """Photos ranked (the pool less the labelled ones)."""
    dropped: int
    """Pool photos left out because the labelled set holds them."""
    mean_chosen: float
    """The mean uncertainty of the suggested photos."""
    mean_pool: float
    """The mean uncertainty of every photo ranked."""
    measure: str
    embedding: str

    def summary(self) -> str:
        """Two lines for the person who asked."""
        dropped = f" ({self.dropped} already labelled left out)" if self.dropped else ""
        return (
            f"ranked {self.pool} photos{dropped} by {self.measure}, spread over {self.embedding}: "
            f"wrote the {len(self.rows)} to label first to {self.out}\n"
            f"mean uncertainty {self.mean_chosen:.3f} of those chosen, {self.mean_pool:.3f} of all"
        )


def suggest(
    run: str | os.PathLike,
    photos: str | os.PathLike,
    *,
    n: int,
    out: str | os.PathLike = DEFAULT_OUT,
    labelled: str | os.PathLike | None = None,
    diversity: float = DEFAULT_DIVERSITY,
    overwrite: bool = False,
    device: str = "auto",
    runtime: str = "auto",
) -> Suggestions:
    """Rank the unlabelled ``photos`` for labelling with the grader ``run`` and write the first ``n``.

    Args:
        run: a run folder or checkpoint (PyTorch) or an exported ``.onnx`` file.
        photos: the unlabelled pool: a folder, a CSV with a path column, or a .txt list
            (``imgrade.data.unlabeled.read_pool``).
        n: how many photos to suggest; more than the pool suggests them all (with a warning).
        out: the CSV to write (atomically).
        labelled: a labelled set (anything ``train --data`` reads) whose photos leave the pool.
        diversity: 0 ranks by uncertainty alone, 1 by spread alone (``acquisition.select``).
        overwrite: replace ``out`` if it exists.
        device, runtime: as for :func:`imgrade.runtime.load_grader`.

    Raises:
        ConfigError: ``n`` below 1, ``diversity`` outside 0..1, or a grader of a continuous target.
        OutputError: ``out`` exists and ``overwrite`` is off.
        CheckpointError: ``run`` is not a model imgrade can load.
        DataError: a missing or empty pool, a pool photo that cannot be decoded (named), or a
            pool that is all labelled.
    """
    if n < 1:
        raise ConfigError(f"--n {n} asks for no photos: ask for at least 1")
    if not 0.0 <= diversity <= 1.0:
        raise ConfigError(f"--diversity {diversity} is outside 0..1: 0 ranks by uncertainty alone, 1 by spread alone")
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputError(f"{out} already exists: pass --overwrite to replace it, or --out another file")
    list_pool(photos)  # a missing or empty pool fails before the model loads
    grader = load_grader(run, runtime=runtime, device=device)
    if grader.grade_names is None:
        raise ConfigError(
            f"{run} predicts a continuous target: suggest ranks photos by how unsure their grade is, and this "
            "model has no grades; label photos at random, or train a graded model"
        )
    pool = read_pool(photos, grader.resize)
    if len(pool) == 0:
        raise DataError(f"{photos} holds no photos: pass a folder, CSV or list with photos to rank")
    dropped = 0
    if labelled is not None:
        data = DataConfig(path=str(labelled), image_size=grader.image_size, resize=grader.resize_mode)
        pool, dropped = drop_labelled(pool, np.asarray(load_dataset(data, grades=grader.grade_names).images))
        if len(pool) == 0:
            raise DataError(f"every photo of {photos} is in the labelled set {labelled}: nothing is left to label")
        logger.info(f"left out {dropped} photos of {photos} that {labelled} already labels")
    if n > len(pool):
        logger.warning(f"--n {n} is more than the {len(pool)} photos to rank: suggesting them all")
        n = len(pool)
    logger.info(f"ranking {len(pool)} photos from {pool.source}")
    ranking = rank(grader, pool.images, n, diversity)
    rows = _suggestions(grader, pool, ranking, out)
    write_csv(out, [row.row() for row in rows])
    return Suggestions(
        rows,
        str(out),
        len(pool),
        dropped,
        float(ranking.uncertainty[ranking.order].mean()),
        float(ranking.uncertainty.mean()),
        ranking.measure,
        ranking.embedding,
    )


def rank(grader: Engine, images: np.ndarray, n: int, diversity: float = DEFAULT_DIVERSITY) -> Ranking:
    """Rank uint8 images (N, S, S, 3) of ``grader``'s input size for labelling; pick ``n`` (1..N).

    Raises:
        ConfigError: the grader has neither grade probabilities nor cut points to measure
            uncertainty by.
    """
    outputs = grader.outputs(images)
    if outputs.probabilities is not None:
        uncertainty, measure = expected_grade_error(outputs.probabilities), "expected grade error"
        look = outputs.probabilities
    elif grader.cut_points is not None:
        uncertainty, measure = cut_point_closeness(outputs.scores, grader.cut_points), "cut-point closeness"
        look = outputs.scores[:, None]
    else:
        raise ConfigError(
            f"this {grader.task} grader gives neither grade probabilities nor cut points: suggest has no uncertainty "
            "to rank by; train a head with probabilities (e.g. --task sord)"
        )
    features = grader.features(images)
    if features is not None:
        embedding, name = features, "pooled features"
    else:
        what = "probabilities" if outputs.probabilities is not None else "score"
        embedding, name = balanced(look, thumbnails(images)), f"{what} + 8x8 thumbnail"
    order = select(uncertainty, embedding, n, diversity)
    return Ranking(order, uncertainty, grader.grades(outputs), grader.sets(outputs), measure, name)


def _suggestions(grader: Engine, pool: PhotoPool, ranking: Ranking, out: Path) -> list[Suggestion]:
    """The rows of the file written, best first."""
    names = grader.grade_names
    assert names is not None
    folder = Path(os.path.abspath(out)).parent
    rows = []
    for place, i in enumerate(ranking.order, start=1):
        grade_set = None
        if ranking.sets is not None:
            grade_set = [name for name, kept in zip(names, ranking.sets[i]) if kept]
        rows.append(
            Suggestion(
                _relative(pool.paths[i], folder),
                names[int(ranking.grades[i])],
                grade_set,
                float(ranking.uncertainty[i]),
                place,
            )
        )
    return rows


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` where it lies below it (as a manifest there names it), else absolute.

    >>> _relative(Path("/data/pool/a.png"), Path("/data"))
    'pool/a.png'
    >>> _relative(Path("/elsewhere/a.png"), Path("/data"))
    '/elsewhere/a.png'
    """
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(folder).as_posix()
    except ValueError:
        return absolute.as_posix()
