"""imgrade: grade items from photos.

    from imgrade import Grader
    grader = Grader.load("model.onnx")        # or a run folder: "runs/p1"
    print(grader.grade("photo.jpg").name)      # e.g. "L"

``Grader`` and ``Grade`` (imgrade.runtime.api) grade photos, without torch for an .onnx file;
``train``, ``evaluate`` and ``compare`` are the verbs of ``imgrade.pipeline``, which needs torch;
``suggest`` (which photos to label next) needs it only for a run, not for an .onnx file.
Every name is imported on first use, so ``import imgrade`` alone loads neither; type checkers
read the names from ``__init__.pyi``.
"""

from __future__ import annotations

import importlib
from typing import Any

from imgrade.core.version import __version__

__all__ = ["Grade", "Grader", "compare", "evaluate", "suggest", "train", "__version__"]

_LAZY = {
    "Grade": "imgrade.runtime.api",
    "Grader": "imgrade.runtime.api",
    "train": "imgrade.pipeline",
    "evaluate": "imgrade.pipeline",
    "compare": "imgrade.pipeline",
    "suggest": "imgrade.pipeline",
}
"""Public name -> the module that defines it."""


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
