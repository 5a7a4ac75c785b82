"""Fixtures shared by the whole suite."""

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from imgrade.cli import main


@pytest.fixture(scope="session", autouse=True)
def _decoded_image_cache(tmp_path_factory):
    """Keep the decoded-image cache of folder/CSV sets out of the user's ~/.cache during tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGRADE_CACHE_DIR", str(tmp_path_factory.mktemp("imgrade-cache")))
        yield


@pytest.fixture
def shared_dir() -> Path:
    """The ../shared folder beside the repository (real CUCUMBER-9 samples); skips where absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared"
    if not path.is_dir():
        pytest.skip("../shared is absent: the real CUCUMBER-9 sample lives there")
    return path


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """90 synthetic cucumbers in the CUCUMBER-9 on-disk format (10 per grade on average)."""
    out = tmp_path_factory.mktemp("data") / "synth"
    assert main(["data", "synth", "--out", str(out), "--n", "90", "--seed", "1"]) == 0
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synth_dir) -> Path:
    """A 2-epoch run of the reference network on the synthetic set."""
    run = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--data", str(synth_dir), "--epochs", "2", "--out", str(run), "--seed", "0"]) == 0
    return run


@pytest.fixture(scope="session")
def coral_run(tmp_path_factory, synth_dir) -> Path:
    """A 2-epoch CORAL run (depth 11) on the synthetic set: probabilities and APS grade sets."""
    run = tmp_path_factory.mktemp("runs") / "coral"
    assert main(["train", "--data", str(synth_dir), "--task", "coral", "--epochs", "2", "--depth", "11", "--out", str(run)]) == 0
    return run


SERVER_START_S = 120  # imports torch and loads the run: seconds, but 2 busy cores can be slow


@pytest.fixture(scope="session")
def imgrade_serve():
    """Start ``python -m imgrade serve`` on a free loopback port: ``with imgrade_serve(run, log, *flags, env=...) as url``.

    The server's stdout and stderr go to ``log`` (a file: a full pipe would block it). The block
    starts once /healthz answers; the test fails with the log if the server exits or stays silent
    for ``SERVER_START_S``. Afterwards the server gets Ctrl+C, as a user would, then a kill.
    """

    @contextlib.contextmanager
    def start(run: Path, log: Path, *flags: str, env: dict | None = None):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "imgrade", "serve", str(run), "--port", str(port), *flags],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + SERVER_START_S
            while True:
                if process.poll() is not None:
                    pytest.fail(f"imgrade serve exited with {process.returncode} before /healthz answered:\n{log.read_text()}")
                try:
                    with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"imgrade serve did not answer /healthz within {SERVER_START_S}s:\n{log.read_text()}")
                time.sleep(0.2)
            yield url
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    return start
