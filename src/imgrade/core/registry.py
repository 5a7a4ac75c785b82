"""The one list of heads (``--task`` names): what each is, where its class lives, what it gives.

Config validation, the CLI's help, ``models.factory.build_model`` and the ONNX runtime's metadata
check all read this table, so one new head is one class plus one ``register_head`` line. The
classes are named by import path ("module:Class") and imported only when a model is built (as
timm's registry does), so this module and everything that only checks names (the config, the ONNX
runtime, which runs without torch) never import torch.

>>> head_entry("coral").probabilities
True
>>> "sord" in task_names()
True
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from imgrade.core.errors import ConfigError


@dataclass(frozen=True)
class HeadEntry:
    """One registered head."""

    name: str
    """The ``--task`` name; also the head class's ``name`` attribute."""
    target: str | type
    """The head class, or its import path "package.module:Class" (imported when first built)."""
    description: str
    """One line for ``--help``: how this head learns the grade."""
    probabilities: bool = True
    """Whether the head gives grade probabilities (and so conformal grade sets)."""
    needs_grades: bool = True
    """Whether it needs integer grades (False: it also learns a continuous target)."""
    rule: str = "thresholds passed (the head's own rule)"
    """How the head's own grade decision is made, in words (shown with predictions)."""


_HEADS: dict[str, HeadEntry] = {}


def register_head(
    name: str,
    target: str | type,
    description: str,
    *,
    probabilities: bool = True,
    needs_grades: bool = True,
    rule: str = "thresholds passed (the head's own rule)",
) -> HeadEntry:
    """Add a head under ``name`` (a new ``--task``); return its entry.

    Args:
        name: the task name, as ``--task`` takes it; the class's ``name`` attribute must match.
        target: the ``Head`` subclass, or its import path "package.module:Class".
        description: one line for ``--help``.
        probabilities: whether the head has grade probabilities.
        needs_grades: whether it needs integer grades.
        rule: its own grade decision, in words.

    Raises:
        ConfigError: ``name`` is taken, or ``target`` is a string without "module:Class".
    """
    if name in _HEADS:
        raise ConfigError(f"task {name!r} is already registered: pick another name or unregister_head({name!r}) first")
    if isinstance(target, str) and target.count(":") != 1:
        raise ConfigError(f"head target {target!r} is not 'package.module:Class'")
    entry = HeadEntry(name, target, description, probabilities, needs_grades, rule)
    _HEADS[name] = entry
    return entry


def unregister_head(name: str) -> None:
    """Remove a registered head (tests and notebooks that registered their own)."""
    _HEADS.pop(name, None)


def task_names() -> tuple[str, ...]:
    """Registered task names, in registration order."""
    return tuple(_HEADS)


def head_entry(name: str, flag: str = "--task") -> HeadEntry:
    """The entry for ``name``.

    Raises:
        ConfigError: no such task; the message suggests the closest name and names ``flag``.

    >>> head_entry("corall")
    Traceback (most recent call last):
    ...
    imgrade.core.errors.ConfigError: unknown task 'corall': did you mean 'coral'? set --task to one of regression, classification, coral, corn, axes, sord
    """
    if name not in _HEADS:
        close = difflib.get_close_matches(str(name), list(_HEADS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown task {name!r}: {hint}set {flag} to one of {', '.join(_HEADS)}")
    return _HEADS[name]


def describe_tasks() -> str:
    """``name (description), ...`` for ``--help``."""
    return "; ".join(f"{e.name} ({e.description})" for e in _HEADS.values())


register_head(
    "regression", "imgrade.models.heads:RegressionHead",
    "default, the reference: MSE on the grade number",
    probabilities=False, needs_grades=False, rule="rounding",
)
register_head(
    "classification", "imgrade.models.heads:ClassificationHead",
    "softmax over the grades, cross-entropy; blind to their order",
    rule="most probable grade",
)
register_head("coral", "imgrade.models.ordinal:CoralHead", "rank-consistent ordinal thresholds, one shared weight vector")
register_head("corn", "imgrade.models.ordinal:CornHead", "ordinal thresholds as chained conditional probabilities")
register_head(
    "axes", "imgrade.models.axes:AxesHead",
    "one softmax per axis of a grade table (e.g. size x shape, --axes), the grade's probability their product",
    rule="most probable grade",
)
register_head(
    "sord", "imgrade.models.ordinal:SordHead",
    "softmax trained on soft ordinal labels: cross-entropy against targets that fall with the squared grade distance (--sord-beta)",
    rule="most probable grade",
)
