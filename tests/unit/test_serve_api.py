"""The HTTP grading service in-process: every status code, batching under load, the access log, the limits and serve()'s start-up errors."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import re
import shutil
import socket
import struct
import threading
import warnings
import zlib

import numpy as np
import pytest
import uvicorn
from PIL import Image
from starlette import exceptions as starlette_exceptions

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its TestClient; the httpx the project installs still works.
    # (The lowest Starlette that FastAPI allows has no such warning.)
    warnings.simplefilter("ignore", getattr(starlette_exceptions, "StarletteDeprecationWarning", DeprecationWarning))
    from fastapi.testclient import TestClient

from imgrade.cli import build_parser, main
from imgrade.core.errors import CheckpointError, ConfigError
from imgrade.data.images import decode_image
from imgrade.runtime import load_grader
from imgrade.runtime.grading import Outputs
from imgrade.serve import Limits, create_app, serve
from imgrade.serve.access_log import AccessLog
from imgrade.serve.batcher import Batcher
from imgrade.serve.guards import BodyLimit, HeaderLimit, RequestTimeout

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def grader(coral_run):
    """A CORAL grader: probabilities and grade sets in every record."""
    return load_grader(coral_run, device="cpu")


@pytest.fixture
def client(grader):
    with TestClient(create_app(grader, source_name="coral")) as client:
        yield client


# ----------------------------------------------------------------------------- images


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def gradient(width: int = 48, height: int = 40, shade: int = 0) -> Image.Image:
    """An RGB image that looks different in every orientation: ramps along x and y, a bar on the left."""
    y, x = np.mgrid[0:height, 0:width]
    bar = np.where(x < width // 4, 255, 40)
    rgb = np.stack([x * 255 // (width - 1), (y * 255 // (height - 1) + shade) % 256, bar], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height RGB pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def as_files(*named: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (name, data)) for name, data in named]


def expected_records(grader, named: list[tuple[str, bytes]], batch_size: int = 256) -> list[dict]:
    """What the grader says about the same files decoded the same way, without the service."""
    images = np.stack([decode_image(data, name, grader.image_size) for name, data in named])
    return grader.grade(images, [name for name, _ in named], batch_size=batch_size)


def assert_same_records(got: list[dict], expected: list[dict], same_batches: bool = True) -> None:
    """Records equal up to float noise. A forward pass over other batches than the reference's
    (``same_batches=False``) may differ in the last bits, enough to move a grade set's edge."""
    assert [r["image"] for r in got] == [r["image"] for r in expected]
    for g, e in zip(got, expected):
        assert g.keys() == e.keys()
        assert g["score"] == pytest.approx(e["score"], abs=TOLERANCE)
        assert g["probabilities"] == pytest.approx(e["probabilities"], abs=TOLERANCE)
        assert (g["grade"], g["grade_index"]) == (e["grade"], e["grade_index"])
        if same_batches:
            assert g["grade_set"] == e["grade_set"]


def assert_still_serves(client: TestClient, grader, headers: dict | None = None) -> None:
    good = [("good.png", encode(gradient()))]
    response = client.post("/v1/grade", files=as_files(*good), headers=headers)
    assert response.status_code == 200, response.text
    assert_same_records(response.json()["results"], expected_records(grader, good))


# ----------------------------------------------------------------------------- what a client reads


def test_health_and_model_card(client, grader):
    assert client.get("/healthz").json() == {"status": "ok"}
    card = client.get("/v1/model").json()
    assert card == {
        **grader.describe(),
        "model": "coral",
        "limits": {"max_files": 64, "max_upload_mb": 10.0, "max_decode_mb": 300.0},
        "auth": False,
        "model_card": grader.model_card,
        "collect": False,
        "label": False,
    }
    assert card["model_card"].startswith("# Model card: coral\n")
    assert client.get("/openapi.json").status_code == 200


def test_a_model_without_a_card_says_none(coral_run, tmp_path):
    run = tmp_path / "older"
    run.mkdir()
    shutil.copy(coral_run / "best.pt", run / "best.pt")  # a run from before model cards
    with TestClient(create_app(load_grader(run, device="cpu"))) as client:
        answer = client.get("/v1/model").json()
    assert answer["model_card"] is None and answer["grades"]


def test_grades_equal_the_grader_on_every_image_mode(client, grader):
    grey = np.arange(40 * 48, dtype=np.uint32).reshape(40, 48)
    rgba = np.dstack([np.asarray(gradient()), np.where(np.arange(48) < 24, 0, 255).repeat(40).reshape(48, 40).T])
    named = [
        ("rgb.png", encode(gradient())),
        ("grey.png", encode(Image.fromarray((grey % 256).astype(np.uint8), "L"))),
        ("cutout.png", encode(Image.fromarray(rgba.astype(np.uint8), "RGBA"))),
        ("deep.png", encode(Image.fromarray((grey * 33).astype(np.uint16)))),  # 16-bit greyscale
        ("photo.jpg", encode(gradient(shade=90), "JPEG", quality=90)),
    ]
    response = client.post("/v1/grade", files=as_files(*named))
    assert response.status_code == 200, response.text
    assert_same_records(response.json()["results"], expected_records(grader, named))


def test_exif_rotation_is_applied(client):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels are to be turned 90 degrees clockwise
    rotated = encode(gradient(), "JPEG", quality=95, exif=exif)
    stored = Image.open(io.BytesIO(rotated))
    upright = encode(stored.transpose(Image.Transpose.ROTATE_270))  # the same pixels, upright, lossless
    as_stored = encode(stored)  # the same pixels, without the tag
    response = client.post(
        "/v1/grade", files=as_files(("rotated.jpg", rotated), ("upright.png", upright), ("stored.png", as_stored))
    )
    assert response.status_code == 200, response.text
    rotated_score, upright_score, stored_score = (r["score"] for r in response.json()["results"])
    assert rotated_score == pytest.approx(upright_score, abs=TOLERANCE)
    assert abs(stored_score - upright_score) > 100 * TOLERANCE  # ignoring the tag would change the result


# ----------------------------------------------------------------------------- batching


def test_concurrent_requests_share_forward_passes(grader):
    num_clients, rounds = 8, 2
    named = [(f"shade{i}.png", encode(gradient(shade=30 * i))) for i in range(num_clients)]
    expected = expected_records(grader, named)
    app = create_app(grader, limits=Limits(max_batch=num_clients, batch_window_ms=500))
    results: dict[int, list] = {i: [] for i in range(num_clients)}
    start = threading.Barrier(num_clients)

    with TestClient(app) as client:

        def post(i: int) -> None:
            for _ in range(rounds):
                start.wait(timeout=30)
                response = client.post("/v1/grade", files=as_files(named[i]))
                results[i].append((response.status_code, response.json()))

        threads = [threading.Thread(target=post, args=(i,)) for i in range(num_clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        stats = client.get("/v1/stats").json()

    for i in range(num_clients):
        assert [status for status, _ in results[i]] == [200] * rounds
        for _, body in results[i]:
            assert_same_records(body["results"], [expected[i]], same_batches=False)
    assert stats == app.state.batcher.stats.to_dict()
    assert stats["images"] == num_clients * rounds
    assert stats["largest_batch"] > 1 and stats["forward_passes"] < num_clients * rounds


def test_a_request_larger_than_max_batch_runs_in_chunks(grader):
    named = [(f"img{i}.png", encode(gradient(shade=20 * i))) for i in range(7)]
    with TestClient(create_app(grader, limits=Limits(max_batch=3))) as client:
        response = client.post("/v1/grade", files=as_files(*named))
        stats = client.app.state.batcher.stats
    assert response.status_code == 200, response.text
    assert_same_records(response.json()["results"], expected_records(grader, named, batch_size=3))
    assert (stats.forward_passes, stats.images, stats.largest_batch) == (3, 7, 3)


def test_batcher_fails_only_the_request_the_model_fails_on():
    def forward(images: np.ndarray) -> Outputs:
        if (images == 0).all(axis=(1, 2, 3)).any():
            raise ValueError("black image")
        return Outputs(images.mean(axis=(1, 2, 3)), None, None)

    def images(value: int, n: int = 1) -> np.ndarray:
        return np.full((n, 4, 4, 3), value, dtype=np.uint8)

    async def scenario() -> tuple[list, Outputs, Batcher]:
        batcher = Batcher(forward, max_batch=3, window_s=10.0)  # the three requests fill one batch
        await batcher.start()
        try:
            answers = await asyncio.gather(
                batcher.submit(images(10)),
                batcher.submit(images(0)),
                batcher.submit(images(20)),
                return_exceptions=True,
            )
            later = await batcher.submit(images(30, n=3))
        finally:
            await batcher.stop()
        return answers, later, batcher

    (first, failed, third), later, batcher = asyncio.run(scenario())
    assert first.scores.tolist() == [10.0] and third.scores.tolist() == [20.0]
    assert isinstance(failed, ValueError)
    assert later.scores.tolist() == [30.0] * 3
    assert (batcher.stats.forward_passes, batcher.stats.images) == (3, 5)


def test_a_model_failure_is_a_500_and_the_next_request_succeeds(grader):
    class Poisoned:
        """The grader, except that an all-black image breaks it."""

        def __getattr__(self, name):
            return getattr(grader, name)

        def outputs(self, images, batch_size=256):
            if (images == 0).all(axis=(1, 2, 3)).any():
                raise RuntimeError("black image\nsecond line")
            return grader.outputs(images, batch_size)

    with TestClient(create_app(Poisoned())) as client:
        response = client.post("/v1/grade", files=as_files(("black.png", encode(Image.new("RGB", (32, 32))))))
        assert response.status_code == 500
        detail = response.json()["error"]
        assert "RuntimeError: black image second line" in detail and "\n" not in detail
        assert_still_serves(client, grader)


# ----------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    "name, data, says",
    [
        ("empty.png", b"", "empty (0 bytes)"),
        ("notes.txt", b"grade these please\n", "not an image"),
        (
            "cut.png",
            encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))[:6000],
            "truncated or corrupt",
        ),
        ("bomb.png", png_header_only(100_000, 100_000), "pixels"),
    ],
)
def test_a_file_that_is_not_a_usable_image_is_a_400_naming_it(client, grader, name, data, says):
    response = client.post("/v1/grade", files=as_files(("fine.png", encode(gradient())), (name, data)))
    assert response.status_code == 400
    detail = response.json()["error"]
    assert detail.startswith(name) and says in detail and "\n" not in detail
    assert client.app.state.batcher.stats.forward_passes == 0  # the model never saw the request
    assert_still_serves(client, grader)


@pytest.mark.parametrize(
    "request_options, status, says",
    [
        ({"files": [("photo", ("a.png", b"x"))]}, 400, "no part named files"),
        ({"data": {"files": "a.png"}, "files": [("photo", ("a.png", b"x"))]}, 400, "text field"),
        ({"files": as_files(*[(f"{i}.png", b"x") for i in range(3)])}, 400, "at most 2"),
        (
            {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=b"}},
            400,
            "cannot read the upload",
        ),
        ({"content": b"garbage", "headers": {"content-type": "multipart/form-data"}}, 400, "boundary"),
        ({"json": {"files": ["a.png"]}}, 415, "multipart/form-data"),
        ({}, 415, "no Content-Type"),
    ],
)
def test_a_malformed_request_is_a_4xx_saying_how_to_send(grader, request_options, status, says):
    with TestClient(create_app(grader, limits=Limits(max_files=2))) as client:
        response = client.post("/v1/grade", **request_options)
        assert response.status_code == status
        assert says in response.json()["error"]
        assert_still_serves(client, grader)


def test_a_body_over_the_limit_is_a_413_with_or_without_content_length(grader):
    too_big = encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (80, 80, 3), dtype=np.uint8)))
    assert len(too_big) > 10_000

    def chunks():  # a generator body: httpx sends it chunked, without a Content-Length
        for start in range(0, len(too_big), 1000):
            yield too_big[start : start + 1000]

    with TestClient(create_app(grader, limits=Limits(max_upload_mb=0.01))) as client:
        declared = client.post("/v1/grade", files=as_files(("big.png", too_big)))
        streamed = client.post(
            "/v1/grade", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        for response in (declared, streamed):
            assert response.status_code == 413
            assert "0.01 MB limit" in response.json()["error"] and "--max-upload-mb" in response.json()["error"]
        assert "content-length" not in streamed.request.headers
        assert_still_serves(client, grader)


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read():
    async def app(scope, receive, send):
        raise AssertionError("the app ran")

    async def receive():
        raise AssertionError("the body was read")

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/grade", "headers": [(b"content-length", b"1001")]}
    asyncio.run(BodyLimit(app, max_bytes=1000)(scope, receive, send))
    assert sent[0]["status"] == 413 and b"1,001 bytes" in sent[1]["body"]


def _run_asgi(middleware, scope_headers=()) -> list[dict]:
    """The messages ``middleware`` sends for one POST whose body never arrives."""

    async def receive():
        await asyncio.sleep(3600)

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/grade",
        "raw_path": b"/v1/grade",
        "query_string": b"",
        "headers": list(scope_headers),
    }
    asyncio.run(middleware(scope, receive, send))
    return sent


def test_a_request_past_its_timeout_is_a_408_while_its_body_is_late_and_a_503_after():
    async def reads_the_body(scope, receive, send):
        await receive()

    async def works_slowly(scope, receive, send):
        await asyncio.sleep(3600)

    late, busy = (_run_asgi(RequestTimeout(app, timeout_s=0.05)) for app in (reads_the_body, works_slowly))
    assert late[0]["status"] == 408 and (b"connection", b"close") in late[0]["headers"]
    assert b"did not arrive within 0.05 s" in late[1]["body"] and b"--request-timeout-s" in late[1]["body"]
    assert busy[0]["status"] == 503 and b"could not answer within 0.05 s" in busy[1]["body"]


def test_the_request_timeout_stops_once_the_response_starts_and_lets_other_timeouts_through():
    async def streams_slowly(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"done"})

    async def times_out_itself(scope, receive, send):
        raise TimeoutError("a timeout of the app's own")

    sent = _run_asgi(RequestTimeout(streams_slowly, timeout_s=0.05))
    assert [sent[0]["status"], sent[1]["body"]] == [200, b"done"]
    with pytest.raises(TimeoutError, match="app's own"):
        _run_asgi(RequestTimeout(times_out_itself, timeout_s=10))


def test_headers_over_the_limit_are_a_431():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    small = _run_asgi(HeaderLimit(app, max_bytes=100), [(b"host", b"x" * 60)])
    large = _run_asgi(HeaderLimit(app, max_bytes=100), [(b"host", b"x" * 60), (b"cookie", b"y" * 30)])
    assert small[0]["status"] == 200
    assert large[0]["status"] == 431 and b"headers are 117 bytes" in large[1]["body"]  # 9 (path) + 68 + 40


def test_a_token_guards_every_api_route_and_nothing_else(grader, tmp_path):
    token = "s3cret-token"
    good = {"Authorization": f"Bearer {token}"}
    (tmp_path / "index.html").write_text("<h1>imgrade</h1>")
    (tmp_path / "app.js").write_text("")
    with TestClient(create_app(grader, token=token, static_dir=tmp_path)) as client:
        for route in ("/v1/model", "/v1/stats"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                response = client.get(route, headers=headers)
                assert response.status_code == 401
                assert response.headers["www-authenticate"] == "Bearer"
                assert "Authorization: Bearer TOKEN" in response.json()["error"]
            assert client.get(route, headers=good).status_code == 200
        assert client.post("/v1/grade", files=as_files(("a.png", encode(gradient())))).status_code == 401
        assert client.get("/v1/model", headers=good).json()["auth"] is True
        for route in ("/healthz", "/openapi.json", "/docs", "/", "/static/app.js"):
            assert client.get(route).status_code == 200
        assert_still_serves(client, grader, headers=good)


def test_the_page_and_its_files_come_from_the_static_folder(grader, tmp_path):
    (tmp_path / "index.html").write_text('<script src="static/app.js"></script>')
    (tmp_path / "app.js").write_text("console.log('grade')")
    with TestClient(create_app(grader, static_dir=tmp_path)) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.text == '<script src="static/app.js"></script>'
        assert page.headers["content-type"].startswith("text/html")
        assert client.get("/static/app.js").text == "console.log('grade')"
        assert client.get("/static/missing.css").status_code == 404
    (tmp_path / "index.html").unlink()
    with TestClient(create_app(grader, static_dir=tmp_path)) as client:
        response = client.get("/")
        assert response.status_code == 404 and "index.html" in response.json()["error"]


# ----------------------------------------------------------------------------- the access log


def access_records(caplog) -> list[tuple[str, str, int | None, int]]:
    return [(r.method, r.path, r.status, r.photos) for r in caplog.records if r.name == "imgrade.serve.access"]


def test_every_request_is_one_access_log_line_with_its_status_and_photos(grader, caplog):
    two = as_files(("a.png", encode(gradient())), ("b.png", encode(gradient(shade=60))))
    too_big = as_files(
        ("big.png", encode(Image.fromarray(np.random.default_rng(1).integers(0, 255, (80, 80, 3), dtype=np.uint8))))
    )
    token = "s3cret-token"
    with TestClient(create_app(grader, token=token, limits=Limits(max_upload_mb=0.01))) as client:
        caplog.set_level(logging.INFO, logger="imgrade.serve.access")
        good = {"Authorization": f"Bearer {token}"}
        assert client.post("/v1/grade?page=1", files=two, headers=good).status_code == 200
        assert client.post("/v1/grade", files=as_files(("notes.txt", b"no image")), headers=good).status_code == 400
        assert client.post("/v1/grade", files=too_big, headers=good).status_code == 413
        assert client.get("/v1/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/no/such/route").status_code == 404
        assert client.get("/healthz").status_code == 200
    assert access_records(caplog) == [
        ("POST", "/v1/grade", 200, 2),
        ("POST", "/v1/grade", 400, 0),
        ("POST", "/v1/grade", 413, 0),
        ("GET", "/v1/model", 401, 0),
        ("GET", "/no/such/route", 404, 0),
        ("GET", "/healthz", 200, 0),
    ]
    first = next(r for r in caplog.records if r.name == "imgrade.serve.access")
    assert first.levelno == logging.INFO and first.latency_ms > 0
    assert re.fullmatch(r"POST /v1/grade 200 \d+\.\d ms 2 photos", first.getMessage())
    assert token not in caplog.text and "wrong" not in caplog.text


def _answer_after(delay_s: float, status: int = 200):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": []})
        await asyncio.sleep(delay_s)
        await send({"type": "http.response.body", "body": b"done"})

    return app


def test_the_access_log_times_to_the_last_body_byte_and_logs_a_crash_as_the_500_sent(caplog):
    async def crashes(scope, receive, send):
        raise RuntimeError("a bug")

    caplog.set_level(logging.INFO, logger="imgrade.serve.access")
    _run_asgi(AccessLog(_answer_after(0.05)))
    with pytest.raises(RuntimeError, match="a bug"):
        _run_asgi(AccessLog(crashes))
    slow, crashed = (r for r in caplog.records if r.name == "imgrade.serve.access")
    assert (slow.status, crashed.status) == (200, 500)
    assert slow.latency_ms >= 50
    assert crashed.getMessage().startswith("POST /v1/grade 500 ")


def test_a_request_answered_by_a_guard_is_logged_once_with_the_guards_status(caplog):
    async def works_slowly(scope, receive, send):
        await asyncio.sleep(3600)

    caplog.set_level(logging.INFO, logger="imgrade.serve.access")
    _run_asgi(AccessLog(RequestTimeout(works_slowly, timeout_s=0.05)))
    assert access_records(caplog) == [("POST", "/v1/grade", 503, 0)]


# ----------------------------------------------------------------------------- limits and start-up errors


@pytest.mark.parametrize(
    "option, flag",
    [
        ({"max_files": 0}, "--max-files"),
        ({"max_files": 2.5}, "--max-files"),
        ({"max_batch": 0}, "--max-batch"),
        ({"max_upload_mb": 0.0}, "--max-upload-mb"),
        ({"max_upload_mb": float("nan")}, "--max-upload-mb"),
        ({"max_decode_mb": 0.0}, "--max-decode-mb"),
        ({"batch_window_ms": -1.0}, "--batch-window-ms"),
        ({"request_timeout_s": 0.0}, "--request-timeout-s"),
        ({"headers_timeout_s": -1.0}, "--headers-timeout-s"),
        ({"max_header_kb": 0}, "--max-header-kb"),
        ({"keep_alive_s": float("inf")}, "--keep-alive-s"),
        ({"max_connections": True}, "--max-connections"),
    ],
)
def test_bad_limits_are_refused_in_one_line_naming_the_flag_and_its_default(option, flag):
    with pytest.raises(ConfigError) as error:
        Limits(**option)
    message = str(error.value)
    (name,) = option
    assert message.startswith(f"{flag} must be ") and f"got {option[name]!r}" in message
    assert message.endswith(f"try {getattr(Limits(), name):g}") and "\n" not in message


def test_limits_derive_the_byte_counts_and_cap_the_headers_timeout():
    limits = Limits(max_upload_mb=0.5, max_header_kb=2, headers_timeout_s=10.0, request_timeout_s=3.0)
    assert (limits.max_upload_bytes, limits.max_header_bytes, limits.headers_wait_s) == (500_000, 2048, 3.0)
    assert Limits(headers_timeout_s=2.0).headers_wait_s == 2.0


def test_the_serve_flags_are_the_limits_fields_with_their_defaults(capsys):
    parser = build_parser()
    assert Limits.from_flags(parser.parse_args(["serve", "m"])) == Limits()
    args = parser.parse_args(
        ["serve", "m", "--max-files", "8", "--request-timeout-s", "2.5", "--max-connections", "50"]
    )
    assert Limits.from_flags(args) == Limits(max_files=8, request_timeout_s=2.5, max_connections=50)
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for spec in dataclasses.fields(Limits):
        assert f"--{spec.name.replace('_', '-')}" in help_text
    assert "(default 10): larger ones get 413" in help_text and "(default 1000;" in help_text


def test_an_empty_token_is_refused(grader):
    with pytest.raises(ConfigError, match="--token"):
        create_app(grader, token="")


def test_the_cli_refuses_a_bad_limit_in_one_line_before_loading_anything(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "no-such-run"), "--max-files", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--max-files must be a whole number of at least 1, got 0: try 64" in err and "\n" not in err


def test_serve_refuses_a_port_in_use_before_serving(coral_run):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as error:
            serve(coral_run, host="127.0.0.1", port=port)
    message = str(error.value)
    assert f"port {port}" in message and "--port" in message and "\n" not in message


def test_serve_logs_its_banner_and_its_stop_and_prints_nothing(coral_run, caplog, capsys, monkeypatch):
    def ctrl_c(server, sockets):
        raise KeyboardInterrupt

    monkeypatch.setattr(uvicorn.Server, "run", ctrl_c)
    monkeypatch.setattr(
        logging.getLogger("imgrade"), "handlers", []
    )  # a CLI test may have installed its stderr handler
    caplog.set_level(logging.INFO, logger="imgrade.serve")
    serve(coral_run, port=0, token="s3cret-token")
    banner, stopped = (r.getMessage() for r in caplog.records if r.name == "imgrade.serve.server")
    # a run on a CPU is graded by ONNX Runtime, from the network exported in memory
    assert banner.startswith(f"serving {coral_run} (onnx, exported in memory, coral, ")
    assert ", token required) on http://127.0.0.1:" in banner
    assert stopped == "stopped" and "s3cret-token" not in caplog.text
    captured = capsys.readouterr()
    assert captured.out == "" and "serving" not in captured.err


@pytest.mark.parametrize("why", ["--runtime torch", "a failed export"])
def test_serve_grades_a_run_with_eager_pytorch_when_asked_or_when_the_export_fails(why, coral_run, caplog, monkeypatch):
    from imgrade.runtime import onnx_export as export

    apps = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets: apps.append(server.config.app))
    monkeypatch.setattr(logging.getLogger("imgrade"), "handlers", [])
    if why == "a failed export":

        def refuse(predictor):
            raise RuntimeError("no exporter here")

        monkeypatch.setattr(export, "onnx_bytes", refuse)
    caplog.set_level(logging.INFO, logger="imgrade")
    serve(coral_run, port=0, runtime="torch" if why == "--runtime torch" else "auto")
    (app,) = apps
    assert app.state.grader.runtime == "torch" and app.state.model_card["runtime"] == "torch"
    said = [r.getMessage() for r in caplog.records if r.name.startswith(("imgrade.runtime", "imgrade.serve"))]
    banner = f"serving {coral_run} (torch, coral, "
    if why == "--runtime torch":
        assert said[0].startswith(banner) and said[1:] == ["stopped"]
    else:  # one line says why, before the banner
        assert (
            said[0] == "grading with eager PyTorch: the in-memory ONNX export failed (RuntimeError: no exporter here)"
        )
        assert said[1].startswith(banner) and said[2:] == ["stopped"]


def test_serve_refuses_a_missing_model(tmp_path):
    with pytest.raises(CheckpointError):
        serve(tmp_path / "no-such-run", port=0)
