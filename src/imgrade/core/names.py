"""Names instead of paths, for what leaves the machine that trained a model (model card, ONNX file)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

MODEL_CARD = "model_card.md"
"""The run folder's model card (``imgrade train`` writes it; ``evaluate`` and ``calibrate`` refresh it)."""

_ABSOLUTE = re.compile(r"(?<![\w.:/~-])(?:[A-Za-z]:\\|/)[^\s()\[\]'\",;]+")
"""An absolute POSIX or Windows path without spaces, up to a space, bracket, quote, comma or semicolon."""


def without_paths(text: str, paths: Iterable[str | Path | None] = ()) -> str:
    """``text`` with each absolute path in it replaced by its last part (the file or folder name).

    ``paths`` are replaced first, whole, so a known path with spaces in it becomes its name too.

    >>> without_paths("CUCUMBER-9 prototype 1 (folder /home/x/data/cucumber-9-python)")
    'CUCUMBER-9 prototype 1 (folder cucumber-9-python)'
    >>> without_paths("class folders /mnt/my photos/set", ["/mnt/my photos/set"])
    'class folders set'
    >>> without_paths("CSV manifest C:\\\\data\\\\labels.csv, synthetic cucumbers (seed 3)")
    'CSV manifest labels.csv, synthetic cucumbers (seed 3)'
    """
    for path in sorted({str(p) for p in paths if p}, key=len, reverse=True):
        if _is_absolute(path):
            text = text.replace(path, _last_part(path))
    return _ABSOLUTE.sub(lambda m: _last_part(m.group(0)), text)


def _is_absolute(path: str) -> bool:
    return PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute()


def _last_part(path: str) -> str:
    pure = PureWindowsPath(path) if re.match(r"[A-Za-z]:\\", path) else PurePosixPath(path)
    return pure.name or str(pure)
