"""Peak memory of `imgrade train` on folder sets of growing size: decoded once, then memory-mapped.

Usage:
    python benchmarks/large_set.py [--sizes 20000,80000] [--depth 11] [--workers 2] [--keep DIR]

For each size N it writes N synthetic 32x32 cucumbers as PNG files into a class-folder tree (in
a temporary folder, or ``--keep DIR``), then runs ``imgrade train --epochs 1 --cache DIR
--workers 2`` twice in a child process: the first run decodes the photos into the cache, the
second memory-maps the cached file. Each run is the whole training path: split, mean image,
one epoch, validation, calibration and grade sets on the validation split.

Prints, per size: the decoded set's size, the decode time, and for each run the peak resident
memory of the child (ru_maxrss, which counts every page it mapped, page-cache pages of the
memory-mapped cache file included) and the peak of its anonymous memory (RssAnon, sampled every
20 ms: what the process itself allocated, which the kernel cannot drop). Cached file pages are
clean and are dropped when memory is short; anonymous memory that grows with N is what stops a
set larger than memory. ``--depth 11`` keeps one epoch on 80,000 photos to about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgrade.data.synthetic import generate_cucumbers, write_folders

SAMPLE_S = 0.02


def _write_photos(folder: Path, n: int) -> float:
    """Write ``n`` synthetic cucumbers as PNG class folders; returns the decoded size in MB."""
    synthetic = generate_cucumbers(n, image_size=32, seed=0)
    write_folders(synthetic, folder)
    return synthetic.imageset.images.nbytes / 1e6


def _anon_kb(pid: int) -> int:
    """The process's anonymous resident memory in kB (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^RssAnon:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def _train(data: Path, out: Path, cache: Path, depth: int, workers: int, log: Path) -> dict:
    """One `imgrade train` in a child process: wall time, peaks (MB) and its log."""
    argv = [sys.executable, "-m", "imgrade", "train", "--data", str(data), "--out", str(out), "--epochs", "1",
            "--depth", str(depth), "--workers", str(workers), "--cache", str(cache), "--seed", "0"]
    t0 = time.perf_counter()
    with log.open("wb") as stderr:  # a file, not a pipe: a full pipe would block the child
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
    peak_anon = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        peak_anon = max(peak_anon, _anon_kb(child.pid))
        time.sleep(SAMPLE_S)
    text = log.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"imgrade train failed:\n{text}")
    decoded = re.search(r"decoded [\d,]+ images with .* in ([\d.]+) s", text)
    return {
        "seconds": time.perf_counter() - t0,
        "rss_mb": usage.ru_maxrss / 1024,  # kB on Linux
        "anon_mb": peak_anon / 1024,
        "decode_s": float(decoded.group(1)) if decoded else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,80000", help="numbers of photos, comma-separated (default 20000,80000)")
    parser.add_argument("--depth", type=int, default=11, help="ResNet depth (default 11; 29 is the reference)")
    parser.add_argument("--workers", type=int, default=2, help="decoding worker processes (default 2)")
    parser.add_argument("--keep", help="write photos, cache and runs here and keep them (default: a temporary folder)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        print(f"imgrade train --epochs 1 --depth {args.depth} --workers {args.workers} --cache DIR; {os.cpu_count()} cores")
        print(f"{'N':>7} {'decoded MB':>10} {'decode s':>8} | {'run':<13} {'peak RSS MB':>11} {'peak anon MB':>12} {'wall s':>7}")
        for n in sizes:
            folder = root / f"photos-{n}"
            megabytes = _write_photos(folder, n)
            cache = root / f"cache-{n}"
            for k, what in enumerate(("1 (decode)", "2 (cache hit)")):
                result = _train(folder, root / f"run-{n}-{k + 1}", cache, args.depth, args.workers, root / f"run-{n}-{k + 1}.log")
                decode = f"{result['decode_s']:8.1f}" if result["decode_s"] is not None else f"{'':8}"
                print(
                    f"{n:>7} {megabytes:>10.0f} {decode} | {what:<13} {result['rss_mb']:>11.0f} {result['anon_mb']:>12.0f} "
                    f"{result['seconds']:>7.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
