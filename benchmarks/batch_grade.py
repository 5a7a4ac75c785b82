"""Photos/s of `imgrade predict --engine ray` against plain `imgrade predict`, on this machine.

Usage:
    python benchmarks/batch_grade.py [--photos 20000] [--workers 2] [--work DIR] [--docs docs]

Writes ``--photos`` synthetic cucumbers (32x32 PNG files, one folder per grade) into ``--work``
once (kept for the next run), trains and exports a 1-epoch run of the reference network (the
weights do not change the speed), then grades the folder twice, each as a user types it:
``imgrade predict MODEL FOLDER > grades.csv`` (one process: ONNX Runtime on every core, photos
decoded one after another) and ``imgrade predict MODEL FOLDER --engine ray --workers N --out
grades.parquet`` (Ray started in the process, N actors, each decoding and grading its share on one
core). Both read the photos from the page cache, which the first pass warmed. It checks that the
two grade every photo alike, and prints photos/s of each (whole command; for Ray also the job
alone, without starting Ray), their ratio, and Ray's throughput per node: a cluster of N such
nodes grades about N times that, until reading the photos from shared storage limits it.
With ``--docs DOCS`` the table goes to DOCS/results/batch_grade.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 0.8
"""Ray's whole command must reach at least this fraction of the single process's photos/s."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=20000, help="synthetic photos to grade")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (and CPUs of the local Ray)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "imgrade-bench-batch",
        help="folder for the photos and the model, kept for the next run (default: in the temporary folder)",
    )
    parser.add_argument("--docs", type=Path, default=None, help="write results/batch_grade.md under this folder")
    args = parser.parse_args()

    load = os.getloadavg()[0]  # other work on the cores slows both engines, and not alike
    photos = _photos(args.work / f"photos-{args.photos}", args.photos)
    model = _model(args.work)
    plain_csv, ray_parquet = args.work / "plain.csv", args.work / "ray.parquet"
    plain_s, _ = _timed(["predict", str(model), str(photos)], stdout=plain_csv)
    ray_s, log = _timed(
        [
            "predict",
            str(model),
            str(photos),
            "--engine",
            "ray",
            "--workers",
            str(args.workers),
            "--out",
            str(ray_parquet),
        ]
    )
    job_s = float(re.search(r"Ray actors in ([0-9.]+) s", log).group(1))
    _check_same(plain_csv, ray_parquet, args.photos)

    n = args.photos
    plain, ray, job = n / plain_s, n / ray_s, n / job_s
    lines = [
        f"Grading {n:,} synthetic 32x32 PNG photos with the reference network exported to ONNX, on "
        f"{os.cpu_count()} CPU cores (`benchmarks/batch_grade.py --photos {n} --workers {args.workers}`); "
        f"load average {load:.1f} when it started"
        + (" (above the core count: other work shared the cores)." if load > (os.cpu_count() or 1) else "."),
        "",
        "| engine | seconds | photos/s |",
        "|---|---:|---:|",
        f"| `imgrade predict` (one process) | {plain_s:.1f} | {plain:,.0f} |",
        f"| `--engine ray --workers {args.workers}`, whole command | {ray_s:.1f} | {ray:,.0f} |",
        f"| `--engine ray`, the job alone (Ray already started) | {job_s:.1f} | {job:,.0f} |",
        "",
        f"Ray / one process: {ray / plain:.2f}x for the whole command, {job / plain:.2f}x for the job alone "
        f"(goal: at least {GOAL}x for the whole command: {'met' if ray / plain >= GOAL else 'NOT met'}).",
        "",
        f"Per node: {job:,.0f} photos/s on this {os.cpu_count()}-core node. A cluster of N such nodes grades "
        f"about N x {job:,.0f} photos/s, until reading the photos limits it: every photo is read from storage that "
        f"all nodes share, so the cluster can go no faster than that storage serves files (at about "
        f"{_mean_bytes(photos) / 1024:.1f} kB a photo here, {job * _mean_bytes(photos) / 1e6:.1f} MB/s per node; "
        "a full-size photo is a few MB, and decoding it then weighs more than grading it).",
    ]
    print("\n".join(lines))
    if args.docs:
        out = args.docs / "results" / "batch_grade.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("# Batch grading on Ray: photos/s\n\n" + "\n".join(lines) + "\n")
        print(f"wrote {out}", file=sys.stderr)


def _photos(folder: Path, n: int) -> Path:
    """``n`` synthetic cucumbers as PNG class folders, written once (``grades.txt`` marks them complete)."""
    if (folder / "grades.txt").is_file():
        return folder
    from imgrade.data.synthetic import generate_cucumbers, write_folders

    print(f"writing {n:,} synthetic photos to {folder} (once)", file=sys.stderr)
    return write_folders(generate_cucumbers(n, seed=0), folder)


def _model(work: Path) -> Path:
    """The reference network (1 epoch on 500 synthetic photos) exported to ONNX, made once."""
    model = work / "model.onnx"
    if model.is_file():
        return model
    data = work / "train-data"
    for verb in (
        ["data", "synth", "--out", str(data), "--n", "500"],
        ["train", "--data", str(data), "--epochs", "1", "--out", str(work / "run"), "--overwrite"],
        ["export", str(work / "run"), "--out", str(model)],
    ):
        subprocess.run(_imgrade([*verb, "-q"]), check=True)
    return model


def _imgrade(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "imgrade", *argv]


def _timed(argv: list[str], stdout: Path | None = None) -> tuple[float, str]:
    """Wall seconds of one ``imgrade`` command, and what it wrote on stderr."""
    print("running imgrade " + " ".join(argv), file=sys.stderr)
    start = time.perf_counter()
    with open(stdout or os.devnull, "w") as out:
        done = subprocess.run(_imgrade(argv), stdout=out, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"imgrade {' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    return seconds, done.stderr


def _check_same(plain_csv: Path, ray_parquet: Path, n: int) -> None:
    """Both engines graded every photo, alike."""
    import pyarrow.parquet as pq

    with plain_csv.open(newline="") as file:
        plain = {row["image"]: (row["score"], row["grade"]) for row in csv.DictReader(file)}
    ray = {r["image"]: (f"{r['score']}", r["grade"]) for r in pq.read_table(ray_parquet).to_pylist() if not r["error"]}
    if len(plain) != n or ray != plain:
        sys.exit(f"the engines disagree: {len(plain)} rows in one process, {len(ray)} on Ray, of {n} photos")


def _mean_bytes(folder: Path, sample: int = 500) -> float:
    files = sorted(folder.rglob("*.png"))[:sample]
    return sum(f.stat().st_size for f in files) / len(files)


if __name__ == "__main__":
    main()
