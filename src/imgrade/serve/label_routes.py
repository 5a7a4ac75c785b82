"""The labelling routes of ``imgrade serve --label TO_LABEL.csv`` (:mod:`imgrade.serve.labelling`).

Each needs the token when the server has one; each error is ``{"error": "<one line>"}``:

- ``GET /v1/label[?start=K]`` -> progress (``labelled`` of ``total``), the grades, and ``next``:
  the first photo from number K on (then from the top) that LABELS.csv does not hold yet, or null.
- ``GET /v1/label/photos/{index}`` -> that photo's file, by its number in TO_LABEL.csv (from 0):
  only the files TO_LABEL.csv lists are ever served, and the client never names a path. 404 for
  a number outside the list or a missing file, 415 for a file that is not an image.
- ``GET /v1/label/photos/{index}/grade`` -> the model's grade record for it, as a hint.
- ``POST /v1/label`` with the JSON body ``{"index": 3, "grade": "M"}`` -> adds ``path,M`` to
  LABELS.csv and answers the new progress, with ``next`` the first photo without a label after
  this one. 400 for a grade the model does not have, 409 for a photo labelled already.
- ``POST /v1/label/undo`` with the JSON body ``{}`` -> removes the last label this server added.

The two POSTs take only ``application/json`` (415 otherwise), which a page on another site cannot
send without the browser asking this server first (and it never says yes).
Without ``--label`` every one of them is a 404 that says how to turn labelling on.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response

from imgrade.core.errors import ConfigError, DataError, OutputError
from imgrade.serve.guards import require_token
from imgrade.serve.labelling import LabelledAlready, LabelQueue, NotAnImage, PhotoNotFound
from imgrade.serve.schemas import GradeResult, LabelState, error_responses
from imgrade.serve.steps import grade_uploads, one_line

label_routes = APIRouter(prefix="/v1/label", dependencies=[Depends(require_token)], responses=error_responses(401, 404))
"""The labelling view's API: needs the token when the server has one."""

MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".bmp": "image/bmp",
    ".gif": "image/gif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".webp": "image/webp",
}


@label_routes.get("", response_model=LabelState)
async def label_state(request: Request, start: str = "0") -> dict[str, Any]:
    """How many photos are labelled, and the next one to label."""
    return _queue(request).state(_number(start, "start"))


@label_routes.get("/photos/{index}", responses={200: {"content": {"image/png": {}}}, **error_responses(415)})
async def label_photo(request: Request, index: str) -> Response:
    """The photo at ``index`` in TO_LABEL.csv: its file's bytes."""
    queue = _queue(request)
    number = _number(index, "the photo number")
    data = await _run(queue.read_photo, number)
    media_type = MEDIA_TYPES[queue.photo(number).file.suffix.lower()]
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-store"})


@label_routes.get("/photos/{index}/grade", response_model=GradeResult, responses=error_responses(400, 415, 500, 503))
async def label_hint(request: Request, index: str) -> dict[str, Any]:
    """The model's grade for the photo at ``index``: a hint for the person labelling it."""
    queue = _queue(request)
    number = _number(index, "the photo number")
    data = await _run(queue.read_photo, number)
    (record,) = await grade_uploads(request.app.state, [(queue.photo(number).written, data)])
    return record


@label_routes.post("", response_model=LabelState, responses=error_responses(400, 409, 415, 503))
async def add_label(request: Request) -> dict[str, Any]:
    """Label one photo: ``{"index": 3, "grade": "M"}``."""
    queue = _queue(request)
    body = await _json_body(request)
    index, grade = body.get("index"), body.get("grade")
    if not isinstance(index, int) or isinstance(index, bool) or not isinstance(grade, str):
        raise HTTPException(
            400, 'send {"index": PHOTO NUMBER, "grade": "GRADE NAME"}: index a whole number, grade a string'
        )
    return await _run(queue.add, index, grade)


@label_routes.post("/undo", response_model=LabelState, responses=error_responses(400, 415, 503))
async def undo_label(request: Request) -> dict[str, Any]:
    """Remove the last label this server added."""
    queue = _queue(request)
    await _json_body(request)
    return await _run(queue.undo)


def _queue(request: Request) -> LabelQueue:
    queue: LabelQueue | None = request.app.state.labels
    if queue is None:
        raise HTTPException(404, "labelling is off: start the server with --label TO_LABEL.csv to label photos")
    return queue


def _number(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise HTTPException(404 if what != "start" else 400, f"{what} must be a whole number from 0, got {text[:40]!r}")
    return int(text)


async def _json_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise HTTPException(415, f"expected an application/json body, got {content_type[:60] or 'no Content-Type'}")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "the body is not valid JSON: send a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body is not a JSON object: send a JSON object")
    return body


async def _run(function: Any, *args: Any) -> Any:
    """``function(*args)`` on a thread (it reads or writes files), its errors as HTTP answers."""
    try:
        return await asyncio.to_thread(function, *args)
    except DataError as error:
        status = {LabelledAlready: 409, PhotoNotFound: 404, NotAnImage: 415}.get(type(error), 400)
        raise HTTPException(status, one_line(error)) from None
    except (ConfigError, OutputError) as error:  # LABELS.csv cannot be read or written: it is unchanged
        raise HTTPException(503, one_line(error)) from None
