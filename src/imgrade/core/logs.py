"""Logging set-up for the command line: one stderr handler on the "imgrade" logger.

Library modules log with ``logging.getLogger(__name__)`` (all under "imgrade.") and never
configure logging; ``imgrade.cli.main`` calls ``setup_logging`` once per command.
"""

from __future__ import annotations

import logging
import os
import sys

LOGGER = "imgrade"


class StderrHandler(logging.StreamHandler):
    """Writes each line to ``sys.stderr`` as it is when the line is emitted, not as it was when the
    handler was made, so a stream swapped in later (pytest's capture, a redirect) gets the lines."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ and setStream assign it; always stderr
        pass


def process_rank() -> int:
    """This process's rank under torchrun (``RANK``, else ``LOCAL_RANK``); 0 when run alone.

    >>> process_rank() >= 0
    True
    """
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def log_level(verbosity: int, rank: int = 0) -> int:
    """The level for ``-q`` (verbosity < 0), nothing (0) or ``-v`` (> 0); ranks above 0 show
    warnings and errors only, so torchrun prints each progress line once.

    >>> logging.getLevelName(log_level(0)), logging.getLevelName(log_level(1)), logging.getLevelName(log_level(-1))
    ('INFO', 'DEBUG', 'WARNING')
    >>> logging.getLevelName(log_level(1, rank=3))
    'WARNING'
    """
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    return max(level, logging.WARNING) if rank > 0 else level


def setup_logging(verbosity: int = 0) -> logging.Logger:
    """Give the "imgrade" logger one handler writing the bare message to stderr, at the level of
    ``log_level(verbosity, process_rank())`` (and uvicorn's logger the same handler, for warnings
    unless ``-v``); calling it again replaces the level, not the handler.

    Records still propagate to the root logger, so an application's or pytest's handlers see them.
    """
    level = log_level(verbosity, process_rank())
    # uvicorn (imgrade serve) logs through its own logger tree: its warnings (malformed requests,
    # a full connection limit) get the same handler, its info lines only with -v
    for name, name_level in ((LOGGER, level), ("uvicorn", max(level, logging.WARNING) if verbosity <= 0 else level)):
        named = logging.getLogger(name)
        for handler in [h for h in named.handlers if isinstance(h, StderrHandler)]:
            named.removeHandler(handler)
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        named.addHandler(handler)
        named.setLevel(name_level)
    return logging.getLogger(LOGGER)
