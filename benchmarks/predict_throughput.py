"""Images/s of the two grading runtimes at batch 1 and 256: PyTorch eager vs ONNX Runtime, on the CPU.

Usage:
    python benchmarks/predict_throughput.py [--run RUN] [--seconds 3] [--threads 0]

RUN defaults to a fresh 1-epoch run of the reference network (depth 29, regression) on 300
synthetic cucumbers, made in a temporary folder; any run folder works. Both runtimes go through
``Grader.outputs`` (what ``predict`` and ``serve`` call), on uint8 photos already decoded:
decoding and resizing are the same code for both and are left out. The ONNX file is exported from
the run first. Prints one line per (runtime, batch); nothing is kept.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _make_run(folder: Path) -> Path:
    data, run = folder / "synth", folder / "run"
    for argv in (["data", "synth", "--out", str(data), "--n", "300"], ["train", "--data", str(data), "--epochs", "1", "--out", str(run)]):
        subprocess.run([sys.executable, "-m", "imgrade", *argv], check=True, capture_output=True)
    return run


def _images_per_second(grader, images: np.ndarray, batch: int, seconds: float) -> tuple[float, float]:
    """(images/s, median ms per call) over calls of ``batch`` images for about ``seconds``."""
    chunk = images[:batch]
    grader.outputs(chunk, batch_size=batch)  # warm-up: allocations, kernel choice
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t0 = time.perf_counter()
        grader.outputs(chunk, batch_size=batch)
        times.append(time.perf_counter() - t0)
    return batch * len(times) / sum(times), 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="run folder (default: a fresh 1-epoch reference run on synthetic data)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="threads for both runtimes (default: all cores)")
    args = parser.parse_args()

    import torch

    from imgrade.data.synthetic import generate_cucumbers
    from imgrade.runtime import load_grader

    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else _make_run(Path(tmp))
        onnx_file = Path(tmp) / "model.onnx"
        subprocess.run([sys.executable, "-m", "imgrade", "export", str(run), "--out", str(onnx_file)], check=True, capture_output=True)
        graders = {"pytorch eager": load_grader(run, device="cpu"), "onnx runtime": load_grader(onnx_file, threads=threads)}
        images = generate_cucumbers(256, seed=1).imageset.images
        print(f"run: {run if args.run else 'fresh reference run (depth 29, regression)'}; torch {torch.__version__}, "
              f"onnxruntime {__import__('onnxruntime').__version__}, {threads} threads, {images.shape[1]}x{images.shape[2]} images")
        for batch in (1, 256):
            for name, grader in graders.items():
                rate, ms = _images_per_second(grader, images, batch, args.seconds)
                print(f"{name:<14} batch {batch:>3}: {rate:7.0f} images/s, {ms:7.2f} ms per call (median)")


if __name__ == "__main__":
    main()
