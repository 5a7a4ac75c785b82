"""The HTTP grading service and its web page: ``imgrade serve MODEL``.

``serve`` runs it (uvicorn, until Ctrl+C); ``create_app`` builds the ASGI app for a grader, for
tests or another ASGI server; ``Limits`` holds what one client may ask of either. Routes and
error codes: :mod:`imgrade.serve.app`.
"""

from typing import Any

from imgrade.serve.limits import Limits

__all__ = ["Limits", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the CLI reads Limits for its flags without loading FastAPI and uvicorn.
    if name == "create_app":
        from imgrade.serve.app import create_app

        return create_app
    if name == "serve":
        from imgrade.serve.server import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
