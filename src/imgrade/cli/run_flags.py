"""The flags that build a run's config (train, compare, fewshot): one table, help from config/sections.py.

A flag's help is the first paragraph of the docstring under its config field and the default it
shows is the field's, so neither is written twice. The flag's dest is the config key
("train.epochs"), which ``RunConfig.with_overrides`` takes as it is.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from imgrade.config import (
    AMP_CHOICES,
    BN_STATS,
    CLASS_WEIGHTS,
    COMPILE_CHOICES,
    HEADS,
    OBJECTIVES,
    RESIZE_MODES,
    SECTIONS,
    TARGETS,
    VIEWS,
)
from imgrade.core.registry import describe_backbones, describe_tasks, head_settings, task_names


@dataclass(frozen=True)
class RunFlag:
    """One command-line flag for one config field."""

    flag: str
    key: str
    """The config field, "section.name"; also the argparse dest."""
    metavar: str | None = None
    """What the value is, in the help (``--epochs N``); None for choices or a switch."""
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] | None = None
    """The closed set of values, or a function giving it when the parser is built (the tasks)."""
    const: bool | None = None
    """A switch without a value that sets the field to this."""
    bare: str | None = None
    """With ``choices``: the value the flag means when given without one (``--compile`` is ``--compile on``)."""
    extra: Callable[[], str] | None = None
    """More help computed when the parser is built (the registered tasks and backbones)."""


RUN_FLAGS = (
    RunFlag("--data", "data.path", "PATH"),
    RunFlag("--grades", "data.grades", "NAMES"),
    RunFlag("--view", "data.view", choices=VIEWS),
    RunFlag("--image-size", "data.image_size", "PIXELS"),
    RunFlag("--resize", "data.resize", choices=RESIZE_MODES),
    RunFlag("--split", "data.split", "FRACTIONS"),
    RunFlag("--target-column", "data.target_column", "COLUMN"),
    RunFlag("--target", "data.target", choices=TARGETS),
    RunFlag("--workers", "data.workers", "N"),
    RunFlag("--cache", "data.cache", "WHERE"),
    RunFlag("--unlabeled", "data.unlabeled", "PATH"),
    RunFlag("--backbone", "model.backbone", "NAME", extra=describe_backbones),
    RunFlag("--pretrained", "model.pretrained", "WEIGHTS"),
    RunFlag("--depth", "model.depth", "N"),
    RunFlag("--task", "model.task", "TASK", choices=task_names, extra=describe_tasks),
    RunFlag("--head", "model.head", choices=HEADS),
    RunFlag("--epochs", "train.epochs", "N"),
    RunFlag("--batch-size", "train.batch_size", "N"),
    RunFlag("--lr", "train.lr", "LR"),
    RunFlag("--l2", "train.l2", "WEIGHT"),
    RunFlag("--no-augment", "train.augment", const=False),
    RunFlag("--color-jitter", "train.color_jitter", "FRACTION"),
    RunFlag("--rotate", "train.rotate", "DEGREES"),
    RunFlag("--blur", "train.blur", "SIGMA"),
    RunFlag("--class-weight", "train.class_weight", choices=CLASS_WEIGHTS),
    RunFlag("--ensemble", "train.ensemble", "K"),
    RunFlag("--teacher", "train.teacher", "MODEL"),
    RunFlag("--distill", "train.distill", const=True),
    RunFlag("--distill-weight", "train.distill_weight", "WEIGHT"),
    RunFlag("--bn-stats", "train.bn_stats", choices=BN_STATS),
    RunFlag("--seed", "train.seed", "N"),
    RunFlag("--init", "train.init", "RUN"),
    RunFlag("--freeze-backbone-epochs", "train.freeze_backbone_epochs", "N"),
    RunFlag("--ema", "train.ema", "DECAY"),
    RunFlag("--backbone-lr-scale", "train.backbone_lr_scale", "SCALE"),
    RunFlag("--device", "train.device", "DEVICE"),
    RunFlag("--deterministic", "train.deterministic", const=True),
    RunFlag("--threads", "train.threads", "N"),
    RunFlag("--amp", "train.amp", choices=AMP_CHOICES),
    RunFlag("--compile", "train.compile", choices=COMPILE_CHOICES, bare="on"),
    RunFlag("--log-to", "train.log_to", "TRACKERS"),
    RunFlag("--log-dir", "train.log_dir", "DIR"),
    RunFlag("--tracking-uri", "train.tracking_uri", "URI"),
    RunFlag("--objective", "calibrate.objective", choices=OBJECTIVES),
    RunFlag("--alpha", "calibrate.alpha", "ALPHA"),
    RunFlag("--calibration-holdout", "calibrate.holdout", "FRACTION"),
    RunFlag("--threshold-folds", "calibrate.folds", "K"),
)
SETTINGS_AFTER = "model.head"
"""The heads' own settings (``setting_flags``) follow this flag in ``--help``."""


def setting_flags() -> tuple[RunFlag, ...]:
    """One flag per registered head setting (``--sord-beta`` for ``sord_beta``), made from its
    settings dataclass: the field's ``metadata`` may give ``choices`` or a ``metavar``."""
    flags = []
    for name, entry in head_settings().items():
        found = next(f for f in fields(entry.settings_class()) if f.name == name)
        choices = found.metadata.get("choices")
        metavar = None if choices else found.metadata.get("metavar", name.upper())
        flags.append(
            RunFlag("--" + name.replace("_", "-"), f"model.{name}", metavar, tuple(choices) if choices else None)
        )
    return tuple(flags)


def run_flags() -> tuple[RunFlag, ...]:
    """Every run flag in ``--help`` order: ``RUN_FLAGS`` with the heads' settings after ``--head``."""
    at = next(i for i, f in enumerate(RUN_FLAGS) if f.key == SETTINGS_AFTER) + 1
    return (*RUN_FLAGS[:at], *setting_flags(), *RUN_FLAGS[at:])


GROUPS = {
    "data": "data",
    "model": "model",
    "train": "training",
    "calibrate": "calibration (cut points and grade sets, fitted on the validation split)",
}


@functools.cache
def _field_docs(section_cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (the string right after its annotation)."""
    body = ast.parse(textwrap.dedent(inspect.getsource(section_cls))).body[0].body
    return {
        node.target.id: inspect.cleandoc(after.value.value)
        for node, after in zip(body, body[1:])
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and isinstance(after, ast.Expr)
        and isinstance(after.value, ast.Constant)
        and isinstance(after.value.value, str)
    }


def _declaring_class(key: str) -> tuple[type, str]:
    """The dataclass that declares config field ``key`` (a section, or a head's settings), and a
    prefix for its help naming the head (``--task sord: ``)."""
    section, name = key.split(".")
    owner = head_settings().get(name) if section == "model" else None
    if owner is not None and name not in {f.name for f in fields(SECTIONS[section])}:
        return owner.settings_class(), f"--task {owner.name}: "
    return SECTIONS[section], ""


def field_help(key: str) -> str:
    """The first paragraph of the docstring under config field ``key``, on one line, no final period.

    >>> field_help("train.seed")
    'Seeds the split, the initial weights, shuffling and augmentation: same seed, same run on CPU'
    >>> field_help("model.sord_beta")
    '--task sord: Sharpness of the soft labels, > 0; larger is closer to one-hot'
    """
    declared, prefix = _declaring_class(key)
    doc = _field_docs(declared).get(key.split(".")[1])
    if doc is None:
        raise KeyError(f"config field {key} has no docstring: write one under it in {declared.__qualname__}")
    return prefix + " ".join(doc.split("\n\n")[0].split()).replace("``", "").removesuffix(".")


def field_default(key: str) -> Any:
    """The dataclass default of config field ``key``.

    >>> field_default("train.epochs"), field_default("model.loss")
    (200, 'mse')
    """
    declared, _ = _declaring_class(key)
    return next(f.default for f in fields(declared) if f.name == key.split(".")[1])


def _field_type(key: str) -> str:
    declared, _ = _declaring_class(key)
    found = next(f.type for f in fields(declared) if f.name == key.split(".")[1])
    return found if isinstance(found, str) else getattr(found, "__name__", str(found))  # annotations may be types


def format_value(value: Any) -> str:
    """A config value as a person types it on the command line.

    >>> format_value(["2L", "L"]), format_value(True), format_value(0.001), format_value(None)
    ('2L,L', 'on', '0.001', 'none')
    """
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def add_run_flags(
    parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = (), defaults: dict[str, Any] | None = None
) -> None:
    """Add the run flags but the config keys in ``skip``, grouped by config section; ``defaults``
    replaces the dataclass default shown for some keys (a recipe's own defaults)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in run_flags():
        if f.key in skip:
            continue
        section = f.key.split(".")[0]
        group = groups.get(section) or groups.setdefault(section, parser.add_argument_group(GROUPS[section]))
        text = field_help(f.key) + (f": {f.extra()}" if f.extra else "")
        default = (defaults or {}).get(f.key, field_default(f.key))
        if f.const is not None:
            text = text if f.const else f"switch off: {text[0].lower()}{text[1:]}"
        if f.bare is not None:
            text += f"; {f.flag} alone means {f.flag} {f.bare}"
        shown = f" (default: {format_value(default)})" if default is not None else ""
        text = (text + shown).replace("%", "%%")  # argparse expands %(name)s in help
        if f.const is not None:
            group.add_argument(f.flag, dest=f.key, action="store_const", const=f.const, help=text)
            continue
        choices = f.choices() if callable(f.choices) else f.choices
        value_type = {"int": int, "float": float}.get(_field_type(f.key))
        bare = {"nargs": "?", "const": f.bare} if f.bare is not None else {}
        group.add_argument(f.flag, dest=f.key, metavar=f.metavar, type=value_type, choices=choices, help=text, **bare)


def flag_of(key: str) -> str:
    """The flag that sets config field ``key``, or the key itself where no flag does.

    >>> flag_of("train.epochs"), flag_of("train.shift")
    ('--epochs', 'train.shift')
    """
    flags = {f.key: f for f in run_flags()}
    return flags[key].flag if key in flags else key
