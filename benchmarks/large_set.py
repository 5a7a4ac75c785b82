"""Peak memory of `imgrade train` on folder sets of growing size: decoded once, then memory-mapped.

Usage:
    python benchmarks/large_set.py [--sizes 20000,80000] [--depth 11] [--workers 2] [--keep DIR]
    sudo python benchmarks/large_set.py --sizes 80000 --memory-limit 900   # the cache-hit run capped at 900 MB

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

``--memory-limit MB`` (root, Linux) runs the second run of each size in a memory cgroup of that
size (cgroup v1 ``memory`` or v2 ``memory.max``; no swap here), the way a container or a batch
scheduler caps a job: page-cache pages of the mapped file count against the cap and are
reclaimed, anonymous memory is not. The page cache is dropped first (``/proc/sys/vm/drop_caches``)
so that the file's pages are read, and charged, inside the cap, not left over from the first run. The last column says whether the run finished under the
cap or was killed for memory, and the cgroup's own peak charge.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
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


def memory_cgroup(name: str, megabytes: int) -> tuple[Path, Path]:
    """A fresh memory cgroup capped at ``megabytes``: (its cgroup.procs, the file with its peak charge in bytes).

    cgroup v1's ``memory`` hierarchy where it is mounted, else v2's at /sys/fs/cgroup.
    """
    v1, v2 = Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")
    controllers = v2 / "cgroup.controllers"
    if (v1 / "memory.limit_in_bytes").is_file():
        folder, limit, peak = v1 / name, "memory.limit_in_bytes", "memory.max_usage_in_bytes"
    elif controllers.is_file() and "memory" in controllers.read_text().split():
        folder, limit, peak = v2 / name, "memory.max", "memory.peak"
    else:
        sys.exit("--memory-limit: this machine has no cgroup memory controller at /sys/fs/cgroup: run without it")
    try:
        if folder.exists():
            folder.rmdir()  # an earlier run's (empty once its process is gone): start from a zero peak
        folder.mkdir()
        (folder / limit).write_text(str(megabytes * 2**20))
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1")  # a page is charged to the cgroup that reads it in
    except OSError as e:
        sys.exit(
            f"--memory-limit: cannot make the cgroup {folder} ({e.strerror}): run as root, or without --memory-limit"
        )
    return folder / "cgroup.procs", folder / peak


def _train(
    data: Path, out: Path, cache: Path, depth: int, workers: int, log: Path, cgroup: tuple[Path, Path] | None = None
) -> dict:
    """One `imgrade train` in a child process (in ``cgroup`` when given): wall time, peaks (MB) and its log."""
    argv = [
        sys.executable,
        "-m",
        "imgrade",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--depth",
        str(depth),
        "--workers",
        str(workers),
        "--cache",
        str(cache),
        "--seed",
        "0",
    ]

    def join() -> None:  # in the child, before it runs Python: everything it maps is charged to the cgroup
        cgroup[0].write_text(str(os.getpid()))

    t0 = time.perf_counter()
    with log.open("wb") as stderr:  # a file, not a pipe: a full pipe would block the child
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=join if cgroup else None)
    peak_anon = 0
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        peak_anon = max(peak_anon, _anon_kb(child.pid))
        time.sleep(SAMPLE_S)
    text = log.read_text()
    code = os.waitstatus_to_exitcode(status)
    killed = cgroup is not None and code == -signal.SIGKILL  # the cgroup's OOM killer
    if code != 0 and not killed:
        sys.exit(f"imgrade train failed:\n{text}")
    decoded = re.search(r"decoded [\d,]+ images with .* in ([\d.]+) s", text)
    result = {
        "seconds": time.perf_counter() - t0,
        "rss_mb": usage.ru_maxrss / 1024,  # kB on Linux
        "anon_mb": peak_anon / 1024,
        "decode_s": float(decoded.group(1)) if decoded else None,
        "capped": None
        if cgroup is None
        else ("killed" if killed else "finished") + f", peak {int(cgroup[1].read_text()) / 2**20:.0f} MB",
    }
    if cgroup is not None:
        with contextlib.suppress(OSError):
            cgroup[0].parent.rmdir()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="20000,80000", help="numbers of photos, comma-separated (default 20000,80000)"
    )
    parser.add_argument("--depth", type=int, default=11, help="ResNet depth (default 11; 29 is the reference)")
    parser.add_argument("--workers", type=int, default=2, help="decoding worker processes (default 2)")
    parser.add_argument("--keep", help="write photos, cache and runs here and keep them (default: a temporary folder)")
    parser.add_argument(
        "--memory-limit", type=int, metavar="MB", help="run each cache-hit run in a memory cgroup of MB (root)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        print(
            f"imgrade train --epochs 1 --depth {args.depth} --workers {args.workers} --cache DIR; {os.cpu_count()} cores"
        )
        capped = f"  under {args.memory_limit} MB" if args.memory_limit else ""
        print(
            f"{'N':>7} {'decoded MB':>10} {'decode s':>8} | {'run':<13} {'peak RSS MB':>11} {'peak anon MB':>12} {'wall s':>7}{capped}"
        )
        for n in sizes:
            folder = root / f"photos-{n}"
            megabytes = _write_photos(folder, n)
            cache = root / f"cache-{n}"
            for k, what in enumerate(("1 (decode)", "2 (cache hit)")):
                cgroup = memory_cgroup("imgrade-large-set", args.memory_limit) if args.memory_limit and k == 1 else None
                result = _train(
                    folder,
                    root / f"run-{n}-{k + 1}",
                    cache,
                    args.depth,
                    args.workers,
                    root / f"run-{n}-{k + 1}.log",
                    cgroup,
                )
                decode = f"{result['decode_s']:8.1f}" if result["decode_s"] is not None else f"{'':8}"
                print(
                    f"{n:>7} {megabytes:>10.0f} {decode} | {what:<13} {result['rss_mb']:>11.0f} {result['anon_mb']:>12.0f} "
                    f"{result['seconds']:>7.0f}" + (f"  {result['capped']}" if result["capped"] else ""),
                    flush=True,
                )


if __name__ == "__main__":
    main()
