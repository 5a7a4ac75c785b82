"""Every limit of ``imgrade serve`` in one frozen dataclass, and the command-line flags made from it.

A field's default and help are the flag's (``max_upload_mb`` is ``--max-upload-mb``), so the
CLI, :func:`imgrade.serve.serve` and :func:`imgrade.serve.create_app` read one object and
write no default twice. This module imports nothing heavy: the CLI reads it to build its parser.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from typing import Any

from imgrade.core.errors import ConfigError
from imgrade.data.budget import DECODE_BUDGET_MB

MB = 1_000_000
"""Bytes in the megabyte of ``--max-upload-mb`` (decimal, as browsers and curl count)."""
KIB = 1024
"""Bytes in the kilobyte of ``--max-header-kb`` (binary, as HTTP servers count)."""
DEFAULT_QUOTA_MB = 1024.0
"""``serve --collect``'s default ``--collect-quota-mb``: the most MB the kept photos and their index take."""


def _flag(default: float | int, help_text: str) -> Any:
    """A field with ``default``, and ``help_text`` for its ``--flag`` ("{default}" in it: the default)."""
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the server: its requests' size, count and time, and its connections.

    Every wait on a client is bounded, so no client, however slow, idle or large, holds the
    server. ``Limits()`` are the defaults; a value out of range raises :class:`ConfigError`
    naming the flag.

    >>> Limits(max_files=8).max_files, Limits().max_upload_bytes
    (8, 10000000)
    """

    max_upload_mb: float = _flag(10.0, "largest request body in MB (default {default}): larger ones get 413")
    max_files: int = _flag(64, "most images in one request (default {default}): more get 400")
    max_decode_mb: float = _flag(
        DECODE_BUDGET_MB,
        "most memory one photo may take to decode, in MB, counted from its header (default {default}): "
        "more get 400; large photos decode at most one fewer than the cores at once, more get 503",
    )
    max_batch: int = _flag(
        64,
        "most images graded together across concurrent requests (default {default}; "
        "the network runs them 32 at a time on a CPU)",
    )
    batch_window_ms: float = _flag(
        5.0, "how long an image waits for other requests' images to share its forward pass (default {default} ms)"
    )
    request_timeout_s: float = _flag(
        30.0,
        "longest a request may take from its headers to its answer, upload included "
        "(default {default} s): 408 if its upload is still arriving, else 503",
    )
    headers_timeout_s: float = _flag(
        10.0,
        "longest a connection may take to send a request's headers, from connecting or "
        "from its previous answer (default {default} s, never more than "
        "--request-timeout-s): then it is closed",
    )
    max_header_kb: int = _flag(
        16, "largest request line plus headers in KiB (default {default}): 431, or 400 while incomplete"
    )
    keep_alive_s: float = _flag(
        5.0, "how long an idle kept-alive connection stays open for its next request (default {default} s)"
    )
    max_connections: int = _flag(
        1000,
        "open connections from which new requests get an immediate 503 (default {default}; "
        "idle ones count too, so keep it far above the clients you expect)",
    )

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_decode_mb", "request_timeout_s", "headers_timeout_s", "keep_alive_s"):
            if not (_is_number(getattr(self, name), Real) and getattr(self, name) > 0):
                _refuse(self, name, "a positive number")
        if not (_is_number(self.batch_window_ms, Real) and self.batch_window_ms >= 0):
            _refuse(self, "batch_window_ms", "0 or more")
        for name in ("max_files", "max_batch", "max_header_kb", "max_connections"):
            if not (_is_number(getattr(self, name), Integral) and getattr(self, name) >= 1):
                _refuse(self, name, "a whole number of at least 1")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_header_bytes(self) -> int:
        return self.max_header_kb * KIB

    @property
    def headers_wait_s(self) -> float:
        """The headers timeout in force: a request's headers come before the rest of it."""
        return min(self.headers_timeout_s, self.request_timeout_s)

    @classmethod
    def add_flags(cls, parser: argparse.ArgumentParser) -> None:
        """Add one ``--flag`` per field to ``parser`` (or an argument group), with the field's type, default and help."""
        for spec in fields(cls):
            unit = spec.name.rsplit("_", 1)[-1]
            parser.add_argument(
                _flag_name(spec.name),
                type=type(spec.default),
                default=spec.default,
                metavar=unit.upper() if unit in ("mb", "kb", "ms", "s") else "N",
                help=spec.metadata["help"].format(default=f"{spec.default:g}"),
            )

    @classmethod
    def from_flags(cls, args: argparse.Namespace) -> Limits:
        """The limits that :meth:`add_flags`'s flags parsed into ``args``."""
        return cls(**{spec.name: getattr(args, spec.name) for spec in fields(cls)})


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_number(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value)


def _refuse(limits: Limits, name: str, expected: str) -> None:
    default = getattr(Limits, name)  # the class attribute: the field's default
    raise ConfigError(f"{_flag_name(name)} must be {expected}, got {getattr(limits, name)!r}: try {default:g}")
