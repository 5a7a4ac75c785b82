"""Grading uploaded photos, as the routes that grade share it: decode, batch, records."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from starlette.datastructures import State

from imgrade.core.errors import DataError
from imgrade.runtime.grading import Engine
from imgrade.serve.decode_pool import PoolFull


async def grade_uploads(state: State, uploads: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """The records (``Grade.to_dict``) of the (file name, bytes) ``uploads``, in order.

    Raises:
        HTTPException: 400 for a photo that cannot be read (named), 503 when the decode pool is
            full, 500 when the model fails.
    """
    grader: Engine = state.grader
    try:
        images = await state.decode_pool.decode(uploads, grader.resize)
    except DataError as error:
        raise HTTPException(400, one_line(error)) from None
    except PoolFull as error:
        raise HTTPException(503, one_line(error), headers={"Retry-After": "1"}) from None
    try:
        outputs = await state.batcher.submit(images)
    except Exception as error:
        raise HTTPException(
            500,
            f"the model failed on these images ({type(error).__name__}: {one_line(error)}): "
            "the server log has the details; report it if it happens again",
        ) from None
    return grader.records([name for name, _ in uploads], outputs)


def one_line(error: BaseException) -> str:
    """An error's message on one line."""
    return " ".join(str(error).split())
