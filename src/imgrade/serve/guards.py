"""What stands between a request and the model: the body-size limit and the bearer token."""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MB = 1_000_000
"""Bytes in the megabyte of ``--max-upload-mb`` (decimal, as browsers and curl count)."""


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once a streamed body passes the limit; turned into a 413."""


class BodyLimit:
    """Pure ASGI middleware: answer 413 to any request body over ``max_bytes``.

    A declared Content-Length over the limit is refused before a byte of the body is read; a
    body without one (chunked) is counted as it streams in and refused as soon as it passes the
    limit, so an upload never costs more than ``max_bytes`` of memory or disk.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(f"the request body is {declared:,} bytes", scope, receive, send)
            return
        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def watching_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _BodyTooLarge:
            if response_started:
                raise
            await self._refuse(f"the request body reached {received:,} bytes", scope, receive, send)

    async def _refuse(self, seen: str, scope: Scope, receive: Receive, send: Send) -> None:
        limit_mb = self.max_bytes / MB
        detail = (
            f"{seen}, over the server's {limit_mb:g} MB limit: send fewer or smaller images per "
            "request, or start the server with a larger --max-upload-mb"
        )
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses malformed lengths before we see them
    return None


_bearer = HTTPBearer(auto_error=False, description="The token the server was started with (--token or $IMGRADE_TOKEN).")


def require_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """FastAPI dependency: 401 unless the request carries ``Authorization: Bearer <token>``.

    The server's token is ``request.app.state.token`` (None: no token needed). The comparison
    takes the same time whatever the guess, so the token cannot be found a character at a time.
    """
    expected: str | None = request.app.state.token
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail=("missing or wrong token: send the header 'Authorization: Bearer TOKEN' with the "
                    "token the server was started with (--token or $IMGRADE_TOKEN)"),
            headers={"WWW-Authenticate": "Bearer"},
        )
