"""Grades with more than one axis: a grade table, and a head with one softmax per axis.

CUCUMBER-9's nine grades are two things at once: a size (2L > L > M > S > 2S) and a shape
(straight, bent, C), with BL, BM, BS the bent L, M, S. One regression line through
2L, L, M, S, 2S, BL, BM, BS, C puts "bent large" between "2S" and "bent medium". The ``axes``
task learns each axis on its own instead and decodes the grade from them.

A grade table names each grade's level on every axis; an empty cell means "any" (C has no size)::

    grade,size,shape
    2L,2L,straight
    BL,L,bent
    C,,C

An axis's levels are ordered by their first appearance down the table (that order only fixes
where each level sits in the head's outputs). Rows may come in any order: they are matched to the
data's grades by name.

The head outputs one block of logits per axis. Training sums the axes' cross-entropies, skipping an
axis where the true grade is "any". Grade log-probabilities are the sum of the grade's levels'
log-probabilities (an "any" cell adds 0: that axis is marginalised), renormalised over the K grades:
the probability of each grade's region when the axes are independent, given that the photo is one
of the K grades. Scores, metrics and calibration stay on the data's grade order.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imgrade.core.errors import ConfigError
from imgrade.models.heads import GradedHead, _check_grades
from imgrade.models.settings import AxesSettings

logger = logging.getLogger(__name__)

TABLE_NAME = "grade_axes.csv"
"""The grade table read from beside the data (in a data folder, or next to a data file) when
``--axes`` is not given."""

CUCUMBER9_TABLE = """\
grade,size,shape
2L,2L,straight
L,L,straight
M,M,straight
S,S,straight
2S,2S,straight
BL,L,bent
BM,M,bent
BS,S,bent
C,,C
"""
"""The built-in table, used when the grades are exactly CUCUMBER-9's (in its order)."""
CUCUMBER9_GRADES = ("2L", "L", "M", "S", "2S", "BL", "BM", "BS", "C")


@dataclass(frozen=True)
class GradeAxes:
    """Each grade's level on each axis, the grades in the data's order.

    Build it with :func:`parse_grade_axes`, :func:`read_grade_axes` or :meth:`from_dict`.

    >>> table = parse_grade_axes(CUCUMBER9_TABLE, list(CUCUMBER9_GRADES))
    >>> table.axes, table.levels[1], table.cells[-1]
    (('size', 'shape'), ('straight', 'bent', 'C'), (None, 'C'))
    """

    grades: tuple[str, ...]
    axes: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    """Per axis, its levels in order of first appearance."""
    cells: tuple[tuple[str | None, ...], ...]
    """Per grade, its level on each axis; None for "any"."""

    @property
    def width(self) -> int:
        """Head outputs: the levels of all axes together."""
        return sum(len(levels) for levels in self.levels)

    def level_index(self) -> np.ndarray:
        """(K, A) int: each grade's level index on each axis, -1 for "any".

        >>> parse_grade_axes("grade,a,b\\nx,1,p\\ny,2,\\nz,1,q", ["x", "y", "z"]).level_index().tolist()
        [[0, 0], [1, -1], [0, 1]]
        """
        return np.array(
            [
                [-1 if cell is None else levels.index(cell) for cell, levels in zip(row, self.levels)]
                for row in self.cells
            ],
            dtype=np.int64,
        ).reshape(len(self.grades), len(self.axes))

    def gather_matrix(self) -> np.ndarray:
        """(sum L_a, K) 0/1: column k picks grade k's level on every axis where it has one.

        >>> parse_grade_axes("grade,a,b\\nx,1,p\\ny,2,\\nz,1,q", ["x", "y", "z"]).gather_matrix().astype(int).tolist()
        [[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1]]
        """
        matrix = np.zeros((self.width, len(self.grades)), dtype=np.float32)
        offset = 0
        for a, levels in enumerate(self.levels):
            for k, level in enumerate(self.level_index()[:, a]):
                if level >= 0:
                    matrix[offset + level, k] = 1.0
            offset += len(levels)
        return matrix

    def to_dict(self) -> dict:
        """Plain values for a checkpoint or ONNX metadata: ``{"axes": {name: levels}, "grades": {grade: cells}}``."""
        return {
            "axes": {name: list(levels) for name, levels in zip(self.axes, self.levels)},
            "grades": {grade: list(row) for grade, row in zip(self.grades, self.cells)},
        }

    @classmethod
    def from_dict(cls, d: dict) -> GradeAxes:
        """The inverse of :meth:`to_dict`, checked as a table file is (ConfigError otherwise)."""
        axes = tuple(str(name) for name in d["axes"])
        levels = tuple(tuple(str(level) for level in d["axes"][name]) for name in axes)
        cells = tuple(tuple(None if c is None else str(c) for c in row) for row in d["grades"].values())
        table = cls(tuple(str(g) for g in d["grades"]), axes, levels, cells)
        if any(len(row) != len(axes) for row in cells) or any(
            c is not None and c not in lv for row in cells for c, lv in zip(row, levels)
        ):
            raise ConfigError("a stored grade table names levels its axes do not have: retrain")
        table.check("the stored grade table")
        return table

    @classmethod
    def single(cls, num_grades: int) -> GradeAxes:
        """One axis whose levels are the grades themselves (the head is then a plain classifier).

        >>> GradeAxes.single(3).to_dict()
        {'axes': {'grade': ['0', '1', '2']}, 'grades': {'0': ['0'], '1': ['1'], '2': ['2']}}
        """
        names = tuple(str(k) for k in range(num_grades))
        return cls(names, ("grade",), (names,), tuple((n,) for n in names))

    def check(self, source: str) -> None:
        """Every axis has two levels or more, and every two grades differ on some axis.

        Raises:
            ConfigError: naming ``source``, the axis or the two grades, and the fix.
        """
        for name, levels in zip(self.axes, self.levels):
            if len(levels) < 2:
                seen = f"one level ({levels[0]!r})" if levels else "no level (every cell empty)"
                raise ConfigError(
                    f"{source}: axis {name!r} has {seen}, so it cannot tell grades apart: "
                    "give it two levels or more, or drop the column"
                )
        for i, a in enumerate(self.cells):
            for j in range(i + 1, len(self.cells)):
                b = self.cells[j]
                if not any(x is not None and y is not None and x != y for x, y in zip(a, b)):
                    raise ConfigError(
                        f"{source}: grades {self.grades[i]!r} and {self.grades[j]!r} overlap (on every axis they "
                        "have the same level or one of them is empty = any), so a photo could be both: "
                        "give them different levels on some axis"
                    )


def parse_grade_axes(text: str, grade_names: list[str], source: str = "grade table") -> GradeAxes:
    """Parse a grade table (CSV text) for the data's grades, in the data's order.

    Args:
        text: ``grade,AXIS1,AXIS2,...`` then one row per grade; an empty cell is "any".
        grade_names: the data's grades in rank order; each needs exactly one row.
        source: how errors name the table (its file name).

    Raises:
        ConfigError: a bad header or row, a grade without a row, a row for a grade the data does not
            have, an axis with fewer than two levels, or two grades the axes cannot tell apart.

    >>> parse_grade_axes("grade,size,shape\\nbig,L,\\nsmall,S,straight\\nbent,S,bent", ["big", "small", "bent"]).levels
    (('L', 'S'), ('straight', 'bent'))
    """
    rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]
    if not rows or len(rows[0]) < 2 or rows[0][0].lower() != "grade" or not all(rows[0][1:]):
        raise ConfigError(
            f"{source}: the first line must be 'grade' and one named column per axis (e.g. grade,size,shape): fix the header"
        )
    header, body = rows[0], rows[1:]
    axes = tuple(header[1:])
    if len(set(axes)) != len(axes):
        raise ConfigError(f"{source}: the header names an axis twice ({','.join(header)}): name each axis once")
    by_grade: dict[str, list[str]] = {}
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ConfigError(
                f"{source} line {number}: {len(row)} cells but the header has {len(header)}: one cell per axis (empty = any)"
            )
        grade = row[0]
        if grade not in grade_names:
            raise ConfigError(
                f"{source} line {number}: grade {grade!r} is not one of the data's grades ({','.join(grade_names)}): "
                "fix its name or remove the row"
            )
        if grade in by_grade:
            raise ConfigError(f"{source} line {number}: grade {grade!r} has a second row: keep one row per grade")
        by_grade[grade] = row[1:]
    missing = [g for g in grade_names if g not in by_grade]
    if missing:
        raise ConfigError(
            f"{source} has no row for grade(s) {','.join(missing)}: add one row per grade of the data ({','.join(grade_names)})"
        )
    # levels in order of first appearance down the file: that order fixes the outputs' layout
    levels = tuple(tuple(dict.fromkeys(row[1 + a] for row in body if row[1 + a])) for a in range(len(axes)))
    cells = tuple(tuple(c or None for c in by_grade[g]) for g in grade_names)
    table = GradeAxes(tuple(grade_names), axes, levels, cells)
    table.check(source)
    return table


def read_grade_axes(path: str | Path, grade_names: list[str]) -> GradeAxes:
    """Read the grade table at ``path`` (see :func:`parse_grade_axes`).

    Raises:
        ConfigError: the file is missing or unreadable, or the table is bad.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grade table {path} does not exist: check the --axes path")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is not part of 'grade'
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"grade table {path} cannot be read as UTF-8 text ({type(e).__name__}): save it as a UTF-8 CSV"
        ) from None
    return parse_grade_axes(text, grade_names, source=str(path))


def find_grade_axes(axes: str | None, data_path: str | None, grade_names: list[str]) -> tuple[GradeAxes, str]:
    """The grade table of a run: ``axes``, else ``grade_axes.csv`` beside the data, else the built-in one.

    Returns:
        The table and where it came from (a path, or "built-in CUCUMBER-9").

    Raises:
        ConfigError: no table found for these grades, or a bad table.
    """
    if axes:
        return read_grade_axes(axes, grade_names), str(axes)
    if data_path:
        data = Path(data_path)
        beside = (data if data.is_dir() else data.parent) / TABLE_NAME
        if beside.is_file():
            return read_grade_axes(beside, grade_names), str(beside)
    if tuple(grade_names) == CUCUMBER9_GRADES:
        return parse_grade_axes(CUCUMBER9_TABLE, grade_names, "built-in CUCUMBER-9 table"), "built-in CUCUMBER-9"
    raise ConfigError(
        f"task axes needs a grade table for grades {','.join(grade_names)}: pass --axes FILE.csv "
        f"(header grade,AXIS1,AXIS2,... then one row per grade) or put {TABLE_NAME} beside the data"
    )


class AxesHead(GradedHead):
    """One softmax per axis of a grade table; the grade is decoded from the axes.

    Args:
        in_features: width of the backbone features.
        num_grades: K >= 2; the table must have K grades.
        architecture: "linear" (the default), "reference" or "auto" (= linear).
        class_weights: per-grade loss weights (K,), applied per sample by its true grade.
        grade_axes: the grade table; None for one axis of K levels (a plain classifier).

    Raises:
        ConfigError: fewer than 2 grades, a table for another number of grades, an unknown
            architecture or bad class weights.

    >>> head = AxesHead(4, 9, grade_axes=parse_grade_axes(CUCUMBER9_TABLE, list(CUCUMBER9_GRADES)))
    >>> outputs = torch.zeros(1, head.grade_axes.width)  # every level equally likely
    >>> [round(p, 3) for p in head.probabilities(outputs)[0].tolist()]  # 1/15 each, C 1/3 = 5/15; over 13/15
    [0.077, 0.077, 0.077, 0.077, 0.077, 0.077, 0.077, 0.077, 0.385]
    """

    name = "axes"

    Settings = AxesSettings

    @classmethod
    def create(cls, in_features, num_grades, architecture="auto", class_weights=None, settings=None, state=None):
        table = (state or {}).get("grade_axes")
        return cls(in_features, num_grades, architecture, class_weights, GradeAxes.from_dict(table) if table else None)

    @classmethod
    def initial_state(cls, settings, data_path, grade_names):
        """The grade table (``--axes``, else grade_axes.csv beside the data, else the built-in one),
        and the file it came from to record as ``model.axes``."""
        table, where = find_grade_axes(settings.axes if settings is not None else None, data_path, grade_names)
        axes = "; ".join(f"{name} {','.join(levels)}" for name, levels in zip(table.axes, table.levels))
        logger.info(f"grade table ({where}): {axes}")
        found = {"axes": str(Path(where).resolve())} if Path(where).is_file() else {}
        return {"grade_axes": table.to_dict()}, found

    def state(self) -> dict:
        """The grade table: the run is rebuilt from it, never from the CSV it was read from."""
        return {"grade_axes": self.grade_axes.to_dict()}

    def __init__(
        self,
        in_features: int,
        num_grades: int | None,
        architecture: str = "auto",
        class_weights: torch.Tensor | np.ndarray | None = None,
        grade_axes: GradeAxes | None = None,
    ) -> None:
        num_grades = _check_grades(self.name, num_grades)
        grade_axes = grade_axes or GradeAxes.single(num_grades)
        if len(grade_axes.grades) != num_grades:
            raise ConfigError(
                f"the grade table names {len(grade_axes.grades)} grades but the data has {num_grades}: "
                "give one row per grade in --axes"
            )
        self.grade_axes = grade_axes  # read by output_width during the base class's set-up
        super().__init__(in_features, num_grades, architecture, class_weights)
        sizes = [len(levels) for levels in grade_axes.levels]
        self.slices = [(sum(sizes[:a]), sum(sizes[: a + 1])) for a in range(len(sizes))]
        # Derived from the table (stored beside the weights), so not part of the state dict.
        self.register_buffer("gather", torch.from_numpy(grade_axes.gather_matrix()), persistent=False)  # (O, K)
        self.register_buffer("levels_of", torch.from_numpy(grade_axes.level_index()), persistent=False)  # (K, A)

    def output_width(self, num_grades: int) -> int:
        return self.grade_axes.width

    def init_from_targets(self, targets: np.ndarray) -> None:
        """Each axis's biases = log frequencies of its levels in the training set ("any" not counted)."""
        levels = self.grade_axes.level_index()[np.asarray(targets, dtype=np.int64)]  # (N, A)
        bias = []
        for a, (start, end) in enumerate(self.slices):
            counts = np.bincount(levels[levels[:, a] >= 0, a], minlength=end - start)
            log_prior = np.log(np.clip(counts / max(counts.sum(), 1), 1e-3, None))
            bias.append(log_prior - log_prior.mean())
        with torch.no_grad():
            self.layers[-1].bias.copy_(torch.as_tensor(np.concatenate(bias), dtype=torch.float32))

    def axis_log_probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """Log-softmax within each axis's block, concatenated: (B, sum L_a)."""
        outputs = outputs.float()
        return torch.cat([F.log_softmax(outputs[:, s:e], dim=1) for s, e in self.slices], dim=1)

    def grade_log_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Unnormalised grade log-probabilities (B, K): the sum of each grade's levels' log-probabilities."""
        return self.axis_log_probabilities(outputs) @ self.gather  # (B, K)

    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per sample, the sum over axes of the cross-entropy with the true grade's level; an "any" axis adds 0."""
        target = target.long()
        levels = self.levels_of[target]  # (B, A), -1 = any
        outputs = outputs.float()
        losses = sum(
            F.cross_entropy(outputs[:, s:e], levels[:, a], ignore_index=-1, reduction="none")  # (B,), 0 where any
            for a, (s, e) in enumerate(self.slices)
        )
        return self._weighted_mean(losses, target)

    def probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.grade_log_scores(outputs), dim=1)  # (B, K)

    def decode(self, outputs: torch.Tensor) -> torch.Tensor:
        """Expected grade index, ``sum_k k * p_k``, on the data's grade order."""
        probabilities = self.probabilities(outputs)
        grades = torch.arange(self.num_grades, dtype=probabilities.dtype, device=probabilities.device)
        return probabilities @ grades  # (B,)

    def predict_grade(self, outputs: torch.Tensor) -> torch.Tensor:
        """The most probable grade."""
        return self.grade_log_scores(outputs).argmax(dim=1)  # (B,)

    def average(self, outputs: torch.Tensor) -> torch.Tensor:
        """Outputs (M, B, O) of M models -> (B, O) whose axes' probabilities are the members' mean.

        The result is the log of the mean per-axis probabilities, so each axis's softmax of it is
        exactly that mean. The grade probabilities of the average are not the mean of the members'
        (the product over axes does not commute with the mean), but its decoded score stays close
        to the mean of the members' scores.
        """
        members = torch.stack([self.axis_log_probabilities(o) for o in outputs]).exp()  # (M, B, O)
        return members.mean(dim=0).log()  # (B, O)
