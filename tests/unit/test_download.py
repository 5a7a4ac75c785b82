"""Downloads against a real HTTP server on 127.0.0.1 (never the internet)."""

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from imgrade.core.errors import ConfigError, DataError
from imgrade.data.cucumber9 import read_cucumber9
from imgrade.data.cucumber9_writer import write_cucumber9, write_tar_gz
from imgrade.data.download import CUCUMBER9_URLS, download_cucumber9, download_file

P1_PATH = "/prototype_1/cucumber-9-python.tar.gz"
P2_PATH = "/prototype_2/cucumber-9-p2-python.tar.gz"


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes``: path -> bytes, or ("short", bytes) for a body cut below its length,
    or "hang" to answer nothing until the test ends."""

    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
        elif route == "hang":
            self.server.release.wait(10)
        else:
            short = isinstance(route, tuple)
            body = route[1] if short else route
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000 if short else len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.delenv("IMGRADE_CUCUMBER9_BASE_URL", raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.routes, httpd.release = {}, threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def archive_bytes(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 4, 4, 3), dtype=np.uint8)
    folder = write_cucumber9(
        tmp_path / "src" / "cucumber-9-python",
        images,
        np.array([0, 1, 2, 3]),
        ["2L", "BM", "BL", "M", "S", "L", "2S", "BS", "C"],
        num_batches=2,
    )
    return write_tar_gz(folder, tmp_path / "src" / "c.tar.gz").read_bytes()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_urls_of_the_published_archives():
    assert CUCUMBER9_URLS == {
        1: "https://github.com/workpiles/CUCUMBER-9/raw/master/prototype_1/cucumber-9-python.tar.gz",
        2: "https://github.com/workpiles/CUCUMBER-9/raw/master/prototype_2/cucumber-9-p2-python.tar.gz",
    }


def test_download_from_a_local_server_opens(server, archive_bytes, tmp_path):
    httpd, base_url = server
    httpd.routes[P1_PATH] = archive_bytes
    dest_dir = tmp_path / "downloads"
    path = download_cucumber9(1, dest_dir, base_url=base_url, timeout=5, progress=False)
    assert path == dest_dir / "cucumber-9-python.tar.gz"
    assert path.read_bytes() == archive_bytes
    assert len(read_cucumber9(path)) == 4
    assert sorted(p.name for p in dest_dir.iterdir()) == ["cucumber-9-python.tar.gz"]


def test_base_url_from_the_environment(server, archive_bytes, tmp_path, monkeypatch):
    httpd, base_url = server
    httpd.routes[P2_PATH] = archive_bytes
    monkeypatch.setenv("IMGRADE_CUCUMBER9_BASE_URL", base_url + "/")
    path = download_cucumber9(2, tmp_path, timeout=5, progress=False)
    assert path == tmp_path / "cucumber-9-p2-python.tar.gz" and path.is_file()


def test_not_found_says_how_to_download_by_hand(server, tmp_path):
    _, base_url = server
    dest_dir = tmp_path / "downloads"
    with pytest.raises(DataError) as info:
        download_cucumber9(1, dest_dir, base_url=base_url, timeout=5, progress=False)
    url = base_url + P1_PATH
    dest = dest_dir / "cucumber-9-python.tar.gz"
    assert str(info.value) == (
        f"could not download {url} (HTTP 404 Not Found). Download it by hand from {url} "
        f"and save it as {dest}, then use --data {dest}"
    )
    assert list(dest_dir.iterdir()) == []


def test_connection_refused(tmp_path):
    with pytest.raises(DataError, match=r"could not download .*Download it by hand from .*--data"):
        download_cucumber9(1, tmp_path, base_url=f"http://127.0.0.1:{closed_port()}", timeout=2, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_archive_is_removed_and_an_existing_one_kept(server, tmp_path):
    httpd, base_url = server
    httpd.routes[P1_PATH] = b"\x1f\x8b this is not a tarball"
    existing = tmp_path / "cucumber-9-python.tar.gz"
    existing.write_bytes(b"an earlier download")
    with pytest.raises(DataError, match="is not a CUCUMBER-9 archive.*removed it. Download it by hand") as info:
        download_cucumber9(1, tmp_path, base_url=base_url, timeout=5, progress=False)
    assert "\n" not in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["cucumber-9-python.tar.gz"]
    assert existing.read_bytes() == b"an earlier download"


def test_download_file_writes_the_body(server, tmp_path):
    httpd, base_url = server
    httpd.routes["/x"] = b"hello" * 1000
    dest = download_file(base_url + "/x", tmp_path / "x.bin", timeout=5, progress=False)
    assert dest.read_bytes() == b"hello" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_short_body_leaves_nothing_behind(server, tmp_path):
    httpd, base_url = server
    httpd.routes["/x"] = ("short", b"0123456789")
    (tmp_path / "x.bin").write_bytes(b"old")
    with pytest.raises(DataError, match=r"connection closed after 10 of 1010 bytes"):
        download_file(base_url + "/x", tmp_path / "x.bin", timeout=5, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]
    assert (tmp_path / "x.bin").read_bytes() == b"old"


def test_silent_server_times_out(server, tmp_path):
    httpd, base_url = server
    httpd.routes["/x"] = "hang"
    with pytest.raises(DataError, match="could not download"):
        download_file(base_url + "/x", tmp_path / "x.bin", timeout=0.3, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_url_and_prototype(tmp_path):
    with pytest.raises(DataError, match="could not download"):
        download_file("not a url", tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="prototypes 1 and 2"):
        download_cucumber9(3, tmp_path)


def test_cli_download_then_info(server, archive_bytes, tmp_path, capsys):
    from imgrade.cli import main

    httpd, base_url = server
    httpd.routes[P1_PATH] = archive_bytes
    assert (
        main(
            ["data", "download", "cucumber9", "--prototype", "1", "--dest", str(tmp_path / "d"), "--base-url", base_url]
        )
        == 0
    )
    archive = tmp_path / "d" / "cucumber-9-python.tar.gz"
    assert archive.is_file() and f"train with: imgrade train --data {archive}" in capsys.readouterr().err
    assert main(["data", "info", str(archive)]) == 0
    assert "images:     4" in capsys.readouterr().out


def test_cli_download_offline_is_one_clear_line(tmp_path, capsys):
    import time

    from imgrade.cli import main

    t0 = time.monotonic()
    code = main(
        ["data", "download", "cucumber9", "--dest", str(tmp_path), "--base-url", f"http://127.0.0.1:{closed_port()}"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and time.monotonic() - t0 < 10
    assert len(err.splitlines()) == 1 and "Download it by hand" in err and "cucumber-9-python.tar.gz" in err
    assert list(tmp_path.iterdir()) == []
