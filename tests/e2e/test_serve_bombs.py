"""`imgrade serve` against decoding bombs: a real server on loopback refuses a photo over its decode
budget, and stops decoding a request the moment its deadline passes."""

from __future__ import annotations

import httpx
import pytest
import serve_abuse as kit  # benchmarks/: tests/conftest.py puts it on the path
import serve_bombs
from bombs import write_bomb

MAX_DECODE_MB = 50
REQUEST_TIMEOUT_S = 1.5


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory, imgrade_serve):
    log = tmp_path_factory.mktemp("serve-bombs") / "server.log"
    flags = (
        "--max-decode-mb",
        str(MAX_DECODE_MB),
        "--request-timeout-s",
        str(REQUEST_TIMEOUT_S),
        "--max-upload-mb",
        "20",
    )
    with imgrade_serve(trained_run, log, *flags, with_process=True) as (url, process):
        yield url, process, log


def test_a_photo_over_the_decode_budget_is_a_400_and_the_server_grades_on(server, tmp_path):
    url, _, log = server
    bomb = write_bomb("rgba", tmp_path, side=4000)  # 64 MB decoded, from a file of a few KB
    with httpx.Client(base_url=url, timeout=60) as client:
        refused = client.post("/v1/grade", files={"files": (bomb.name, bomb.read_bytes())})
        good = client.post("/v1/grade", files={"files": ("good.png", kit.good_png())})
    assert refused.status_code == 400
    assert refused.json()["error"].startswith(f"{bomb.name} would take 66 MB of memory to decode (4000x4000 RGBA)")
    assert f"over the {MAX_DECODE_MB} MB budget" in refused.json()["error"]
    assert good.status_code == 200 and "Traceback" not in log.read_text()


def test_a_request_past_its_deadline_stops_using_the_cpu(server, tmp_path):
    url, process, log = server
    grey = write_bomb("grey", tmp_path, side=4000)  # 16 MB decoded each: 64 of them take many seconds
    port = int(url.rsplit(":", 1)[1])
    target = kit.Target("127.0.0.1", port, "", REQUEST_TIMEOUT_S, 20_000_000, kit.good_png())
    checked = serve_bombs.cancel_check(target, process.pid, grey, wait_s=5)
    assert checked["files"] == 64 and checked["answer"] == "503"
    # within 5 s of the 503 the server is idle (under a tenth of a core for half a second); without
    # the stop it would decode on for the rest of the 64 photos
    assert checked["cpu_stops_s"] is not None, checked
    with httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/v1/grade", files={"files": ("good.png", kit.good_png())}).status_code == 200
    assert "Traceback" not in log.read_text()
