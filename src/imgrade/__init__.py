"""imgrade: grade items from photos.

    from imgrade import Grader
    grader = Grader.load("model.onnx")        # or a run folder: "runs/p1"
    print(grader.grade("photo.jpg").name)      # e.g. "L"

``Grader`` and ``Grade`` (imgrade.runtime.api) grade photos, without torch for an .onnx file;
``train``, ``evaluate`` and ``compare`` are the verbs of ``imgrade.pipeline``, which needs torch.
Every name is imported on first use, so ``import imgrade`` alone loads neither; type checkers
read the names from ``__init__.pyi``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

__all__ = ["Grade", "Grader", "compare", "evaluate", "train", "__version__"]

_LAZY = {
    "Grade": "imgrade.runtime.api",
    "Grader": "imgrade.runtime.api",
    "train": "imgrade.pipeline",
    "evaluate": "imgrade.pipeline",
    "compare": "imgrade.pipeline",
}
"""Public name -> the module that defines it."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(types.ModuleType):
    """This package, whose verbs ``train`` and ``evaluate`` share their names with subpackages.

    Importing a subpackage binds it as an attribute of its parent; here that would hide the verb
    of the same name from ``from imgrade import train``. The verbs win: reach the subpackages by
    their full names (``from imgrade.train.loop import fit``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
