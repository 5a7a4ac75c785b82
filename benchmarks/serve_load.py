"""Load test of `imgrade serve`: requests/s and latency of POST /v1/grade from concurrent clients.

Usage:
    python benchmarks/serve_load.py [MODEL] [--requests 2000] [--clients 16] [--timeout 300]

MODEL is a run folder, .pt or .onnx file; without one, the reference network (depth 29) is
trained for 1 epoch on 300 synthetic cucumbers in a temporary folder and exported to ONNX. The server runs as a real subprocess
(`python -m imgrade serve MODEL --port FREE`) on loopback; each request uploads one pre-encoded
32x32 PNG. Prints requests/s, p50/p99 latency, errors and the server's mean batch size (from
GET /v1/stats), then stops the server. Exits 1 if any request failed or the run timed out.
"""

from __future__ import annotations

import argparse
import io
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

WARM_UP_REQUESTS = 32
HEALTH_TIMEOUT_S = 120


@dataclass
class Tally:
    """What the clients saw; shared by the client threads under ``lock``."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, total: int) -> bool:
        """Claim the next request to send; False once ``total`` have been claimed."""
        with self.lock:
            if self.sent >= total:
                return False
            self.sent += 1
            return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", nargs="?", help="run folder, .pt or .onnx (default: a 1-epoch reference run, exported to ONNX)"
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole load phase")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or train_reference_model(Path(scratch))
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "imgrade", "serve", str(model), "--port", str(port)])
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_healthy(base_url, server)
            return run_load(base_url, args.requests, args.clients, args.timeout)
        finally:
            stop(server)


def train_reference_model(scratch: Path) -> Path:
    """A 1-epoch reference run (depth 29, regression) on 300 synthetic cucumbers, as ONNX."""
    data, run = scratch / "synth", scratch / "run"
    imgrade = [sys.executable, "-m", "imgrade"]
    subprocess.run([*imgrade, "data", "synth", "--out", str(data), "--n", "300"], check=True, timeout=300)
    subprocess.run(
        [*imgrade, "train", "--data", str(data), "--epochs", "1", "--out", str(run)], check=True, timeout=600
    )
    model = scratch / "model.onnx"
    subprocess.run([*imgrade, "export", str(run), "--out", str(model)], check=True, timeout=300)
    return model


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_healthy(base_url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode} before answering /healthz")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not answer /healthz within {HEALTH_TIMEOUT_S} s")


def run_load(base_url: str, total: int, clients: int, timeout_s: float) -> int:
    """Send ``total`` requests from ``clients`` threads, print the figures; the exit code."""
    image = encode_png(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    with httpx.Client(base_url=base_url, timeout=30.0) as warm:
        for _ in range(WARM_UP_REQUESTS):
            warm.post("/v1/grade", files={"files": ("warm.png", image)}).raise_for_status()
        before = warm.get("/v1/stats").json()

    tally = Tally()
    deadline = time.monotonic() + timeout_s
    threads = [threading.Thread(target=client, args=(base_url, image, total, deadline, tally)) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start

    with httpx.Client(base_url=base_url, timeout=30.0) as last:
        after = last.get("/v1/stats").json()
    passes = after["forward_passes"] - before["forward_passes"]
    images = after["images"] - before["images"]
    unsent = total - tally.sent
    latencies = np.array(tally.latencies_ms)
    p50, p99 = np.percentile(latencies, [50, 99]) if len(latencies) else (float("nan"), float("nan"))
    print(f"{total} requests of one 32x32 PNG from {clients} clients on loopback in {seconds:.1f} s")
    print(
        f"requests/s {len(latencies) / seconds:.1f}  latency p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
        f"errors {len(tally.errors)}  not sent (timeout) {unsent}"
    )
    print(
        f"server: {passes} forward passes, mean batch {images / max(passes, 1):.2f} images, largest {after['largest_batch']}"
    )
    for error in tally.errors[:5]:
        print(f"  error: {error}")
    return 1 if tally.errors or unsent else 0


def client(base_url: str, image: bytes, total: int, deadline: float, tally: Tally) -> None:
    """One client: one request at a time until ``total`` are claimed or the deadline passes."""
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        while time.monotonic() < deadline and tally.take(total):
            problem, elapsed_ms = timed_grade(http, {"files": ("item.png", image)}, one_result)
            with tally.lock:
                if problem:
                    tally.errors.append(problem)
                else:
                    tally.latencies_ms.append(elapsed_ms)


def one_result(response: httpx.Response) -> str | None:
    """None for a 200 with one record, else what is wrong."""
    if response.status_code == 200 and len(response.json()["results"]) == 1:
        return None
    return f"HTTP {response.status_code}: {response.text[:200]}"


def timed_grade(
    http: httpx.Client, files: dict, judge: Callable[[httpx.Response], str | None]
) -> tuple[str | None, float]:
    """POST ``files`` to /v1/grade: (what ``judge`` or the transport found wrong, or None; milliseconds)."""
    start = time.perf_counter()
    try:
        problem = judge(http.post("/v1/grade", files=files))
    except httpx.HTTPError as error:
        problem = f"{type(error).__name__}: {error}"
    return problem, (time.perf_counter() - start) * 1000


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def stop(server: subprocess.Popen) -> None:
    """Ctrl+C, as a user would; kill it if it has not stopped after 15 s."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
