"""Abuse test of `imgrade serve`: good clients keep grading while bad clients attack the server.

Usage:
    python benchmarks/serve_abuse.py [MODEL] [--seconds 60] [--good-clients 4] [--bad-clients 8] [--flood 200]
    python benchmarks/serve_abuse.py [MODEL] --bombs [--seconds 60] [--attackers 4] [--good-clients 4]

MODEL is a run folder, .pt or .onnx file; without one, the reference network is trained for
1 epoch on 60 synthetic cucumbers in a temporary folder. The server runs as a real subprocess
(`python -m imgrade serve MODEL --port FREE --request-timeout-s 3 --max-upload-mb 1`, with a
token in $IMGRADE_TOKEN) on loopback. For --seconds, good clients (httpx) upload one PNG in a
loop and must each time get 200 and the grade the server gave that PNG before the abuse, while
bad clients on raw sockets send every kind of request in BAD_REQUESTS, and a flood of idle
connections is opened again and again. Prints how each kind of bad request was answered, then
the good requests sent, failed and their p50/p99 latency during the abuse.

Exits 1 if a good request failed, a bad one got an answer it should not (a 5xx, say) or none in
time, an idle connection stayed open, or the server's log holds a traceback or the token.

With ``--bombs``, attackers upload decoding bombs instead (a server with the default limits),
then one request that cannot finish in time checks that its 503 stops the work: see
serve_bombs.py, which runs it; exits 1 if a goal of its report FAILs.

From Python (tests/e2e/test_serve_hardening.py, benchmarks/reliability.py): ``run(model)``
starts the server, abuses it and returns the figures as a dict; ``abuse(target, reference)``
does the abusing part against a server already running.
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import select
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import encode_png, free_port, stop, timed_grade, wait_until_healthy  # noqa: E402  (the load benchmark beside this one)

SLACK_S = 5.0
"""How much later than the server's own timeouts a bad client may be answered (a busy CPU)."""
TRICKLE_S = 0.5
"""A slow client sends one byte every TRICKLE_S seconds."""
SCORE_TOLERANCE = 1e-4
"""Scores from forward passes over different batches differ in the last bits."""


@dataclass(frozen=True)
class Target:
    """A running server and what the clients need to know about it."""

    host: str
    port: int
    token: str
    request_timeout_s: float
    max_upload_bytes: int
    png: bytes
    """The good clients' image; bad clients use it where they need a valid one."""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def answer_within_s(self) -> float:
        """The longest any client may wait: the headers timeout plus the request timeout, plus slack."""
        return 2 * self.request_timeout_s + SLACK_S


# ----------------------------------------------------------------------------- raw-socket clients


def _connect(target: Target) -> socket.socket:
    sock = socket.create_connection((target.host, target.port), timeout=target.answer_within_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _head(
    target: Target, content_type: str | None, length: int | None, *, auth: str | None = "good", extra: bytes = b""
) -> bytes:
    """A POST /v1/grade request line and headers; ``auth``: "good", "wrong" or None (no header)."""
    lines = [b"POST /v1/grade HTTP/1.1", f"Host: {target.host}:{target.port}".encode()]
    if auth is not None:
        token = target.token if auth == "good" else "not-" + target.token
        lines.append(f"Authorization: Bearer {token}".encode())
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}".encode())
    if length is not None:
        lines.append(f"Content-Length: {length}".encode())
    return b"\r\n".join(lines) + b"\r\n" + extra + b"\r\n"


def _multipart(files: list[tuple[bytes, bytes]], boundary: str = "imgrade-abuse") -> tuple[bytes, str]:
    """A multipart/form-data body with one ``files`` part per (raw file name, data); its Content-Type."""
    body = b"".join(
        b"--" + boundary.encode() + b"\r\n"
        b'Content-Disposition: form-data; name="files"; filename="' + name + b'"\r\n'
        b"Content-Type: image/png\r\n\r\n" + data + b"\r\n"
        for name, data in files
    )
    return body + b"--" + boundary.encode() + b"--\r\n", f"multipart/form-data; boundary={boundary}"


def _answer(sock: socket.socket, deadline: float) -> str:
    """The status code of the server's answer ("400"), "closed" if it closed the connection without
    one, or "no answer" if neither happened by ``deadline``."""
    received = b""
    while b"\r\n" not in received:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            chunk = sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            break
        except TimeoutError:
            return "no answer"
        if not chunk:
            break
        received += chunk
    if received.startswith(b"HTTP/1.1 ") and len(received) >= 12:
        return received[9:12].decode("ascii", "replace")
    return "closed" if not received else f"garbage {received[:20]!r}"


def _send_and_answer(target: Target, data: bytes, *, half_close: bool = False) -> str:
    """Send ``data`` (as far as the server lets us), optionally half-close, and read the answer."""
    deadline = time.monotonic() + target.answer_within_s
    with _connect(target) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server answered and closed before taking it all: read what it said
        return _answer(sock, deadline)


def _trickle(target: Target, head: bytes, drip: bytes) -> str:
    """Send ``head`` at once, then ``drip`` one byte every TRICKLE_S, until the server answers or closes."""
    deadline = time.monotonic() + target.answer_within_s
    with _connect(target) as sock:
        sock.sendall(head)
        for byte in itertools.cycle(drip):
            readable, _, _ = select.select([sock], [], [], TRICKLE_S)
            if readable or time.monotonic() > deadline:
                return _answer(sock, deadline)
            try:
                sock.sendall(bytes([byte]))
            except (ConnectionResetError, BrokenPipeError):
                return _answer(sock, deadline)
    raise AssertionError("unreachable: itertools.cycle never ends")


def slow_headers(target: Target) -> str:
    """Slowloris: the request line, then one header a byte at a time, never finished."""
    return _trickle(target, f"GET /healthz HTTP/1.1\r\nHost: {target.host}\r\n".encode(), b"X-Slow: " + b"z" * 1000)


def slow_body(target: Target) -> str:
    """Complete headers announcing 100 kB of upload, then the body a byte at a time."""
    body, content_type = _multipart([(b"slow.png", target.png)])
    return _trickle(target, _head(target, content_type, 100_000), body)


def truncated_upload(target: Target) -> str:
    """A Content-Length larger than what is sent, then the client stops sending (half-close)."""
    body, content_type = _multipart([(b"cut.png", target.png)])
    return _send_and_answer(target, _head(target, content_type, len(body) + 5000) + body, half_close=True)


def bad_boundary(target: Target) -> str:
    """A multipart body whose parts use another boundary than the header's."""
    body, _ = _multipart([(b"a.png", target.png)], boundary="the-real-one")
    return _send_and_answer(target, _head(target, "multipart/form-data; boundary=another", len(body)) + body)


def no_boundary(target: Target) -> str:
    """multipart/form-data without its boundary parameter."""
    body, _ = _multipart([(b"a.png", target.png)])
    return _send_and_answer(target, _head(target, "multipart/form-data", len(body)) + body)


def _wrong_type(content_type: str, body: bytes) -> Callable[[Target], str]:
    def send(target: Target) -> str:
        return _send_and_answer(target, _head(target, content_type, len(body)) + body)

    send.__doc__ = f"A {content_type} body instead of multipart/form-data."
    return send


def huge_content_length(target: Target) -> str:
    """Headers announcing a petabyte of upload; nothing after them."""
    return _send_and_answer(target, _head(target, "multipart/form-data; boundary=b", 10**15))


def chunked_over_limit(target: Target) -> str:
    """A chunked upload (no Content-Length) of one well-formed part 64 kB over the server's limit."""
    body, content_type = _multipart([(b"big.png", os.urandom(target.max_upload_bytes + 64 * 1024))])
    step = 64 * 1024
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + step]), body[i : i + step]) for i in range(0, len(body), step)
    )
    head = _head(target, content_type, None, extra=b"Transfer-Encoding: chunked\r\n")
    return _send_and_answer(target, head + chunks + b"0\r\n\r\n")


def garbage_request_line(target: Target) -> str:
    """Bytes that are not HTTP (a TLS hello's first bytes, then noise)."""
    return _send_and_answer(target, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 NOT HTTP\r\n\r\n")


def oversized_headers(target: Target) -> str:
    """64 kB of headers, four times what the server accepts (400 if h11 sees them incomplete, else 431)."""
    return _send_and_answer(target, _head(target, None, 0, extra=b"X-Padding: " + b"p" * 64_000 + b"\r\n"))


def non_utf8_file_name(target: Target) -> str:
    """A valid PNG whose file name is bytes that are not UTF-8 (graded: 200, the name decoded as Latin-1)."""
    body, content_type = _multipart([(b"\xff\xfe\xc3(cucumber.png", target.png)])
    return _send_and_answer(target, _head(target, content_type, len(body)) + body)


def too_many_files(target: Target) -> str:
    """65 images in one request, one more than the default --max-files."""
    body, content_type = _multipart([(f"{i}.png".encode(), target.png) for i in range(65)])
    return _send_and_answer(target, _head(target, content_type, len(body)) + body)


def decompression_bomb(target: Target) -> str:
    """A 100-byte PNG whose header claims 100,000 x 100,000 pixels."""
    body, content_type = _multipart([(b"bomb.png", png_header_only(100_000, 100_000))])
    return _send_and_answer(target, _head(target, content_type, len(body)) + body)


def empty_body(target: Target) -> str:
    """multipart/form-data with Content-Length: 0."""
    return _send_and_answer(target, _head(target, "multipart/form-data; boundary=b", 0))


def _with_auth(auth: str | None) -> Callable[[Target], str]:
    def send(target: Target) -> str:
        body, content_type = _multipart([(b"a.png", target.png)])
        return _send_and_answer(target, _head(target, content_type, len(body), auth=auth) + body)

    send.__doc__ = "A valid upload " + ("without a token." if auth is None else "with a wrong token.")
    return send


BAD_REQUESTS: dict[str, tuple[Callable[[Target], str], frozenset[str]]] = {
    "slow headers": (slow_headers, frozenset({"closed"})),
    "slow body": (slow_body, frozenset({"408", "closed"})),
    "truncated upload": (truncated_upload, frozenset({"closed"})),
    "bad multipart boundary": (bad_boundary, frozenset({"400"})),
    "multipart, no boundary": (no_boundary, frozenset({"400"})),
    "JSON body": (_wrong_type("application/json", b'{"files": ["a.png"]}'), frozenset({"415"})),
    "text/plain body": (_wrong_type("text/plain", b"grade this"), frozenset({"415"})),
    "octet-stream body": (_wrong_type("application/octet-stream", b"\x89PNG..."), frozenset({"415"})),
    "huge Content-Length": (huge_content_length, frozenset({"413"})),
    "chunked over the limit": (chunked_over_limit, frozenset({"413"})),
    "garbage request line": (garbage_request_line, frozenset({"400", "closed"})),
    "64 kB of headers": (oversized_headers, frozenset({"400", "431", "closed"})),
    "non-UTF-8 file name": (non_utf8_file_name, frozenset({"200"})),
    "65 files": (too_many_files, frozenset({"400"})),
    "decompression bomb PNG": (decompression_bomb, frozenset({"400"})),
    "empty body": (empty_body, frozenset({"400"})),
    "no token": (_with_auth(None), frozenset({"401"})),
    "wrong token": (_with_auth("wrong"), frozenset({"401"})),
}
"""Each kind of bad request: the client (returns the answer it got) and the answers it may get.
"closed": the server closed the connection without answering (or the client's own half-close
made answering pointless); a "garbage request line" or oversized headers may race the close."""


# ----------------------------------------------------------------------------- the abuse


@dataclass
class Tally:
    """What every client saw; shared by the client threads under ``lock``."""

    good_latencies_ms: list[float] = field(default_factory=list)
    good_failures: list[str] = field(default_factory=list)
    bad_answers: dict[str, Counter] = field(default_factory=lambda: {kind: Counter() for kind in BAD_REQUESTS})
    bad_slowest_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(BAD_REQUESTS, 0.0))
    flood_connections: int = 0
    flood_left_open: int = 0
    flood_slowest_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def abuse(
    target: Target,
    reference: dict[str, Any],
    *,
    seconds: float,
    good_clients: int = 4,
    bad_clients: int = len(BAD_REQUESTS),
    flood: int = 200,
) -> dict[str, Any]:
    """Good and bad clients at once against ``target`` for about ``seconds``.

    Each bad client runs the kinds of BAD_REQUESTS in turn (client i starts at kind i), one at a
    time, until ``seconds`` have passed; ``seconds=0`` with one client per kind sends each kind
    once, all at the same time. One more thread opens ``flood`` idle connections and waits for
    the server to close them, again and again. The good clients grade ``target.png`` until the
    bad ones are done.

    Args:
        target: the server.
        reference: the record the server returned for ``target.png`` before the abuse.

    Returns:
        The figures (see :func:`summary`).
    """
    tally = Tally()
    deadline = time.monotonic() + seconds
    done = threading.Event()
    good = [threading.Thread(target=_good_client, args=(target, reference, done, tally)) for _ in range(good_clients)]
    kinds = list(BAD_REQUESTS)
    bad = [
        threading.Thread(
            target=_bad_client, args=(target, kinds[i % len(kinds) :] + kinds[: i % len(kinds)], deadline, tally)
        )
        for i in range(bad_clients)
    ]
    if flood:
        bad.append(threading.Thread(target=_flood, args=(target, flood, deadline, tally)))
    start = time.perf_counter()
    for thread in good + bad:
        thread.start()
    for thread in bad:
        thread.join()
    done.set()
    for thread in good:
        thread.join()
    return summary(tally, time.perf_counter() - start)


def _good_client(target: Target, reference: dict[str, Any], done: threading.Event, tally: Tally) -> None:
    """Upload ``target.png`` one request at a time until ``done``; each answer must match ``reference``."""
    headers = {"Authorization": f"Bearer {target.token}"}
    with httpx.Client(base_url=target.base_url, headers=headers, timeout=target.answer_within_s) as client:
        while not done.is_set():
            problem, elapsed_ms = timed_grade(
                client, {"files": ("good.png", target.png, "image/png")}, lambda r: _differs(r, reference)
            )
            with tally.lock:
                if problem:
                    tally.good_failures.append(problem)
                else:
                    tally.good_latencies_ms.append(elapsed_ms)


def _differs(response: httpx.Response, reference: dict[str, Any]) -> str | None:
    """What is wrong with a good request's answer, or None."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    (record,) = response.json()["results"]
    if record["grade"] != reference["grade"] or abs(record["score"] - reference["score"]) > SCORE_TOLERANCE:
        return f"graded {record['grade']} ({record['score']:.6f}), before the abuse {reference['grade']} ({reference['score']:.6f})"
    return None


def _bad_client(target: Target, kinds: list[str], deadline: float, tally: Tally) -> None:
    for kind in itertools.cycle(kinds):
        send, _ = BAD_REQUESTS[kind]
        start = time.monotonic()
        try:
            answer = send(target)
        except OSError as error:  # could not even connect or send the headers
            answer = f"client error {type(error).__name__}"
        elapsed = time.monotonic() - start
        with tally.lock:
            tally.bad_answers[kind][answer] += 1
            tally.bad_slowest_s[kind] = max(tally.bad_slowest_s[kind], elapsed)
        if time.monotonic() >= deadline:
            return


def _flood(target: Target, connections: int, deadline: float, tally: Tally) -> None:
    """Open ``connections`` idle connections and wait for the server to close each; repeat until ``deadline``."""
    while True:
        start = time.monotonic()
        selector = selectors.DefaultSelector()
        for _ in range(connections):
            sock = socket.create_connection((target.host, target.port), timeout=target.answer_within_s)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        open_ = connections
        slowest = 0.0
        while open_ and time.monotonic() < start + target.answer_within_s:
            for key, _ in selector.select(timeout=0.5):
                sock = key.fileobj
                try:
                    data = sock.recv(1024)
                except (ConnectionResetError, BlockingIOError):
                    data = b""
                if not data:  # closed by the server (it never answers an idle connection)
                    selector.unregister(sock)
                    sock.close()
                    open_ -= 1
                    slowest = time.monotonic() - start
        for key in list(selector.get_map().values()):
            key.fileobj.close()
        selector.close()
        with tally.lock:
            tally.flood_connections += connections
            tally.flood_left_open += open_
            tally.flood_slowest_s = max(tally.flood_slowest_s, slowest)
        if time.monotonic() >= deadline:
            return


def summary(tally: Tally, seconds: float) -> dict[str, Any]:
    """The figures of an abuse run: numbers, plus ``bad`` (per kind: answers and slowest seconds)
    and up to five ``good_failure_examples``."""
    latencies = np.array(tally.good_latencies_ms)
    p50, p99 = np.percentile(latencies, [50, 99]) if len(latencies) else (float("nan"), float("nan"))
    unexpected = sum(
        count
        for kind, answers in tally.bad_answers.items()
        for answer, count in answers.items()
        if answer not in BAD_REQUESTS[kind][1]
    )
    return {
        "seconds": round(seconds, 2),
        "good_requests": len(latencies) + len(tally.good_failures),
        "good_failures": len(tally.good_failures),
        "good_p50_ms": round(float(p50), 2),
        "good_p99_ms": round(float(p99), 2),
        "bad_requests": sum(sum(answers.values()) for answers in tally.bad_answers.values()),
        "bad_unexpected_answers": unexpected,
        "flood_connections": tally.flood_connections,
        "flood_left_open": tally.flood_left_open,
        "flood_slowest_close_s": round(tally.flood_slowest_s, 2),
        "bad": {
            kind: {"answers": dict(tally.bad_answers[kind]), "slowest_s": round(tally.bad_slowest_s[kind], 2)}
            for kind in BAD_REQUESTS
        },
        "good_failure_examples": tally.good_failures[:5],
    }


# ----------------------------------------------------------------------------- the server


def run(
    model: str | Path | None = None,
    *,
    seconds: float = 60.0,
    good_clients: int = 4,
    bad_clients: int = 8,
    flood: int = 200,
    request_timeout_s: float = 3.0,
) -> dict[str, Any]:
    """Start ``imgrade serve`` on ``model`` (default: a 1-epoch run, trained here), abuse it, stop it.

    Returns :func:`abuse`'s figures plus ``healthy_after`` (1 if /healthz and a good request
    still succeed), ``server_tracebacks`` (in its log) and ``token_in_server_log`` (0 or 1).
    """
    with tempfile.TemporaryDirectory() as scratch:
        model = model or train_small_model(Path(scratch))
        token = secrets.token_urlsafe(24)
        target = Target("127.0.0.1", free_port(), token, request_timeout_s, max_upload_bytes=1_000_000, png=good_png())
        log_path = Path(scratch) / "server.log"
        flags = ("--request-timeout-s", str(request_timeout_s), "--max-upload-mb", "1")
        server = start_server(model, target, log_path, *flags)
        try:
            wait_until_healthy(target.base_url, server)
            reference = grade_once(target)
            figures = abuse(
                target, reference, seconds=seconds, good_clients=good_clients, bad_clients=bad_clients, flood=flood
            )
            figures["healthy_after"] = int(healthy(target, reference))
        finally:
            stop(server)
        server_log = log_path.read_text(errors="replace")
    figures["server_tracebacks"] = server_log.count("Traceback")
    figures["token_in_server_log"] = int(token in server_log)
    return figures


def start_server(model: str | Path, target: Target, log_path: Path, *flags: str) -> subprocess.Popen:
    """``python -m imgrade serve MODEL --port PORT FLAGS`` with ``target.token`` in $IMGRADE_TOKEN,
    its stdout and stderr to ``log_path``; not yet healthy."""
    with log_path.open("wb") as log:  # a file, not a pipe: a full pipe would block the server
        return subprocess.Popen(
            [sys.executable, "-m", "imgrade", "serve", str(model), "--port", str(target.port), *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "IMGRADE_TOKEN": target.token},
        )


def failed(figures: dict[str, Any]) -> list[str]:
    """What went wrong in a run's figures; empty when the server held."""
    problems = []
    if figures["good_failures"] or not figures["good_requests"]:
        problems.append(
            f"{figures['good_failures']} of {figures['good_requests']} good requests failed: {figures['good_failure_examples']}"
        )
    if figures["bad_unexpected_answers"]:
        problems.append(f"{figures['bad_unexpected_answers']} bad requests got an answer they should not")
    if figures["flood_left_open"]:
        problems.append(f"{figures['flood_left_open']} idle connections were still open after {SLACK_S:g} s of slack")
    if figures.get("healthy_after") == 0:
        problems.append("the server was not healthy after the abuse")
    if figures.get("server_tracebacks"):
        problems.append(f"the server logged {figures['server_tracebacks']} tracebacks")
    if figures.get("token_in_server_log"):
        problems.append("the server logged its token")
    return problems


def train_small_model(scratch: Path) -> Path:
    """The reference network, 1 epoch on 60 synthetic cucumbers (seconds on a CPU)."""
    data, run_dir = scratch / "synth", scratch / "run"
    imgrade = [sys.executable, "-m", "imgrade"]
    subprocess.run(
        [*imgrade, "data", "synth", "--out", str(data), "--n", "60"], check=True, timeout=300, capture_output=True
    )
    subprocess.run(
        [*imgrade, "train", "--data", str(data), "--epochs", "1", "--out", str(run_dir)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    return run_dir


def good_png() -> bytes:
    """A 32x32 RGB PNG: the good clients' upload."""
    return encode_png(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height RGB pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def grade_once(target: Target) -> dict[str, Any]:
    """The server's record for ``target.png``."""
    response = httpx.post(
        f"{target.base_url}/v1/grade",
        files={"files": ("good.png", target.png, "image/png")},
        headers={"Authorization": f"Bearer {target.token}"},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()["results"][0]


def healthy(target: Target, reference: dict[str, Any]) -> bool:
    """/healthz answers and a good request gets the reference grade."""
    try:
        if httpx.get(f"{target.base_url}/healthz", timeout=10).status_code != 200:
            return False
        response = httpx.post(
            f"{target.base_url}/v1/grade",
            files={"files": ("good.png", target.png, "image/png")},
            headers={"Authorization": f"Bearer {target.token}"},
            timeout=30,
        )
        return _differs(response, reference) is None
    except httpx.HTTPError:
        return False


def report(figures: dict[str, Any]) -> str:
    """The figures as the lines ``main`` prints."""
    lines = [f"{'bad request':<24}{'sent':>7}  {'answers':<30}{'slowest':>8}"]
    for kind, seen in figures["bad"].items():
        answers = ", ".join(f"{answer} x{count}" for answer, count in sorted(seen["answers"].items()))
        lines.append(f"{kind:<24}{sum(seen['answers'].values()):>7}  {answers:<30}{seen['slowest_s']:>7.1f}s")
    lines.append(
        f"{'idle connection flood':<24}{figures['flood_connections']:>7}  "
        f"{'closed x' + str(figures['flood_connections'] - figures['flood_left_open']):<30}{figures['flood_slowest_close_s']:>7.1f}s"
    )
    lines.append(
        f"bad requests sent: {figures['bad_requests']:,} (+{figures['flood_connections']:,} idle connections), "
        f"answers outside the expected: {figures['bad_unexpected_answers']}"
    )
    lines.append(
        f"good requests during the abuse: {figures['good_requests']:,} sent, {figures['good_failures']} failed; "
        f"latency p50 {figures['good_p50_ms']:.1f} ms, p99 {figures['good_p99_ms']:.1f} ms"
    )
    if "healthy_after" in figures:
        lines.append(
            f"server after: {'healthy' if figures['healthy_after'] else 'NOT healthy'}, "
            f"{figures['server_tracebacks']} tracebacks in its log, token "
            f"{'FOUND' if figures['token_in_server_log'] else 'not'} in its log"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="run folder, .pt or .onnx (default: a 1-epoch run trained here)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the bad clients keep at it")
    parser.add_argument("--good-clients", type=int, default=4)
    parser.add_argument("--bad-clients", type=int, default=8)
    parser.add_argument("--flood", type=int, default=200, help="idle connections per flood")
    parser.add_argument(
        "--request-timeout-s",
        type=float,
        help="the server's --request-timeout-s (default 3; with --bombs, its default)",
    )
    bombs = parser.add_argument_group("decoding bombs (serve_bombs.py)")
    bombs.add_argument("--bombs", action="store_true", help="attack with decoding bombs instead, then the 503 check")
    bombs.add_argument("--attackers", type=int, default=4, help="clients uploading bombs (default 4)")
    bombs.add_argument("--side", type=int, default=7999, help="the bombs' side in pixels (default 7999: 64 MP)")
    bombs.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "imgrade-bench-bombs",
        help="folder for the bombs, kept for the next run (default: the one decode_bombs.py uses)",
    )
    bombs.add_argument(
        "--rss-guard-mb", type=float, default=8000.0, help="kill the server above this RSS (default 8000)"
    )
    bombs.add_argument(
        "--cancel-timeout-s", type=float, default=2.0, help="the 503 check's --request-timeout-s (default 2)"
    )
    bombs.add_argument(
        "--wait-s", type=float, default=120.0, help="longest wait for the server's CPU to stop (default 120)"
    )
    bombs.add_argument(
        "--out", type=Path, help="also write the report to this Markdown file (docs/results/serve_bombs.md)"
    )
    args = parser.parse_args()
    if args.bombs:
        return _bombs(args)
    request_timeout_s = args.request_timeout_s or 3.0
    print(
        f"serve abuse: {args.seconds:g} s, {args.good_clients} good clients, {args.bad_clients} bad clients, "
        f"floods of {args.flood} idle connections, server --request-timeout-s {request_timeout_s:g}",
        flush=True,
    )
    figures = run(
        args.model,
        seconds=args.seconds,
        good_clients=args.good_clients,
        bad_clients=args.bad_clients,
        flood=args.flood,
        request_timeout_s=request_timeout_s,
    )
    print(report(figures))
    problems = failed(figures)
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


def _bombs(args: argparse.Namespace) -> int:
    """``--bombs``: serve_bombs.run, its report, exit 1 on a FAIL."""
    import serve_bombs  # it imports this module: import it only when asked

    options = {"request_timeout_s": args.request_timeout_s} if args.request_timeout_s else {}
    print(
        f"serve bombs: {args.seconds:g} s, {args.attackers} attackers, {args.good_clients} good clients",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as scratch:
        figures = serve_bombs.run(
            args.model or train_small_model(Path(scratch)),
            args.work,
            seconds=args.seconds,
            attackers=args.attackers,
            good_clients=args.good_clients,
            cancel_timeout_s=args.cancel_timeout_s,
            side=args.side,
            rss_guard_mb=args.rss_guard_mb,
            wait_s=args.wait_s,
            **options,
        )
    text = serve_bombs.report(figures)
    print(text)
    if args.out:
        cpu = next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"
        )
        args.out.write_text(
            "# imgrade serve against decoding bombs\n\n"
            f"`python benchmarks/serve_abuse.py --bombs --attackers {args.attackers} --seconds {args.seconds:g}` "
            f"on {os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}; load average "
            f"{os.getloadavg()[0]:.1f} at the end. Clients and server share the cores.\n\n```\n{text}\n```\n"
        )
        print(f"wrote {args.out}")
    return 0 if all(met for _, _, met in serve_bombs.goals(figures)) else 1


if __name__ == "__main__":
    sys.exit(main())
