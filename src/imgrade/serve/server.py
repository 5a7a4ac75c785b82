"""``imgrade serve``: check the flags, bind the port, load the model, run uvicorn until Ctrl+C.

Every wait on a client is bounded, so no client, however slow, idle or large, holds the server
(the limits are the fields of :class:`imgrade.serve.limits.Limits`, the guards that enforce them
are in :mod:`imgrade.serve.guards`):

- a new connection must deliver a request's headers within ``--headers-timeout-s`` (never more
  than ``--request-timeout-s``), as must a kept-alive one after each response; else it is closed;
- headers of more than ``--max-header-kb``: 400 and the connection closes (h11, while they are
  incomplete) or 431;
- the body and the answer must come within ``--request-timeout-s`` of the headers: 408 and the
  connection closes if the body is still arriving, 503 if the server is still working on it;
- a body over ``--max-upload-mb``: 413, before it is read (Content-Length) or as soon as it
  passes the limit (chunked);
- a kept-alive connection that sends nothing for ``--keep-alive-s`` is closed;
- from ``--max-connections`` open connections on, new requests get an immediate 503.

The banner, "stopped" and uvicorn's own warnings are log records (``imgrade.serve.server``,
``uvicorn.error``); each request is one line of ``imgrade.serve.access``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn

from imgrade.core.errors import ConfigError
from imgrade.runtime import Engine, load_grader
from imgrade.serve.app import create_app
from imgrade.serve.collect import Collector
from imgrade.serve.guards import HeadersTimeoutH11
from imgrade.serve.labelling import LabelQueue
from imgrade.serve.limits import DEFAULT_QUOTA_MB, Limits

logger = logging.getLogger(__name__)

GRACEFUL_SHUTDOWN_S = 5
"""After Ctrl+C, how long requests in progress may take to finish."""
BACKLOG = 2048
"""Connections the kernel queues before the server accepts them (uvicorn's default)."""


def serve(
    model: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    runtime: str = "auto",
    device: str = "auto",
    token: str | None = None,
    limits: Limits = Limits(),
    threads: int | None = None,
    tta: bool | None = None,
    collect: str | Path | None = None,
    collect_quota_mb: float = DEFAULT_QUOTA_MB,
    label: str | Path | None = None,
    labels: str | Path | None = None,
) -> None:
    """Serve ``model`` over HTTP until Ctrl+C (routes: :mod:`imgrade.serve.app`).

    Every mistake a user can make is reported before anything is served: the limits when they
    are made, then the port (bound here, so a port in use is an error and not uvicorn's exit),
    then the model. A run on a CPU is graded by ONNX Runtime, exported in memory and checked
    against PyTorch first (``Engine.for_serving``; eager PyTorch should that fail, or with
    ``runtime="torch"``).

    Args:
        model: run folder, ``.pt`` checkpoint or ``.onnx`` file.
        host, port: where to listen; port 0 picks a free one (logged in the banner).
        runtime, device, threads, tta: how to run the model (see ``load_grader``); "torch" grades
            a run with eager PyTorch, never with its in-memory export.
        token: the bearer token the API requires; None: no token.
        limits: what one client may ask (:class:`imgrade.serve.limits.Limits`).
        collect: keep every photo graded in this folder (:mod:`imgrade.serve.collect`); None: keep none.
        collect_quota_mb: the most MB the kept photos and their index take; the oldest go first.
        label: a CSV of photos to label in the web page (:mod:`imgrade.serve.labelling`); None: no labelling.
        labels: where the labels go; None: labels.csv beside ``label``.

    Raises:
        ConfigError: an empty token, a port that cannot be bound, a ``collect`` folder that cannot
            be written, a ``label`` CSV that cannot be read, or a grades.txt beside the labels
            that names other grades than the model's.
        CheckpointError: ``model`` is not a model imgrade can load.
    """
    if labels is not None and label is None:
        raise ConfigError("--labels names where labels go, but there is nothing to label: add --label TO_LABEL.csv")
    collector = Collector(collect, collect_quota_mb) if collect is not None else None
    try:
        with _bind(host, port) as listener:
            if token is None and not loopback(listener.getsockname()[0]):
                logger.warning(OPEN_TO_THE_NETWORK.format(host=host))
            loaded = load_grader(model, runtime=runtime, device=device, threads=threads, tta=tta)
            queue = LabelQueue(label, labels, loaded.grade_names) if label is not None else None
            grader = loaded if runtime == "torch" else loaded.for_serving(threads=threads)
            app = create_app(
                grader,
                source_name=Path(model).name or str(model),
                token=token,
                limits=limits,
                collector=collector,
                labels=queue,
            )
            config = uvicorn_config(app, limits)
            runtime_used = grader.runtime if grader is loaded else f"{grader.runtime}, exported in memory"
            logger.info(_banner(model, grader, runtime_used, host, listener.getsockname()[1], token is not None))
            for line in _pool_lines(collector, queue):
                logger.info(line)
            try:
                uvicorn.Server(config).run(sockets=[listener])
            except KeyboardInterrupt:  # uvicorn raises Ctrl+C again once it has shut down gracefully
                pass
    finally:
        if collector is not None:
            collector.close()  # releases the folder when start-up failed; nothing to do after the app's own close
    logger.info("stopped")


def _pool_lines(collector: Collector | None, queue: LabelQueue | None) -> list[str]:
    """The lines logged after the banner: what is collected, what is labelled."""
    lines = []
    if collector is not None:
        lines.append(
            f"collecting every photo graded into {collector.folder} ({len(collector.photos)} there now, "
            f"{collector.pool_bytes / 1e6:.1f} of {collector.quota_bytes / 1e6:g} MB; the oldest go first)"
        )
    if queue is not None:
        state = queue.state()
        lines.append(
            f"labelling {queue.to_label} in the web page: {state['labelled']} of {state['total']} labelled, "
            f"labels go to {queue.labels}"
        )
    return lines


OPEN_TO_THE_NETWORK = (
    "warning: serving on {host} without a token: anyone on the network who can reach this machine can "
    "use the service; require one with IMGRADE_TOKEN=SECRET imgrade serve ... (or --token SECRET), "
    "or serve on --host 127.0.0.1"
)
"""The warning ``serve`` logs when it listens beyond this machine and needs no token."""


def loopback(address: str) -> bool:
    """Whether a listening socket's address (``socket.getsockname()[0]``) only takes connections
    from this machine: 127.0.0.0/8 and ::1 (also as ::ffff:127.x.x.x); 0.0.0.0, :: and a LAN
    address take them from the network.

    >>> [loopback(a) for a in ("127.0.0.1", "127.4.5.6", "::1", "::ffff:127.0.0.1")]
    [True, True, True, True]
    >>> [loopback(a) for a in ("0.0.0.0", "::", "192.168.1.20", "fe80::1%eth0")]
    [False, False, False, False]
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # not an address: assume the network can reach it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def uvicorn_config(app: Any, limits: Limits, **options: Any) -> uvicorn.Config:
    """uvicorn's settings for ``app``, with every limit of the module docstring.

    Args:
        app: the ASGI app (``create_app``), built with the same ``limits``.
        limits: the connection limits uvicorn enforces (headers timeout and size, keep-alive,
            connections).
        options: other ``uvicorn.Config`` arguments, overriding these.
    """
    settings: dict[str, Any] = {
        # uvicorn's records go to the handler the program set up (none of uvicorn's own), at
        # warning and above; requests are logged by imgrade.serve.access_log instead.
        "log_config": None,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        # h11 always (not httptools, were it installed): HeadersTimeoutH11 extends it.
        "http": partial(HeadersTimeoutH11, headers_timeout_s=limits.headers_wait_s),
        "ws": "none",  # no WebSocket routes: refuse upgrades rather than keep a second protocol open
        "h11_max_incomplete_event_size": limits.max_header_bytes,
        "timeout_keep_alive": limits.keep_alive_s,
        # uvicorn counts idle connections too, so this sits far above honest load: a flood of a
        # few hundred idle ones (closed within the headers timeout) must not turn good clients away.
        "limit_concurrency": limits.max_connections,
        "backlog": BACKLOG,
    }
    return uvicorn.Config(app, **{**settings, **options})


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, or a ConfigError that says why not and what to do."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}: try --port 8000")
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ConfigError(
            f"cannot resolve --host {host} ({error.strerror}): use 127.0.0.1 (this machine only) or 0.0.0.0 (all networks)"
        ) from None
    try:
        return socket.create_server(address, family=family, backlog=BACKLOG)
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        if error.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use: stop the program using it, or pick another port with --port"
            ) from None
        if error.errno == errno.EACCES:
            raise ConfigError(
                f"no permission to listen on port {port} (ports below 1024 need root): use --port 8000 or above"
            ) from None
        raise ConfigError(
            f"cannot listen on {host}:{port} ({reason}): use --host 127.0.0.1, or an address of this machine"
        ) from None


def _banner(model: str | Path, grader: Engine, runtime: str, host: str, port: int, auth: bool) -> str:
    """The one line logged when serving starts; ``runtime`` says what grades (``"onnx"``, ...)."""
    target = f"{len(grader.grade_names)} grades" if grader.grade_names else "continuous target"
    address = f"[{host}]" if ":" in host else host
    token = ", token required" if auth else ""
    return (
        f"serving {model} ({runtime}, {grader.task}, {target}{token}) on "
        f"http://{address}:{port}/  API docs: /docs  Ctrl+C stops"
    )
