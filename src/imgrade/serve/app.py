"""The HTTP grading service: photos in (multipart upload), grades out (JSON), plus the web page.

Routes (every error is ``{"error": "<one line: what is wrong and the fix>"}``; the answers'
pydantic models, which ``/openapi.json`` describes, are in :mod:`imgrade.serve.schemas`):

- ``GET /`` the web page, ``GET /static/...`` its scripts and styles: local files, no CDN.
- ``GET /healthz`` -> ``{"status": "ok"}``; never needs the token.
- ``GET /v1/model`` -> the grader's model card, ``model`` (its file or folder name), ``limits``
  (``max_files``, ``max_upload_mb``, ``max_decode_mb``), ``auth`` (whether a token is needed) and ``model_card`` (the
  run's model_card.md as Markdown; None for a model without one).
- ``POST /v1/grade`` multipart/form-data, one part named ``files`` per image ->
  ``{"results": [record, ...]}`` in upload order (``Grade.to_dict``). 400: no ``files`` part,
  a part that is not an image file (the error names it), more than ``max_files`` files, a
  malformed body; 408: the body did not arrive within ``request_timeout_s``; 413: a body over
  ``max_upload_mb``; 415: a body that is not multipart/form-data; 431: headers over ``max_header_kb``;
  500: the model failed on these images (other requests are unaffected); 503: no answer
  within ``request_timeout_s`` (its decoding stops too), or the decode pool cannot take a photo
  now (at once, with ``Retry-After``; :mod:`imgrade.serve.decode_pool`). A photo that would take
  more than ``max_decode_mb`` to decode is a 400 naming it.
- ``GET /v1/stats`` -> forward passes, images graded, largest and mean batch size.
- With ``--collect DIR``, every photo graded is kept in DIR (:mod:`imgrade.serve.collect`);
  ``GET /v1/model`` says so (``collect``).
- With ``--label TO_LABEL.csv``, the ``/v1/label`` routes serve the photos to label and add labels
  (:mod:`imgrade.serve.label_routes`); ``GET /v1/model`` says so (``label``).
- With a token, every ``/v1/`` route needs ``Authorization: Bearer <token>`` (else 401).

Every request gets one line in the access log (:mod:`imgrade.serve.access_log`).

``/docs`` is FastAPI's Swagger UI, which loads its script from a CDN: the API docs need the
internet, the service and its page do not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from imgrade.core.errors import ConfigError
from imgrade.core.version import __version__
from imgrade.runtime.grading import Engine
from imgrade.serve.access_log import PHOTOS_GRADED, AccessLog
from imgrade.serve.batcher import Batcher
from imgrade.serve.collect import Collector
from imgrade.serve.decode_pool import DecodePool
from imgrade.serve.guards import BodyLimit, HeaderLimit, RequestTimeout, SecurityHeaders, require_token
from imgrade.serve.label_routes import label_routes
from imgrade.serve.labelling import LabelQueue
from imgrade.serve.limits import Limits
from imgrade.serve.schemas import GradeAnswer, Health, ModelInfo, Stats, error_responses
from imgrade.serve.steps import grade_uploads

STATIC_DIR = Path(__file__).with_name("static")
"""The web page: index.html (served at /) and the files it loads (served at /static/)."""

HOW_TO_SEND = "send multipart/form-data with one part named files per image (curl -F files=@photo.jpg URL)"


open_routes = APIRouter()
"""The page, its files and /healthz: open to all."""
api_routes = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], responses=error_responses(401))
"""The API: needs the token when the server has one."""


def create_app(
    grader: Engine,
    *,
    source_name: str = "model",
    token: str | None = None,
    limits: Limits = Limits(),
    static_dir: Path = STATIC_DIR,
    collector: Collector | None = None,
    labels: LabelQueue | None = None,
) -> FastAPI:
    """The service for ``grader`` as an ASGI app (run it with uvicorn, or test it with TestClient).

    Args:
        grader: what grades the images (``imgrade.runtime.load_grader``; ``serve`` passes its
            ``for_serving()``, which answers one photo sooner).
        source_name: the model's file or folder name, shown by ``GET /v1/model``.
        token: the bearer token the ``/v1/`` routes require; None: no token.
        limits: what one client may ask (:class:`imgrade.serve.limits.Limits`).
        static_dir: the web page's folder.
        collector: keeps every photo graded (``--collect``); closed when the app stops.
        labels: the photos to label in the page and where their labels go (``--label``).

    Raises:
        ConfigError: an empty token.
    """
    if token == "":
        raise ConfigError("--token is empty: pass a non-empty token, or leave --token out to serve without one")
    # the grader runs what the batcher gathers in its own passes (32 images on a CPU, where they stay in the caches)
    batcher = Batcher(grader.outputs, limits.max_batch, limits.batch_window_ms / 1000)
    decode_pool = DecodePool(limits.max_decode_mb)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            decode_pool.close()
            await batcher.stop()
            if collector is not None:
                await asyncio.to_thread(collector.close)  # writes what is pending

    app = FastAPI(
        title="imgrade",
        version=__version__,
        summary="Grade items from photos: upload images to POST /v1/grade; GET /v1/model names the grades.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.state.grader = grader
    app.state.batcher = batcher
    app.state.decode_pool = decode_pool
    app.state.limits = limits
    app.state.token = token
    app.state.collector = collector
    app.state.labels = labels
    app.state.index_html = static_dir / "index.html"
    # checked here, once: a description that does not fit ModelInfo fails at start-up, not per request
    app.state.model_card = ModelInfo.model_validate(
        {
            **grader.describe(),
            "model": source_name,
            "limits": {
                "max_files": limits.max_files,
                "max_upload_mb": limits.max_upload_mb,
                "max_decode_mb": limits.max_decode_mb,
            },
            "auth": token is not None,
            "model_card": grader.model_card,
            "collect": collector is not None,
            "label": labels is not None,
        }
    ).model_dump()
    # The last added runs first: the access log sees every answer, the timeout's clock covers the
    # rest, the size checks come before the routes.
    app.add_middleware(BodyLimit, max_bytes=limits.max_upload_bytes)
    app.add_middleware(HeaderLimit, max_bytes=limits.max_header_bytes)
    app.add_middleware(RequestTimeout, timeout_s=limits.request_timeout_s)
    app.add_middleware(AccessLog)
    app.add_middleware(SecurityHeaders, docs_paths=(app.docs_url, app.swagger_ui_oauth2_redirect_url))  # outermost
    app.add_exception_handler(StarletteHTTPException, _error_answer)
    app.include_router(open_routes)
    app.include_router(api_routes)
    if labels is not None:
        app.include_router(label_routes)  # only then: /openapi.json describes what this server serves
    app.mount("/static", StaticFiles(directory=static_dir), name="static")
    return app


_GRADE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": ["files"],
                }
            }
        },
    }
}


@open_routes.get("/", include_in_schema=False)
async def page(request: Request) -> FileResponse:
    """The web page."""
    index: Path = request.app.state.index_html
    if not index.is_file():
        raise HTTPException(
            404, f"the web page is missing ({index} not found): reinstall imgrade; the API under /v1/ works without it"
        )
    return FileResponse(index)


@open_routes.get("/healthz", response_model=Health)
async def health() -> dict[str, str]:
    """Liveness: answers as soon as the server accepts requests; never needs the token."""
    return {"status": "ok"}


@api_routes.get("/model", response_model=ModelInfo)
async def model_card(request: Request) -> dict[str, Any]:
    """The model card: grades, decision rule, input size, calibration, and this server's limits."""
    return request.app.state.model_card


@api_routes.get("/stats", response_model=Stats)
async def stats(request: Request) -> dict[str, Any]:
    """Forward passes run, images graded, and the largest and mean number of images per pass."""
    return request.app.state.batcher.stats.to_dict()


@api_routes.post(
    "/grade",
    response_model=GradeAnswer,
    responses=error_responses(400, 408, 413, 415, 431, 500, 503),
    openapi_extra=_GRADE_BODY,
)
async def grade(request: Request) -> dict[str, list[dict[str, Any]]]:
    """Grade the uploaded images: one record per part named ``files``, in upload order."""
    state = request.app.state
    _require_multipart(request)
    uploads = await _read_uploads(request, state.limits.max_files)
    records = await grade_uploads(state, uploads)
    setattr(request.state, PHOTOS_GRADED, len(uploads))
    if state.collector is not None:
        state.collector.submit(uploads, records)  # on its own thread; the answer does not wait
    return {"results": records}


async def _error_answer(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """Every HTTP error, FastAPI's and Starlette's own (404, 405) too, as ``{"error": ...}``."""
    return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)


def _require_multipart(request: Request) -> None:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        raise HTTPException(
            415, f"expected a multipart/form-data body, got {content_type or 'no Content-Type'}: {HOW_TO_SEND}"
        )


async def _read_uploads(request: Request, max_files: int) -> list[tuple[str, bytes]]:
    """The (file name, bytes) of each part named ``files``, in order.

    Raises:
        HTTPException: 400 for a malformed body, too many files, no ``files`` part, a ``files``
            part that is a text field rather than a file, or a client gone mid-upload (the answer
            goes nowhere, but the log stays free of tracebacks).
    """
    try:
        form = await request.form(max_files=max_files, max_fields=max_files)
    except ClientDisconnect:
        raise HTTPException(
            400, "the client closed the connection before the upload was complete: send it again"
        ) from None
    except (StarletteHTTPException, ValueError) as error:
        # Starlette reports multipart errors (too many files too) as 400s; up to 0.46 at least it let
        # python-multipart's parse errors (ValueErrors) through, which would be 500s
        detail = error.detail if isinstance(error, StarletteHTTPException) else error
        raise HTTPException(
            400,
            f"cannot read the upload ({str(detail).rstrip('.')}): {HOW_TO_SEND}, at most {max_files} per request",
        ) from None
    try:
        parts = form.getlist("files")
        if not parts:
            raise HTTPException(400, f"no part named files in the form: {HOW_TO_SEND}")
        uploads = []
        for number, part in enumerate(parts, start=1):
            if isinstance(part, str):
                raise HTTPException(400, f"files part number {number} is a text field, not a file: {HOW_TO_SEND}")
            uploads.append((part.filename or f"files part {number}", await part.read()))
        return uploads
    finally:
        await form.close()
