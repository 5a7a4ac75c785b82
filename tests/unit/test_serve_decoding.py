"""The service's decode pool: photos over the budget are 400s, a full pool answers 503 at once, and a
request past its deadline stops decoding."""

from __future__ import annotations

import io
import threading
import time
import warnings
from contextlib import ExitStack

import pytest
from PIL import Image
from starlette import exceptions as starlette_exceptions

with warnings.catch_warnings():
    warnings.simplefilter("ignore", getattr(starlette_exceptions, "StarletteDeprecationWarning", DeprecationWarning))
    from fastapi.testclient import TestClient

from imgrade.data.images import decode_cost
from imgrade.runtime import load_grader
from imgrade.serve import Limits, create_app
from imgrade.serve.decode_pool import DecodePool, PoolFull


@pytest.fixture(scope="module")
def grader(coral_run):
    return load_grader(coral_run, device="cpu")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


SMALL = png(Image.new("RGB", (40, 30), (90, 140, 60)))
LARGE = png(Image.new("RGBA", (3000, 3000), (90, 140, 60, 200)))  # 36 MB decoded: large under a 100 MB budget


def test_large_photos_take_the_large_slots_and_small_ones_share_their_own_budget():
    pool = DecodePool(max_decode_mb=100, cores=3)
    try:
        assert pool.large_slots == 2
        with pool._reserve(40_000_000), pool._reserve(30_000_000):  # two large photos
            assert pool.in_use() == (2, 0)
            with pytest.raises(PoolFull, match=r"already decoding 2 large photo\(s\)"):
                with pool._reserve(13_000_000):
                    pass
            with ExitStack() as smalls:
                for _ in range(8):  # small photos still decode, up to the budget between them
                    smalls.enter_context(pool._reserve(12_000_000))
                assert pool.in_use() == (2, 96_000_000)
                with pytest.raises(PoolFull, match="decoding 96 MB of photos"):
                    with pool._reserve(12_000_000):
                        pass
        assert pool.in_use() == (0, 0)  # every reservation returned, refused ones too
    finally:
        pool.close()


def test_one_core_still_has_a_large_slot():
    pool = DecodePool(max_decode_mb=300, cores=1)
    assert (pool.large_slots, pool.threads) == (1, 3)
    pool.close()


def test_a_photo_over_the_decode_budget_is_a_400_naming_it_and_the_limit(grader):
    with TestClient(create_app(grader, limits=Limits(max_decode_mb=30))) as client:
        answer = client.post("/v1/grade", files=[("files", ("ok.png", SMALL)), ("files", ("bomb.png", LARGE))])
        assert client.get("/v1/model").json()["limits"]["max_decode_mb"] == 30
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error.startswith("bomb.png would take 38 MB of memory to decode (3000x3000 RGBA), over the 30 MB budget")


def test_a_large_photo_while_the_large_slots_are_taken_is_a_503_at_once_and_small_photos_still_grade(grader):
    app = create_app(grader, limits=Limits(max_decode_mb=100))
    pool: DecodePool = app.state.decode_pool
    with TestClient(app) as client:
        held = [pool._reserve(90_000_000) for _ in range(pool.large_slots)]
        for reservation in held:
            reservation.__enter__()
        try:
            started = time.perf_counter()
            busy = client.post("/v1/grade", files=[("files", ("large.png", LARGE))])
            waited = time.perf_counter() - started
            small = client.post("/v1/grade", files=[("files", ("small.png", SMALL))])
        finally:
            for reservation in held:
                reservation.__exit__(None, None, None)
        after = client.post("/v1/grade", files=[("files", ("large.png", LARGE))])
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    assert "large photo(s), its most at once: try again in a moment" in busy.json()["error"]
    assert waited < 5  # answered without decoding: nothing waits for a slot
    assert small.status_code == 200 and after.status_code == 200
    assert pool.in_use() == (0, 0)


def test_a_request_past_its_deadline_stops_decoding(grader):
    # 48 photos of 9 MP to composite: many seconds of decoding on any CPU, cut at 0.5 s
    app = create_app(grader, limits=Limits(request_timeout_s=0.5, max_upload_mb=100))
    pool: DecodePool = app.state.decode_pool
    costs, finished = [], threading.Event()
    reserve, decode_all = pool._reserve, pool._decode_all

    def counting_reserve(nbytes):
        costs.append(nbytes)
        return reserve(nbytes)

    def watched_decode_all(*args):
        try:
            return decode_all(*args)
        finally:
            finished.set()

    pool._reserve, pool._decode_all = counting_reserve, watched_decode_all
    with TestClient(app) as client:
        answer = client.post("/v1/grade", files=[("files", (f"p{i}.png", LARGE)) for i in range(48)])
        assert answer.status_code == 503 and "could not answer within 0.5 s" in answer.json()["error"]
        assert finished.wait(timeout=10)  # the thread saw the stop at its next 64 KB block or band of rows
    assert 1 <= len(costs) < 48 and pool.in_use() == (0, 0)
    assert costs == [decode_cost(LARGE, "p.png", grader.resize)] * len(costs)
