"""The access log: one line per request, ``POST /v1/grade 200 12.3 ms 4 photos``.

Lines go to the ``imgrade.serve.access`` logger at INFO, each record also carrying ``method``,
``path``, ``status``, ``latency_ms`` and ``photos`` as attributes. The path is logged without
its query string and no header is logged, so a token never reaches the log.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("imgrade.serve.access")

PHOTOS_GRADED = "photos_graded"
"""The ``request.state`` attribute in which a route leaves how many photos it graded (else 0)."""
MAX_PATH_CHARS = 200
"""Longer paths are cut in the log: one line per request, however long its path."""


class AccessLog:
    """Pure ASGI middleware, the outermost one: logs every request once its answer is sent.

    Wrapping every guard, it logs their answers too (401, 404, 408, 413, 431, 503...). The
    latency runs from the request's headers to the last byte of the answer's body. A request
    whose handler raised before answering is logged as the 500 the server sends for it; one
    that ends without any answer (the server stopping) with status ``-``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        end: float | None = None
        status: int | None = None
        state = scope.setdefault("state", {})  # request.state: the route writes PHOTOS_GRADED here

        async def timed_send(message: Message) -> None:
            nonlocal status, end
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                end = time.perf_counter()

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            if status is None:
                status = 500  # the server's answer to an exception before the response started
            raise
        finally:
            latency_ms = ((end or time.perf_counter()) - start) * 1000
            path = _printable_path(scope)
            photos = int(state.get(PHOTOS_GRADED, 0))
            logger.info(
                "%s %s %s %.1f ms %d photos",
                scope["method"],
                path,
                "-" if status is None else status,
                latency_ms,
                photos,
                extra={
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "latency_ms": latency_ms,
                    "photos": photos,
                },
            )


def _printable_path(scope: Scope) -> str:
    """The path as the client sent it (percent-encoded, so one line), cut to ``MAX_PATH_CHARS``."""
    raw = scope.get("raw_path")
    path = raw.decode("ascii", "backslashreplace") if raw else scope["path"].encode("unicode_escape").decode("ascii")
    return path if len(path) <= MAX_PATH_CHARS else path[:MAX_PATH_CHARS] + "..."
