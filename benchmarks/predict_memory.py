"""Peak memory and photos/s of `imgrade predict` on folders of growing size, each with 5 broken photos.

Usage:
    python benchmarks/predict_memory.py [--photos 1000 20000] [--runtime onnx|torch] [--work DIR] [--docs docs]

For each ``--photos N`` it grades a folder of N synthetic cucumbers (32x32 PNG files, written once
into ``--work`` and shared with ``batch_grade.py``) and a folder of 5 broken files (PNGs and a JPEG
cut short, an empty file, a text file named .png), as a user types it:
``imgrade predict MODEL photos-N broken --out grades.csv``. The model is a 1-epoch reference run
exported to ONNX (``--runtime torch``: the run folder itself, graded with PyTorch). It checks what
the command must do (exit status 1, N graded rows and 5 error rows, one line on stderr), and prints
the wall time, photos/s and the peak resident memory of the command (its own ``ru_maxrss``, read
with ``os.wait4``), and the ratio of the largest folder's peak to the smallest's (goal: at most
1.2x: the rows are written as they are graded, so memory must not grow with the folder). With
``--docs DOCS`` the table goes to DOCS/results/predict_memory.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import batch_grade  # the shared photos and model (benchmarks/ modules import each other by name)
from PIL import Image

GOAL = 1.2
"""The largest folder's peak memory may be at most this multiple of the smallest's."""
BROKEN = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, nargs="+", default=[1000, 20000], help="folder sizes to grade")
    parser.add_argument("--runtime", choices=["onnx", "torch"], default="onnx", help="grade the .onnx file or the run")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "imgrade-bench-batch",
        help="folder for the photos and the model, kept for the next run (default: the one batch_grade.py uses)",
    )
    parser.add_argument("--docs", type=Path, default=None, help="write results/predict_memory.md under this folder")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    model = batch_grade._model(args.work)
    if args.runtime == "torch":
        model = args.work / "run"
    broken = _broken(args.work / "broken")
    results = []
    for n in sorted(args.photos):
        photos = batch_grade._photos(args.work / f"photos-{n}", n)
        out = args.work / f"predict-{n}.csv"
        seconds, peak_kb = _measure(["predict", str(model), str(photos), str(broken), "--out", str(out)], n)
        _check(out, n)
        results.append((n, seconds, peak_kb))

    rows = [
        f"| {n:,} + {BROKEN} broken | {seconds:.1f} | {(n + BROKEN) / seconds:,.0f} | {peak_kb / 1024:.0f} |"
        for n, seconds, peak_kb in results
    ]
    ratio = results[-1][2] / results[0][2]
    lines = [
        f"`imgrade predict` ({args.runtime} runtime, the reference network) on folders of synthetic 32x32 PNG "
        f"photos with {BROKEN} broken files each, rows to `--out grades.csv`, on {os.cpu_count()} CPU cores "
        f"(`benchmarks/predict_memory.py --photos {' '.join(map(str, sorted(args.photos)))} --runtime {args.runtime}`); "
        f"load average {load:.1f} when it started.",
        "",
        "| photos | seconds | photos/s | peak RSS (MB) |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"Peak memory of {results[-1][0]:,} photos / {results[0][0]:,} photos: {ratio:.2f}x "
        f"(goal: at most {GOAL}x: {'met' if ratio <= GOAL else 'NOT met'}).",
    ]
    print("\n".join(lines))
    if args.docs:
        out = args.docs / "results" / "predict_memory.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("# imgrade predict: memory and speed by folder size\n\n" + "\n".join(lines) + "\n")
        print(f"wrote {out}", file=sys.stderr)


def _broken(folder: Path) -> Path:
    """5 files that cannot be graded, each the way photos break in practice."""
    folder.mkdir(parents=True, exist_ok=True)
    png, jpeg = io.BytesIO(), io.BytesIO()
    picture = Image.new("RGB", (32, 32), (90, 140, 60))
    picture.save(png, format="PNG")
    picture.save(jpeg, format="JPEG")
    (folder / "cut-short.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (folder / "header-only.png").write_bytes(png.getvalue()[:40])
    (folder / "cut-short.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("a note saved with the photos, not a photo\n")
    return folder


def _measure(argv: list[str], n: int) -> tuple[float, int]:
    """Wall seconds and peak resident memory (kB) of one ``imgrade`` command, which must exit 1
    with one line on stderr: the photos that could not be graded."""
    print(f"running imgrade {' '.join(argv)}", file=sys.stderr)
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(batch_grade._imgrade(argv), stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)  # this command's own peak, not the largest child's so far
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        said = err.read()
    expected = f"imgrade: {BROKEN} of {n + BROKEN} photos could not be graded: see the error column of {argv[-1]}\n"
    if process.returncode != 1 or said != expected:
        sys.exit(f"imgrade {' '.join(argv)} exited {process.returncode}, expected 1 and {expected!r}; stderr:\n{said}")
    return seconds, usage.ru_maxrss  # kB on Linux


def _check(out: Path, n: int) -> None:
    """Every photo has its row: n graded, the broken ones with their error."""
    with out.open(newline="") as file:
        rows = list(csv.DictReader(file))
    failed = [row for row in rows if row["error"]]
    if len(rows) != n + BROKEN or len(failed) != BROKEN or any(row["score"] for row in failed):
        sys.exit(f"{out}: {len(rows)} rows with {len(failed)} errors, expected {n + BROKEN} with {BROKEN}")


if __name__ == "__main__":
    main()
