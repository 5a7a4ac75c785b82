"""Fixtures shared by the whole suite."""

import contextlib
import importlib
import os
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from imgrade.cli import main


@pytest.fixture(scope="session", autouse=True)
def _decoded_image_cache(tmp_path_factory):
    """Keep the decoded-image cache of folder/CSV sets out of the user's ~/.cache during tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGRADE_CACHE_DIR", str(tmp_path_factory.mktemp("imgrade-cache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def _no_bf16_check_at_export():
    """The tests' exports make no bf16 check, which on a CPU with bf16 units would load OpenVINO into
    this process: the tests marked ``openvino`` that check it ask for it."""
    patch = pytest.MonkeyPatch()
    patch.setattr("imgrade.pipeline.exporter.cpu_has_bf16", lambda: False)
    yield
    patch.undo()


@pytest.fixture(scope="session", autouse=True)
def _idle_cpu_for_thread_choice():
    """Runs choose their threads as on an idle machine, so two runs of one test train alike
    whatever else the machine does; tests of the choice itself patch this again."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("imgrade.core.threads.sample_busy_cores", lambda cpus: 0.0)
        patch.setattr("imgrade.core.siblings.others", lambda folder=None: 0)
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
def trained_onnx(trained_run, tmp_path_factory) -> Path:
    """``trained_run`` exported once for the tests that only read the file."""
    out = tmp_path_factory.mktemp("onnx") / "m.onnx"
    assert main(["export", str(trained_run), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def coral_run(tmp_path_factory, synth_dir) -> Path:
    """A 2-epoch CORAL run (depth 11) on the synthetic set: probabilities and APS grade sets."""
    run = tmp_path_factory.mktemp("runs") / "coral"
    assert (
        main(
            ["train", "--data", str(synth_dir), "--task", "coral", "--epochs", "2", "--depth", "11", "--out", str(run)]
        )
        == 0
    )
    return run


# benchmarks/ is not a package: its modules are imported by name, as they import each other
sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))
import serve_load  # noqa: E402  (its server helpers: a free port, waiting for /healthz, Ctrl+C)


@pytest.fixture(scope="session")
def imgrade_serve():
    """Start ``python -m imgrade serve`` on a free loopback port: ``with imgrade_serve(run, log, *flags, env=...) as url``.

    The server's stdout and stderr go to ``log`` (a file: a full pipe would block it). The block
    starts once /healthz answers; the test fails with the log if the server exits or stays silent
    for ``serve_load.HEALTH_TIMEOUT_S`` (120 s: it imports torch and loads the run, and 2 busy
    cores can be slow). Afterwards the server gets Ctrl+C, as a user would, then a kill.
    ``with_process=True`` yields (url, the server's Popen) instead.
    """

    @contextlib.contextmanager
    def start(run: Path, log: Path, *flags: str, env: dict | None = None, with_process: bool = False):
        port = serve_load.free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "imgrade", "serve", str(run), "--port", str(port), *flags],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                serve_load.wait_until_healthy(url, process)
            except SystemExit as failure:
                pytest.fail(f"imgrade serve: {failure}:\n{log.read_text()}")
            yield (url, process) if with_process else url
        finally:
            serve_load.stop(process)

    return start


SPECIAL_FILES = {
    "fifo": "a FIFO (named pipe)",
    "zero": "a link to a character device",
    "null": "a link to a character device",
    "socket": "a socket",
}
"""Entries that are not regular files, by kind -> what the one-line error calls them: a FIFO (opening it
waits for a writer), links to /dev/zero (endless) and /dev/null (empty), a Unix socket (cannot be opened)."""


@pytest.fixture(params=list(SPECIAL_FILES))
def special_kind(request) -> tuple[str, str]:
    """Each kind of SPECIAL_FILES in turn: (kind for ``special_file``, what the error calls it)."""
    return request.param, SPECIAL_FILES[request.param]


@pytest.fixture
def special_file():
    """``special_file(path, kind)`` creates ``path`` as a SPECIAL_FILES kind ("fifo", "zero", "null",
    "socket") and returns it."""

    def make(path: Path, kind: str) -> Path:
        if kind == "fifo":
            os.mkfifo(path)
        elif kind in ("zero", "null"):
            path.symlink_to(f"/dev/{kind}")
        else:  # bound from its folder: a socket's path may hold only ~100 bytes
            with contextlib.chdir(path.parent), socket.socket(socket.AF_UNIX) as unix:
                unix.bind(path.name)
        return path

    return make


@pytest.fixture
def within():
    """``with within(seconds):`` fails the test if the block is still running after ``seconds``, or
    if it maps more than ``memory`` bytes (default 2 GiB) beyond what the process has mapped.

    SIGALRM interrupts the main thread even in a blocking system call (an ``open`` of a FIFO that
    waits for a writer), so a reader that hangs fails its test instead of hanging the suite. A read
    of /dev/zero never blocks and fills the memory instead: the address-space limit (Linux) turns
    that into a MemoryError at once, not an OOM kill of the machine's biggest process.
    """

    @contextlib.contextmanager
    def limit(seconds: float, memory: int = 2 << 30):
        def stop(signum, frame):
            pytest.fail(f"still running after {seconds:g} s: a reader blocked or read without end")

        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        address_space = _cap_address_space(memory)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if address_space is not None:
                resource.setrlimit(resource.RLIMIT_AS, address_space)

    return limit


def _cap_address_space(extra: int) -> tuple[int, int] | None:
    """Limit this process's address space to what it maps now plus ``extra`` bytes; returns the
    previous limits, or None where /proc is absent (not Linux) and nothing was changed."""
    try:
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    except OSError:
        return None
    previous = resource.getrlimit(resource.RLIMIT_AS)
    cap = mapped + extra if previous[0] == resource.RLIM_INFINITY else min(previous[0], mapped + extra)
    resource.setrlimit(resource.RLIMIT_AS, (cap, previous[1]))
    return previous


@pytest.fixture
def idle_grader():
    """A grader with two grades that never grades: enough to build the service around it."""
    from imgrade.runtime.grading import Engine

    class Idle(Engine):
        runtime = "onnx"
        task = "regression"
        grade_names = ["L", "M"]
        image_size = 32
        calibration = None
        version = "test"

    return Idle()


@pytest.fixture
def interrupted_training(monkeypatch):
    """``with interrupted_training(): main(["train", ...])``: inside the block, a training stops with
    Ctrl+C (exit 130) right after writing its first epoch's history, as a user would stop it."""
    trainer = importlib.import_module("imgrade.pipeline.trainer")  # the module; `pipeline.train` is the function
    real_write = trainer.write_history

    def interrupt_after_one_epoch(path, history):
        real_write(path, history)
        if len(history) == 1:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def interrupting():
        monkeypatch.setattr(trainer, "write_history", interrupt_after_one_epoch)
        try:
            yield
        finally:
            monkeypatch.setattr(trainer, "write_history", real_write)

    return interrupting
