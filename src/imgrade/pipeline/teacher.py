"""What a taught run learns from: the unlabelled photos, and its teacher's grades of them.

``train --unlabeled PHOTOS`` and ``train --distill`` teach a network with another model's grade
probabilities (its scores for regression): on the labelled training photos beside their true
grades, and on the unlabelled photos alone (noisy student, Xie et al. 2020: the teacher grades
each photo plain, the student learns it augmented). The teacher is ``--teacher MODEL``, or the
run's own recipe trained first on the labelled photos (``pipeline/trainer.py``).

The teacher grades once, when the run starts, and its values are kept in the run folder
(``teacher.npz``): a resumed run learns from exactly the values it began with.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgrade.config import RunConfig
from imgrade.core.errors import CheckpointError, ConfigError
from imgrade.core.io import atomic_write, read_regular_file
from imgrade.data.cache import DecodeOptions
from imgrade.data.imageset import ImageSet
from imgrade.data.loader import resize_of
from imgrade.data.unlabeled import PhotoPool, drop_labelled, read_pool
from imgrade.models.factory import head_class
from imgrade.runtime import load_grader

logger = logging.getLogger(__name__)

TEACHER_VALUES = "teacher.npz"
"""The teacher's values for a taught run's training photos, in its run folder."""

TEACHER_RUN = "teacher"
"""Where ``--unlabeled`` or ``--distill`` without ``--teacher`` trains the teacher: OUT/teacher."""


def self_taught(cfg: RunConfig) -> bool:
    """Whether the run trains its own teacher first: it learns from unlabelled photos or distils,
    and no ``--teacher`` is given."""
    return bool(cfg.data.unlabeled or cfg.train.distill) and not cfg.train.teacher


def teacher_config(cfg: RunConfig) -> RunConfig:
    """The recipe a self-taught run trains its teacher with: ``cfg`` on the labelled photos alone."""
    raw = cfg.to_dict()
    raw["data"]["unlabeled"] = None
    raw["train"].update(teacher=None, distill=False)
    return RunConfig.from_dict(raw)


@dataclass
class TeacherValues:
    """A teacher's grade probabilities (or scores) for every photo a taught run trains on."""

    values: np.ndarray
    """(N + M, T) float32: rows 0..N-1 are the labelled set's (NaN where not taught: validation,
    test), rows N.. the unlabelled photos'; T is K grades, or 1 for scores."""
    kind: str
    """"probabilities" or "scores" (``Head.teacher_kind``)."""
    pool_ids: list[str]
    """The unlabelled photos' names, in row order: a resumed run checks they are still the same."""
    teacher: str
    """The model that graded them."""

    def save(self, path: Path) -> None:
        """Write to ``path`` (.npz) atomically."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            values=self.values,
            kind=np.asarray(self.kind),
            pool_ids=np.asarray(self.pool_ids, dtype=str),
            teacher=np.asarray(self.teacher),
        )
        with atomic_write(path) as f:
            f.write(buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> TeacherValues:
        """Read what :meth:`save` wrote.

        Raises:
            CheckpointError: the file is missing or not one :meth:`save` wrote.
        """
        try:
            with np.load(io.BytesIO(read_regular_file(path, str(path))), allow_pickle=False) as f:
                return cls(f["values"], str(f["kind"]), [str(i) for i in f["pool_ids"]], str(f["teacher"]))
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"{path} cannot be read ({error}): the run cannot be resumed as it began; train again with --overwrite"
            ) from None


def read_unlabeled(cfg: RunConfig, imageset: ImageSet) -> PhotoPool | None:
    """The ``--unlabeled`` photos at the run's image size, without those also in the labelled set
    (pixel for pixel: a photo given twice would teach its own grade back); None without the flag.

    Raises:
        DataError: as :func:`imgrade.data.unlabeled.read_pool`.
        ConfigError: every unlabelled photo is also a labelled one.
    """
    if not cfg.data.unlabeled:
        return None
    pool = read_pool(
        cfg.data.unlabeled, resize_of(cfg.data), DecodeOptions.from_config(cfg.data.workers, cfg.data.cache)
    )
    pool, dropped = drop_labelled(pool, np.asarray(imageset.images))
    if not len(pool):
        raise ConfigError(
            f"all {dropped} photos in {cfg.data.unlabeled} are also in the labelled set {cfg.data.path}: "
            "pass photos without grades with --unlabeled"
        )
    also = f" ({dropped} more are in the labelled set and were left out)" if dropped else ""
    logger.info(f"unlabelled: {pool.source}: {len(pool)} photos{also}")
    return pool


def teacher_values(
    cfg: RunConfig,
    out: Path,
    imageset: ImageSet,
    train_rows: np.ndarray,
    pool: PhotoPool | None,
    resuming: bool,
) -> TeacherValues | None:
    """The teacher's values for the run in ``out``: graded now and saved, or read back on --resume.

    Args:
        train_rows: the labelled training rows, the only labelled photos taught.
        pool: the unlabelled photos (:func:`read_unlabeled`), or None.

    Returns:
        None for a run without ``--teacher`` (the trainer has filled it in for a self-taught run).

    Raises:
        ConfigError: a teacher that grades other grades, another image size or resize, or gives
            scores where the task learns probabilities.
        CheckpointError: on --resume, the unlabelled photos changed since the run began.
    """
    if not cfg.train.teacher:
        return None
    path = out / TEACHER_VALUES
    pool_ids = pool.ids if pool is not None else []
    if resuming and path.is_file():
        kept = TeacherValues.load(path)
        if kept.pool_ids != pool_ids or len(kept.values) != len(imageset) + len(pool_ids):
            raise CheckpointError(
                f"the unlabelled photos in {cfg.data.unlabeled} changed since {out} began ({len(kept.pool_ids)} then, "
                f"{len(pool_ids)} now): put them back as they were to resume, or train again with --overwrite"
            )
        return kept
    values = _grade(cfg, imageset, train_rows, pool)
    values.save(path)
    return values


def _grade(cfg: RunConfig, imageset: ImageSet, train_rows: np.ndarray, pool: PhotoPool | None) -> TeacherValues:
    """Grade the training photos and the pool with the teacher."""
    teacher = cfg.train.teacher
    kind = head_class(cfg.model.task).teacher_kind
    grader = load_grader(teacher, device=cfg.train.device)
    if list(grader.grade_names or []) != list(imageset.grade_names or []):
        raise ConfigError(
            f"teacher {teacher} grades {_names(grader.grade_names)} but {cfg.data.path} has {_names(imageset.grade_names)}: "
            "pass a teacher trained on the same grades"
        )
    if grader.image_size != cfg.data.image_size or grader.resize_mode != cfg.data.resize:
        raise ConfigError(
            f"teacher {teacher} grades {grader.image_size}x{grader.image_size} photos ({grader.resize_mode}) but this run "
            f"trains on {cfg.data.image_size}x{cfg.data.image_size} ({cfg.data.resize}): set --image-size "
            f"{grader.image_size} --resize {grader.resize_mode}, or pass a teacher of this size"
        )
    labelled = grader.outputs(np.asarray(imageset.images)[train_rows])
    unlabelled = grader.outputs(np.asarray(pool.images)) if pool is not None else None
    if kind == "probabilities" and labelled.probabilities is None:
        raise ConfigError(
            f"teacher {teacher} gives scores, not grade probabilities, which --task {cfg.model.task} learns from: "
            "pass a teacher with a graded task (sord, classification, ...), or use --task regression"
        )
    width = len(imageset.grade_names) if kind == "probabilities" else 1
    values = np.full((len(imageset) + (len(pool) if pool is not None else 0), width), np.nan, dtype=np.float32)
    values[train_rows] = _values(labelled, kind)
    if unlabelled is not None:
        values[len(imageset) :] = _values(unlabelled, kind)
    logger.info(
        f"teacher: {teacher} ({grader.runtime}) graded {len(train_rows)} labelled"
        + (f" and {len(pool)} unlabelled" if pool is not None else "")
        + " training photos"
    )
    return TeacherValues(values, kind, pool.ids if pool is not None else [], str(teacher))


def _values(outputs, kind: str) -> np.ndarray:
    """(N, T): the probabilities (N, K), or the scores as (N, 1)."""
    if kind == "probabilities":
        return np.asarray(outputs.probabilities, dtype=np.float32)
    return np.asarray(outputs.scores, dtype=np.float32)[:, None]


def _names(names: list[str] | None) -> str:
    return ",".join(names) if names else "a continuous target"
