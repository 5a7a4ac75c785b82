"""The settings of the built-in heads, one dataclass per head that has any (no torch import here).

A head's settings are its own: registered with the head (``register_head(settings=...)``), shown
by ``--help`` as flags made from these fields (the help is the first paragraph of the docstring
under a field, the default the field's; ``metadata`` gives the flag's ``choices`` or ``metavar``,
and ``path`` names the kind of file a setting holds, which a run checks and stores resolved), and
kept in config.yaml's ``model`` section beside the shared fields. Each dataclass checks its own
values. They live apart from the heads so that the command line, which lists them, runs without
torch; a head defined elsewhere may nest its ``Settings`` in its class instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imgrade.core.errors import ConfigError

REGRESSION_LOSSES = ("mse", "huber")


@dataclass
class RegressionSettings:
    loss: str = field(default="mse", metadata={"choices": REGRESSION_LOSSES})
    """Regression loss: mse (the reference) or huber."""

    def __post_init__(self) -> None:
        if self.loss not in REGRESSION_LOSSES:
            raise ConfigError(f"model.loss {self.loss!r} is not mse or huber: set --loss")


@dataclass
class SordSettings:
    sord_beta: float = field(default=1.0, metadata={"metavar": "BETA"})
    """Sharpness of the soft labels, > 0; larger is closer to one-hot.

    SORD's soft labels: grade k gets softmax_k(-sord_beta * (k - true grade)^2) of the target.
    1.0 keeps most of the target on the true grade (58% for a middle grade of three) and gives each
    neighbour about a fifth, two grades away almost nothing: off-by-one costs little, far misses
    a lot. Larger values approach plain cross-entropy (5: 99% on the true grade)."""

    def __post_init__(self) -> None:
        if isinstance(self.sord_beta, bool) or not isinstance(self.sord_beta, int | float) or not self.sord_beta > 0:
            raise ConfigError(
                f"model.sord_beta {self.sord_beta} must be positive (1.0 is the default): set --sord-beta"
            )


@dataclass
class AxesSettings:
    axes: str | None = field(default=None, metadata={"metavar": "CSV", "path": "grade table"})
    """A CSV grade table with the header grade,AXIS1,AXIS2,...; by default grade_axes.csv beside
    the data when present, else the built-in size x shape table of CUCUMBER-9's grades.

    One row per grade, each cell the grade's level on that axis (empty = any). The table is stored
    in the run, so the file is needed only for training."""

    def __post_init__(self) -> None:
        if self.axes is not None and not isinstance(self.axes, str):
            raise ConfigError(f"model.axes {self.axes!r} is not a file name: set --axes")
