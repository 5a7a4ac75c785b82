"""What ``imgrade compare --recipes`` trains: a task plus config changes, e.g. ``corn+ema=0.999+tta``.

A recipe is ``TASK[+key=value][+flag]...``. A key names a field of one of the config sections
(model, train, calibrate), with dashes or underscores (``class-weight`` = ``train.class_weight``),
or ``section.key`` spelled out; a value is read as an integer, a number, true/false, or else text.
A flag alone sets a true/false field to true. ``tta`` is no config field: it switches on
test-time augmentation when the recipe's runs are scored.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, fields
from typing import Any

from imgrade.config import SECTIONS, RunConfig
from imgrade.core.errors import ConfigError
from imgrade.core.registry import task_names

EVALUATION_FLAGS = ("tta",)
"""Words that change how a recipe's runs are scored, not how they are trained."""
_SET_BY_COMPARE = {
    "train.seed": "compare gives every recipe the same seeds: set --seeds",
    "model.task": "the task is the recipe's first word",
}
"""Keys a recipe may not change, because every recipe must train on the same images and seeds."""


@dataclass(frozen=True)
class Recipe:
    """One formulation that ``compare`` trains on every fold and seed."""

    name: str
    """As written (spaces removed); names the formulation in the tables."""
    task: str
    """regression, classification, coral or corn."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Config changes, dotted: ``{"train.class_weight": "balanced"}``."""
    tta: bool = False
    """Score the runs with test-time augmentation."""

    @property
    def folder(self) -> str:
        """The run-folder name: the name without ``tta`` (test-time augmentation only changes how
        the runs are scored, so a recipe with it shares the runs of the same recipe without), and
        characters a path cannot hold become ``_``.

        >>> parse_recipe("corn+init=runs/pre+tta").folder
        'corn+init=runs_pre'
        """
        name = "+".join(part for part in self.name.split("+") if part.strip() != "tta")
        return re.sub(r"[^\w.+=-]", "_", name)

    def config(self, base: RunConfig) -> RunConfig:
        """``base`` with this recipe's task and changes; a bad value fails naming the recipe.

        >>> parse_recipe("classification+epochs=2").config(RunConfig()).train.epochs
        2
        """
        try:
            return base.with_overrides({"model.task": self.task, **self.overrides})
        except ConfigError as e:
            raise ConfigError(f"recipe {self.name!r}: {e}") from None


def parse_recipes(text: str) -> list[Recipe]:
    """A comma-separated list of recipes; a recipe written twice is trained once.

    >>> [r.name for r in parse_recipes("regression, corn+tta,regression")]
    ['regression', 'corn+tta']
    """
    recipes = [parse_recipe(part) for part in text.split(",") if part.strip()]
    if not recipes:
        raise ConfigError(f"--recipes is empty: give some of {', '.join(task_names())}, e.g. regression,corn+tta")
    return list({r.name: r for r in recipes}.values())


def parse_recipe(text: str) -> Recipe:
    """``TASK[+key=value][+flag]...`` -> a :class:`Recipe` (keys checked, values checked by :meth:`Recipe.config`).

    >>> parse_recipe("regression+head=linear+class-weight=balanced+lr=0.01")
    Recipe(name='regression+head=linear+class-weight=balanced+lr=0.01', task='regression', overrides={'model.head': 'linear', 'train.class_weight': 'balanced', 'train.lr': 0.01}, tta=False)
    >>> parse_recipe("corn+deterministic+tta").overrides, parse_recipe("corn+tta").tta
    ({'train.deterministic': True}, True)
    """
    name = "".join(text.split())
    task, *options = name.split("+")
    if task not in task_names():
        close = difflib.get_close_matches(task, task_names(), n=1, cutoff=0.0)
        raise ConfigError(
            f"recipe {name!r} starts with {task!r}, not a task: did you mean {close[0]!r}? (a recipe is TASK[+key=value]..., TASK one of {', '.join(task_names())})"
        )
    overrides: dict[str, Any] = {}
    tta = False
    for option in options:
        key, has_value, raw = option.partition("=")
        word = key.replace("-", "_")
        if word in EVALUATION_FLAGS and not has_value:
            tta = True
            continue
        dotted = _find_key(word, name)
        if not has_value:
            if _field_type(dotted) != "bool":
                raise ConfigError(
                    f"recipe {name!r}: {key!r} needs a value ({key}=...); only true/false fields and tta stand alone"
                )
            overrides[dotted] = True
        else:
            if not raw:
                raise ConfigError(f"recipe {name!r}: {key!r} has no value after '='")
            overrides[dotted] = _parse_value(raw)
    return Recipe(name, task, overrides, tta)


def _find_key(word: str, recipe: str) -> str:
    """``ema`` -> ``train.ema``: the section holding the field (or ``section.key`` as given)."""
    sections_of: dict[str, list[str]] = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            sections_of.setdefault(f.name, []).append(f"{section}.{f.name}")
    name = word.split(".", 1)[-1]
    matches = [d for d in sections_of.get(name, []) if "." not in word or d == word]
    if len(matches) > 1:
        raise ConfigError(
            f"recipe {recipe!r}: {word!r} is a field of several sections; write one of {', '.join(matches)}"
        )
    if matches:
        dotted = matches[0]
        if dotted in _SET_BY_COMPARE:
            raise ConfigError(f"recipe {recipe!r} sets {word!r}, which no recipe may change: {_SET_BY_COMPARE[dotted]}")
        if dotted.startswith("data."):
            raise ConfigError(
                f"recipe {recipe!r} sets the data field {word!r}: every recipe reads the same images, so give it as a flag of compare"
            )
        return dotted
    allowed = [
        n for n, ds in sections_of.items() if any(d not in _SET_BY_COMPARE and not d.startswith("data.") for d in ds)
    ]
    close = difflib.get_close_matches(name, allowed + list(EVALUATION_FLAGS), n=1, cutoff=0.0)
    raise ConfigError(f"recipe {recipe!r}: unknown key {word!r}; the closest key is {close[0]!r}")


def _field_type(dotted: str) -> str:
    section, key = dotted.split(".", 1)
    return next(str(f.type) for f in fields(SECTIONS[section]) if f.name == key)


def _parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.999"`` -> 0.999, ``"true"`` -> True, anything else stays text.

    >>> _parse_value("3"), _parse_value("1e-3"), _parse_value("False"), _parse_value("balanced")
    (3, 0.001, False, 'balanced')
    """
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
