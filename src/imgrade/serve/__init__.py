"""The HTTP grading service and its web page: ``imgrade serve MODEL``.

``serve`` runs it (uvicorn, until Ctrl+C); ``create_app`` builds the ASGI app for a grader, for
tests or another ASGI server. Routes and error codes: :mod:`imgrade.serve.app`.
"""

from imgrade.serve.app import create_app
from imgrade.serve.server import serve

__all__ = ["create_app", "serve"]
