"""``imgrade serve``: check the flags, bind the port, load the model, run uvicorn until Ctrl+C."""

from __future__ import annotations

import errno
import os
import socket
import sys
from dataclasses import asdict
from pathlib import Path

import uvicorn

from imgrade.core.errors import ConfigError
from imgrade.runtime import Grader, load_grader
from imgrade.serve.app import Limits, create_app

GRACEFUL_SHUTDOWN_S = 5
"""After Ctrl+C, how long requests in progress may take to finish."""


def serve(
    model: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    runtime: str = "auto",
    device: str = "auto",
    token: str | None = None,
    max_upload_mb: float = 10.0,
    max_files: int = 64,
    max_batch: int = 64,
    batch_window_ms: float = 5.0,
    threads: int | None = None,
) -> None:
    """Serve ``model`` over HTTP until Ctrl+C (routes: :mod:`imgrade.serve.app`).

    Every mistake a user can make is reported before anything is served: the limits first, then
    the port (bound here, so a port in use is an error and not uvicorn's exit), then the model.

    Args:
        model: run folder, ``.pt`` checkpoint or ``.onnx`` file.
        host, port: where to listen; port 0 picks a free one (printed in the banner).
        runtime, device, threads: how to run the model (see ``load_grader``).
        token: the bearer token the API requires; None: no token.
        max_upload_mb, max_files, max_batch, batch_window_ms: see :class:`imgrade.serve.app.Limits`.

    Raises:
        ConfigError: a limit out of range, an empty token, or a port that cannot be bound.
        CheckpointError: ``model`` is not a model imgrade can load.
    """
    limits = Limits(max_upload_mb, max_files, max_batch, batch_window_ms)
    with _bind(host, port) as listener:
        grader = load_grader(model, runtime=runtime, device=device, threads=threads)
        app = create_app(grader, source_name=Path(model).name or str(model), token=token, **asdict(limits))
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
        print(_banner(model, grader, host, listener.getsockname()[1], token is not None), file=sys.stderr, flush=True)
        try:
            uvicorn.Server(config).run(sockets=[listener])
        except KeyboardInterrupt:  # uvicorn raises Ctrl+C again once it has shut down gracefully
            pass
    print("imgrade: stopped", file=sys.stderr)


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, or a ConfigError that says why not and what to do."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}: try --port 8000")
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ConfigError(f"cannot resolve --host {host} ({error.strerror}): use 127.0.0.1 (this machine only) or 0.0.0.0 (all networks)") from None
    try:
        return socket.create_server(address, family=family)
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use: stop the program using it, or pick another port with --port") from None
        if error.errno == errno.EACCES:
            raise ConfigError(f"no permission to listen on port {port} (ports below 1024 need root): use --port 8000 or above") from None
        raise ConfigError(f"cannot listen on {host}:{port} ({reason}): use --host 127.0.0.1, or an address of this machine") from None


def _banner(model: str | Path, grader: Grader, host: str, port: int, auth: bool) -> str:
    """The one line printed when serving starts."""
    target = f"{len(grader.grade_names)} grades" if grader.grade_names else "continuous target"
    address = f"[{host}]" if ":" in host else host
    token = ", token required" if auth else ""
    return (f"imgrade: serving {model} ({grader.runtime}, {grader.task}, {target}{token}) on "
            f"http://{address}:{port}/  API docs: /docs  Ctrl+C stops")
