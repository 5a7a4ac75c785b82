"""Milliseconds to grade one photo, by runtime, inference threads and ONNX Runtime's thread spinning.

Usage:
    python benchmarks/serve_latency.py [--run RUN] [--repeats 2000] [--warmup 200] [--threads 1,2] [--busy N] [--rounds 3]

Each row is one grader of the same run, grading one photo per call through ``Engine.outputs``
(what the service's batcher calls when photos arrive one at a time):

- **eager PyTorch**: the run as ``predict`` grades it;
- **served**: what ``imgrade serve`` grades it with, ``Engine.for_serving`` (on a CPU: the run
  exported to ONNX in memory; the row says so should it fall back to eager PyTorch);
- **.onnx file**: the run written by ``imgrade export`` and loaded from disk.

Each grader runs with every ``--threads`` count (torch's threads, or ONNX Runtime's intra-op
threads), and the ONNX Runtime ones with their idle threads spinning and not
(``session.intra_op.allow_spinning``, ``session.inter_op.allow_spinning``). After ``--warmup``
calls, ``--repeats`` calls are timed one by one, in each of ``--rounds`` rounds over all rows: the
median and the 90th percentile in ms over every round, then each round's median (their spread
shows how steady the machine was).

Without ``--run`` it trains the reference network for one epoch on 300 synthetic cucumbers. The
photo is one synthetic cucumber of the run's image size. ``--busy N`` keeps N busy-looping Python
processes running meanwhile, as other work on a shared machine would. The load average at the
start is printed: anything else running skews every row. Nothing is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import torch

import imgrade
from imgrade.data.synthetic import generate_cucumbers
from imgrade.pipeline import export
from imgrade.runtime.grading import Engine
from imgrade.runtime.onnx_engine import OnnxEngine
from imgrade.runtime.torch_engine import TorchEngine

BUSY_LOOP = "while True: pass"


def latencies_ms(grader: Engine, photo: np.ndarray, warmup: int, repeats: int) -> np.ndarray:
    """Milliseconds of each of ``repeats`` single-photo calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        grader.outputs(photo)
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        grader.outputs(photo)
        times[i] = time.perf_counter() - start
    return times * 1000


def rows(threads: list[int]) -> list[tuple[str, int, bool | None]]:
    """(grader, threads, spinning) of each row; spinning is None for PyTorch, which has no such switch."""
    eager = [("eager PyTorch", count, None) for count in threads]
    onnx = [(kind, count, spin) for count in threads for spin in (True, False) for kind in ("served", ".onnx file")]
    return eager + onnx


def make_grader(kind: str, run: Path, onnx_file: Path, threads: int, spinning: bool | None) -> tuple[str, Engine]:
    """The row's name and its grader, made just before the row is measured (and dropped after it):
    no other grader's threads are then waiting for work."""
    torch.set_num_threads(threads)  # eager PyTorch's, and the served grader's check against it
    if kind == "eager PyTorch":
        return kind, TorchEngine.from_run(run, device="cpu")
    if kind == "served":
        served = TorchEngine.from_run(run, device="cpu").for_serving(threads=threads, spinning=spinning)
        return ("served (ONNX in memory)" if isinstance(served, OnnxEngine) else "served (eager fallback)"), served
    return kind, OnnxEngine.from_file(onnx_file, threads=threads, spinning=spinning)


def train_run(scratch: Path) -> Path:
    """A 1-epoch reference run (depth 29, regression) on 300 synthetic cucumbers."""
    data, run = scratch / "synth", scratch / "run"
    command = [sys.executable, "-m", "imgrade"]
    subprocess.run([*command, "-q", "data", "synth", "--out", str(data), "--n", "300"], check=True, timeout=300)
    subprocess.run([*command, "-q", "train", "--data", str(data), "--epochs", "1", "--out", str(run)], check=True)
    return run


@contextlib.contextmanager
def busy(processes: int) -> Iterator[None]:
    """``processes`` busy-looping Python processes (one thread each) for the duration of the ``with``."""
    started = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(processes)]
    try:
        if started:
            time.sleep(0.5)  # running before the first measurement
        yield
    finally:
        for process in started:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run folder or .pt (default: a 1-epoch reference run)")
    parser.add_argument("--repeats", type=int, default=2000, help="timed single-photo calls per row (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls before them (default 200)")
    parser.add_argument("--threads", default="1,2", help="inference thread counts, comma-separated (default 1,2)")
    parser.add_argument("--busy", type=int, default=0, help="busy-looping Python processes meanwhile (default 0)")
    parser.add_argument("--rounds", type=int, default=3, help="times each row is measured, interleaved (default 3)")
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    if args.repeats < 1 or args.rounds < 1 or args.warmup < 0 or args.busy < 0 or min(threads) < 1:
        parser.error("--repeats, --rounds and --threads must be at least 1, --warmup and --busy at least 0")

    load = os.getloadavg()[0]
    print(
        f"imgrade {imgrade.__version__}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{os.cpu_count()} cores, load average {load:.2f} at the start, {args.busy} busy processes"
    )
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or train_run(Path(scratch))
        onnx_file = Path(scratch) / "model.onnx"
        export(run, out=onnx_file)
        size = TorchEngine.from_run(run, device="cpu").image_size
        photo = generate_cucumbers(1, image_size=size, seed=0).imageset.images  # (1, S, S, 3) uint8
        print(f"run {run}, one {size}x{size} photo per call, {args.warmup} warm-up and {args.repeats} timed calls\n")
        print(f"{'grader':<26}{'threads':>8}{'spinning':>10}{'median ms':>11}{'p90 ms':>9}  median of each round")
        with busy(args.busy):
            measured: dict[tuple[str, int, bool | None], list[np.ndarray]] = {}
            names = {}
            for _ in range(args.rounds):  # rounds interleave the rows: a slow spell spreads over all of them
                for row in rows(threads):
                    names[row], grader = make_grader(row[0], run, onnx_file, row[1], row[2])
                    measured.setdefault(row, []).append(latencies_ms(grader, photo, args.warmup, args.repeats))
                    del grader  # an ONNX Runtime session's threads go with it
            for (kind, count, spinning), rounds in measured.items():
                median, p90 = np.percentile(np.concatenate(rounds), [50, 90])
                spins = "-" if spinning is None else ("on" if spinning else "off")
                each = " ".join(f"{np.median(r):.2f}" for r in rounds)
                print(f"{names[kind, count, spinning]:<26}{count:>8}{spins:>10}{median:>11.3f}{p90:>9.3f}  {each}")


if __name__ == "__main__":
    main()
