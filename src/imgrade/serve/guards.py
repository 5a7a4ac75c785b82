"""What stands between a client and the model: deadlines, size limits and the bearer token.

Each guard bounds one thing a client controls, so that no client, however slow or large, can
hold the server's time or memory for longer than a limit the operator set:

- :class:`HeadersTimeoutH11`: how long a connection may take to send a request's headers.
- :class:`RequestTimeout`: how long a request may take from its headers to its response
  (reading the body included).
- :class:`HeaderLimit`, :class:`BodyLimit`: how many bytes a request's headers and body may have.
- :func:`require_token`: who may use the API.
- :class:`SecurityHeaders`: what a browser may do with the answers (sniff types, frame the page,
  run scripts from elsewhere).
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from imgrade.serve.limits import MB


class HeadersTimeoutH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11), plus a deadline for each request's headers.

    uvicorn closes a keep-alive connection after ``timeout_keep_alive`` seconds without a byte,
    but restarts that clock on every byte, and sets no clock at all on a new connection. So a
    client that connects and sends nothing, or sends its headers one byte a second (slowloris),
    would hold its connection for ever. Here a connection has ``headers_timeout_s`` from opening,
    or from the end of its previous response, to deliver a complete request line and headers,
    whatever it trickles in meanwhile; then it is closed without an answer (nginx's
    ``client_header_timeout`` does the same). Once the headers are in, :class:`RequestTimeout`
    takes over. Real clients send their headers in one packet, milliseconds after connecting.

    Pass it to uvicorn as ``http=functools.partial(HeadersTimeoutH11, headers_timeout_s=10)``.
    """

    def __init__(self, *args: Any, headers_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.headers_timeout_s = headers_timeout_s
        self._headers_deadline: asyncio.TimerHandle | None = None
        self._awaited_after: object = None  # the request/response cycle before the awaited request

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._headers_deadline is not None and self.cycle is not self._awaited_after:
            self._stop_waiting()  # uvicorn started a new cycle: the request's headers are complete

    def on_response_complete(self) -> None:
        finished = self.cycle
        super().on_response_complete()  # may start a request pipelined behind this one
        if not self.transport.is_closing() and self.cycle is finished:
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._stop_waiting()
        self._awaited_after = self.cycle
        self._headers_deadline = self.loop.call_later(self.headers_timeout_s, self._headers_too_late)

    def _stop_waiting(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _headers_too_late(self) -> None:
        self._headers_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class RequestTimeout:
    """Pure ASGI middleware: a request has ``timeout_s`` seconds from its headers to its response.

    The clock starts when the HTTP server hands the request over (its headers are complete) and
    covers reading the body, so an upload trickled in a byte at a time is cut off, then decoding
    and the wait for the model. When it runs out, the request is cancelled and answered:

    - 408, with ``Connection: close``, if the server was waiting for the body: the client is too
      slow, and the connection is not worth keeping (RFC 9110 section 15.5.9);
    - 503 if the server was still working on it: it is too busy, the client may try again.

    The clock stops once the response starts: responses are small JSON or the page's files,
    which the socket's buffers take whole, so a client that does not read them holds nothing.
    """

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reading = False  # inside receive(): waiting for the client
        received = 0
        response_started = False

        async def timed_receive() -> Message:
            nonlocal reading, received
            reading = True
            message = await receive()  # the deadline cancels it here, leaving reading True
            reading = False
            received += len(message.get("body", b""))
            return message

        async def timed_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start" and not deadline.expired():
                response_started = True
                deadline.reschedule(None)
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_s) as deadline:
                await self.app(scope, timed_receive, timed_send)
        except TimeoutError:
            if not deadline.expired() or response_started:
                raise  # the app's own TimeoutError; or too late for another response (uvicorn closes)
            fix = f"or start the server with a larger --request-timeout-s (now {self.timeout_s:g})"
            if reading:
                detail = (
                    f"the request body did not arrive within {self.timeout_s:g} s ({received:,} bytes came): "
                    f"send it again on a faster connection, send fewer or smaller images, {fix}"
                )
                response = JSONResponse({"error": detail}, status_code=408, headers={"Connection": "close"})
            else:
                detail = (
                    f"the server could not answer within {self.timeout_s:g} s, it is busy: try again in a moment, {fix}"
                )
                response = JSONResponse({"error": detail}, status_code=503)
            await response(scope, receive, send)


class HeaderLimit:
    """Pure ASGI middleware: 431 for request headers over ``max_bytes``.

    h11 refuses headers past its ``max_incomplete_event_size`` only while they are incomplete:
    a header block that arrives whole in one read of the socket (up to 256 KiB with asyncio)
    passes it. This counts the parsed request line and headers, so the limit holds however
    they arrive.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b""))
            size += sum(len(name) + len(value) + 4 for name, value in scope["headers"])  # 4: ": " and CRLF
            if size > self.max_bytes:
                detail = (
                    f"the request headers are {size:,} bytes, over the server's {self.max_bytes:,}: "
                    "send fewer or shorter headers (cookies, say)"
                )
                await JSONResponse({"error": detail}, status_code=431)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once a streamed body passes the limit; turned into a 413."""


class BodyLimit:
    """Pure ASGI middleware: answer 413 to any request body over ``max_bytes``.

    A declared Content-Length over the limit is refused before a byte of the body is read; a
    body without one (chunked) is counted as it streams in and refused as soon as it passes the
    limit, so an upload never costs more than ``max_bytes`` of memory or disk. The connection
    stays open: the server reads and drops the rest of the body (so the client, still sending,
    gets to read the 413), and :class:`HeadersTimeoutH11` closes it if that takes too long.
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
        await JSONResponse({"error": detail}, status_code=413)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses malformed lengths before we see them
    return None


PAGE_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",  # static/app.js and card.js; the page has no inline script or style
        "style-src 'self'",
        "img-src 'self' blob: data:",  # blob: the uploaded photos' thumbnails; data: the empty favicon
        "connect-src 'self'",  # fetch() of /v1/ only
        "base-uri 'none'",
        "form-action 'none'",  # the token form is handled by app.js, never submitted
        "frame-ancestors 'none'",
    ]
)
"""The Content-Security-Policy of every answer: the page runs its own files and nothing else."""

EVERY_ANSWER = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Pure ASGI middleware: every answer tells the browser not to guess content types (``nosniff``),
    never to show it in a frame (``frame-ancestors 'none'``, and ``X-Frame-Options: DENY`` for old
    browsers), to send no Referer, and (:data:`PAGE_POLICY`) to run only the page's own scripts,
    styles and images and talk only to this service. So an uploaded file name or a model card can
    never run as script, and another site cannot frame the page to trick a click.

    ``docs_paths`` (FastAPI's Swagger UI, which loads its script from a CDN and starts it inline)
    get ``frame-ancestors 'none'`` as their whole policy. A header the route set itself is kept.
    Added last in ``create_app``, so the guards' own answers (408, 413, 431, 503) get the headers too;
    what the HTTP server answers without the app (a malformed request's 400, the connection limit's
    503) and Starlette's 500 for an exception no route caught do not.
    """

    def __init__(self, app: ASGIApp, docs_paths: tuple[str | None, ...] = ("/docs", "/docs/oauth2-redirect")) -> None:
        self.app = app
        self.docs_paths = {path for path in docs_paths if path}
        self.page_headers = [*EVERY_ANSWER, (b"content-security-policy", PAGE_POLICY.encode())]
        self.docs_headers = [*EVERY_ANSWER, (b"content-security-policy", b"frame-ancestors 'none'")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.docs_headers if scope["path"] in self.docs_paths else self.page_headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


_bearer = HTTPBearer(auto_error=False, description="The token the server was started with (--token or $IMGRADE_TOKEN).")


def require_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """FastAPI dependency: 401 unless the request carries ``Authorization: Bearer <token>``.

    The server's token is ``request.app.state.token`` (None: no token needed). The comparison
    takes the same time whatever the guess, so the token cannot be found a character at a time;
    neither the token nor the guess is ever logged or echoed.
    """
    expected: str | None = request.app.state.token
    if expected is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=401,
            detail=(
                "missing or wrong token: send the header 'Authorization: Bearer TOKEN' with the "
                "token the server was started with (--token or $IMGRADE_TOKEN)"
            ),
            headers={"WWW-Authenticate": "Bearer"},
        )
