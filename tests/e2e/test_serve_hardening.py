"""`imgrade serve` under attack: a real server on loopback, good and bad clients at the same time.

Every kind of bad request of ``benchmarks/serve_abuse.py`` (slow headers, slow and truncated
uploads, malformed multipart, wrong content types, bodies and headers over the limits, garbage,
a decompression bomb, a non-UTF-8 file name, 65 files, missing and wrong tokens) is sent once,
all at the same moment, with a flood of 200 idle connections, while four good clients keep
grading. Each bad one must get its 4xx or a closed connection within the server's timeouts plus
slack; every good one a 200 with the grade the model gives. The clients live in the benchmark,
which runs the same mix for a minute.
"""

import logging
import os
import secrets
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest
import serve_abuse as kit  # benchmarks/serve_abuse.py: tests/conftest.py puts benchmarks/ on the path
import uvicorn

from imgrade.data.images import decode_image
from imgrade.runtime import load_grader
from imgrade.runtime.onnx_export import PARITY_ATOL
from imgrade.serve import Limits, create_app
from imgrade.serve.server import uvicorn_config

REQUEST_TIMEOUT_S = 3.0  # the server's --request-timeout-s (and so its headers timeout): slow clients wait this long
MAX_UPLOAD_MB = 1


@pytest.fixture(scope="module")
def token() -> str:
    return "tok-" + secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def server(trained_run, token, tmp_path_factory, imgrade_serve):
    """``python -m imgrade serve RUN`` with a token (from $IMGRADE_TOKEN) and short timeouts: the
    abuse kit's Target, and the file the server's stdout and stderr go to."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    flags = ("--request-timeout-s", str(REQUEST_TIMEOUT_S), "--max-upload-mb", str(MAX_UPLOAD_MB))
    with imgrade_serve(trained_run, log, *flags, env={**os.environ, "IMGRADE_TOKEN": token}) as url:
        port = urlsplit(url).port
        yield kit.Target("127.0.0.1", port, token, REQUEST_TIMEOUT_S, MAX_UPLOAD_MB * 1_000_000, kit.good_png()), log


def test_good_requests_all_succeed_while_every_kind_of_bad_request_is_refused(server, trained_run):
    target, log = server
    reference = kit.grade_once(target)
    grader = load_grader(trained_run, device="cpu")
    (expected,) = grader.grade(decode_image(target.png, "good.png", grader.image_size)[None], ["good.png"])
    # the server grades with ONNX Runtime (the run exported in memory), within export's tolerance of PyTorch
    assert reference["grade"] == expected["grade"]
    assert reference["score"] == pytest.approx(expected["score"], abs=PARITY_ATOL)

    figures = kit.abuse(target, reference, seconds=0, good_clients=4, bad_clients=len(kit.BAD_REQUESTS), flood=200)

    seen = {kind: figures["bad"][kind]["answers"] for kind in kit.BAD_REQUESTS}
    assert all(sum(answers.values()) == 1 for answers in seen.values()), seen
    wrong = {kind: answers for kind, answers in seen.items() if not set(answers) <= kit.BAD_REQUESTS[kind][1]}
    assert not wrong, f"answers outside the expected ones (all answers: {seen})"
    assert seen["slow body"] == {"408": 1}  # the body-read timeout, not the connection's
    assert figures["flood_connections"] == 200 and figures["flood_left_open"] == 0
    assert figures["good_failures"] == 0, figures["good_failure_examples"]
    assert figures["good_requests"] >= 4  # the slow clients keep the abuse going for REQUEST_TIMEOUT_S
    assert kit.healthy(target, reference)
    server_log = log.read_text()
    assert "Traceback" not in server_log and "Exception in ASGI application" not in server_log, server_log


def test_the_token_stays_out_of_the_log_at_the_default_level(server):
    target, log = server
    good = {"Authorization": f"Bearer {target.token}"}
    with httpx.Client(base_url=target.base_url, timeout=30) as client:
        assert client.get("/v1/model", headers=good).status_code == 200
        for headers in ({}, {"Authorization": f"Bearer {target.token}x"}, {"Authorization": target.token}):
            assert client.get("/v1/model", headers=headers).status_code == 401
    assert target.token not in log.read_text()


def test_the_access_log_has_every_answer_and_never_the_token(trained_run, caplog, capfd):
    """The real app in uvicorn (in a thread, on loopback), imgrade's and uvicorn's loggers at INFO."""
    token = "tok-" + secrets.token_urlsafe(16)
    limits = Limits(request_timeout_s=REQUEST_TIMEOUT_S, max_upload_mb=0.01)
    app = create_app(load_grader(trained_run, device="cpu"), token=token, limits=limits)
    caplog.set_level(logging.INFO, logger="imgrade")  # not the root: httpx logs the URLs this test sends
    config = uvicorn_config(app, limits, log_level="info")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while not server.started:
                assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.05)
            base_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            png = kit.good_png()
            assert len(png) < 5000  # under the 10,000-byte limit; four times it is over
            with httpx.Client(base_url=base_url, timeout=30) as client:
                good = {"Authorization": f"Bearer {token}"}
                assert client.get("/v1/model", headers=good).status_code == 200
                assert (
                    client.post("/v1/grade?token=" + token, headers=good, files={"files": ("a.png", png)}).status_code
                    == 200
                )
                for headers in (
                    {},
                    {"Authorization": f"Bearer {token}x"},
                    {"Authorization": f"Bearer {token[:-1]}"},
                    {"Authorization": token},
                    {"Authorization": f"Basic {token}"},
                ):
                    assert client.post("/v1/grade", headers=headers, files={"files": ("a.png", png)}).status_code == 401
                assert client.post("/v1/grade", headers=good, files={"files": ("a.png", png * 4)}).status_code == 413
        finally:
            server.should_exit = True
            thread.join(timeout=30)
    access = [record.getMessage() for record in caplog.records if record.name == "imgrade.serve.access"]
    assert [line.split(" ms ")[0].rsplit(" ", 1)[0] for line in access] == [
        "GET /v1/model 200",
        "POST /v1/grade 200",
        *["POST /v1/grade 401"] * 5,
        "POST /v1/grade 413",
    ], access
    assert access[1].endswith(" 1 photos") and access[0].endswith(" 0 photos")
    captured = capfd.readouterr()
    assert "uvicorn.error" in caplog.text and token not in caplog.text + captured.out + captured.err
