"""Photos/s of the whole `imgrade predict` command against the network's own rate, on this machine.

Usage:
    python benchmarks/predict_speed.py [--photos 20000] [--decode-threads 0 auto] [--work DIR] [--docs docs]

Uses the ``--photos`` synthetic cucumbers (32x32 PNG files) and the 1-epoch export of the reference
network that ``batch_grade.py`` writes into ``--work`` (made once, shared). All rows are measured in
one run, one after another, after one pass that reads every photo into the page cache:

- **the network alone**: ONNX Runtime fp32 (the .onnx file as ``load_grader`` loads it, its threads
  chosen as ``predict`` chooses them) grading the photos already decoded, 256 per call, as many
  photos as the folder holds;
- **the whole command** ``imgrade predict MODEL FOLDER --runtime onnx > grades.csv``, once per
  ``--decode-threads`` value (0: each batch decoded in the grading thread, one after the other;
  auto: the default, decoder threads working a batch or two ahead), each as a user types it;
- the same commands with ``--runtime openvino`` (bf16 on a CPU with bf16 units, else fp32) where
  OpenVINO is installed; the table says why they are missing otherwise.

Every row is photos/s and a ratio to the network alone. The commands of one runtime must write the
same text, byte for byte; OpenVINO's the same photos in the same order, scores within 0.25. The goal, on a CPU with AMX (where ``--runtime openvino`` computes in bf16): the whole
command at least 1.5x the network alone in ONNX Runtime fp32. The CPU's model and its bf16 flags are
printed with the table. With ``--docs DOCS`` the table goes to DOCS/results/predict_speed.md.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import batch_grade  # the shared photos and model (benchmarks/ modules import each other by name)
import numpy as np

GOAL = 1.5
"""On a CPU with AMX, the whole command must grade at least this multiple of ONNX Runtime fp32's own rate."""
CALL = 256
"""Photos per call of the network alone: what ``predict`` hands the grader at a time."""
SAMPLE = 2560
"""Photos decoded for the network alone; graded over and over up to the folder's count."""
SCORE_SLACK = 0.25
"""Scores of two runtimes may differ by this much (a quarter of a grade; OpenVINO in bf16 rounds)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=20000, help="synthetic photos to grade")
    parser.add_argument(
        "--decode-threads",
        nargs="+",
        default=["0", "auto"],
        metavar="N",
        help="predict --decode-threads values to time, 'auto' for the default (default: 0 auto)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "imgrade-bench-batch",
        help="folder for the photos and the model, kept for the next run (default: the one batch_grade.py uses)",
    )
    parser.add_argument("--docs", type=Path, default=None, help="write results/predict_speed.md under this folder")
    args = parser.parse_args()

    from imgrade.core.cpu import BF16_CPU_FLAGS, cpu_flags, cpu_model

    load = os.getloadavg()[0]
    n = args.photos
    photos = batch_grade._photos(args.work / f"photos-{n}", n)
    model = batch_grade._model(args.work)
    files = sorted(photos.rglob("*.png"))
    for file in files:  # every command below reads the photos from the page cache
        file.read_bytes()

    network = _network_rate(model, files, n)
    rows = [("ONNX Runtime fp32 alone, photos already decoded, 256 per call", network)]
    openvino_note = _openvino_missing()
    runtimes = ["onnx"] if openvino_note else ["onnx", "openvino"]
    reference = None
    for runtime in runtimes:
        first = None
        for threads in args.decode_threads:
            flags = ["--runtime", runtime] + ([] if threads == "auto" else ["--decode-threads", threads])
            out = args.work / f"speed-{runtime}-{threads}.csv"
            seconds, _ = batch_grade._timed(["predict", str(model), str(photos), *flags], stdout=out)
            first = _same_grades(first, out, n)  # decoding ahead changes no row
            reference = _same_grades(reference, out, n, exact=False)  # nor does the runtime, but for rounding
            what = {"0": "decoding in the grading thread", "auto": "default decoder threads"}.get(
                threads, f"--decode-threads {threads}"
            )
            rows.append(
                (f"`imgrade predict MODEL FOLDER --runtime {runtime}`{_precision(model, runtime)}, {what}", n / seconds)
            )

    bf16 = sorted(set(BF16_CPU_FLAGS) & cpu_flags())
    best = max(rate for _, rate in rows[1:])
    lines = [
        f"Grading {n:,} synthetic 32x32 PNG photos with the reference network exported to ONNX, on "
        f"{os.cpu_count()} CPU cores of an {cpu_model()} (bf16 flags: {', '.join(bf16) or 'none'}) "
        f"(`benchmarks/predict_speed.py --photos {n} --decode-threads {' '.join(args.decode_threads)}`); "
        f"load average {load:.1f} when it started"
        + (" (above the core count: other work shared the cores)." if load > (os.cpu_count() or 1) else "."),
        "",
        "| what | photos/s | / network alone |",
        "|---|---:|---:|",
        *[f"| {what} | {rate:,.0f} | {rate / network:.2f}x |" for what, rate in rows],
        "",
        f"Fastest whole command / ONNX Runtime fp32 alone: {best / network:.2f}x (goal on a CPU with AMX: at least "
        f"{GOAL}x; "
        + (f"{'met' if best / network >= GOAL else 'NOT met'})." if "amx_bf16" in bf16 else "this CPU has no AMX).")
        + ("" if openvino_note is None else f" No `--runtime openvino` row: {openvino_note}."),
    ]
    print("\n".join(lines))
    if args.docs:
        out = args.docs / "results" / "predict_speed.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("# imgrade predict: the whole command against the network alone\n\n" + "\n".join(lines) + "\n")
        print(f"wrote {out}", file=sys.stderr)


def _network_rate(model: Path, files: list[Path], n: int) -> float:
    """Photos/s of the .onnx file in ONNX Runtime fp32 on photos already decoded, ``CALL`` per call."""
    from imgrade.data.images import load_image
    from imgrade.runtime import load_grader

    grader = load_grader(model, runtime="onnx")
    sample = np.stack([load_image(path, grader.resize) for path in files[:SAMPLE]])
    calls = [sample[i : i + CALL] for i in range(0, len(sample), CALL)]
    grader.outputs(calls[0])  # the first call sets ONNX Runtime up
    graded, start = 0, time.perf_counter()
    while graded < n:
        images = calls[(graded // CALL) % len(calls)][: n - graded]
        grader.outputs(images)
        graded += len(images)
    return n / (time.perf_counter() - start)


def _openvino_missing() -> str | None:
    """Why ``--runtime openvino`` cannot be timed here, or None when it can."""
    try:
        from imgrade.runtime import RUNTIMES
        from imgrade.runtime.openvino_engine import openvino_available
    except ImportError as error:
        return f"this imgrade has no OpenVINO runtime ({error})"
    if "openvino" not in RUNTIMES:
        return "this imgrade has no OpenVINO runtime"
    if not openvino_available():
        return "OpenVINO is not installed (pip install 'imgrade[openvino]')"
    return None


def _precision(model: Path, runtime: str) -> str:
    """What OpenVINO computes in here (bf16 only on a CPU with bf16 units), for the row's name."""
    if runtime != "openvino":
        return ""
    from imgrade.runtime import load_grader

    return f" ({load_grader(model, runtime='openvino').precision})"


def _same_grades(first: Path | None, out: Path, n: int, exact: bool = True) -> Path:
    """``out`` grades all ``n`` photos as ``first`` does (exact: the same text; else the same photos in
    the same order, scores within ``SCORE_SLACK``: bf16 rounds); returns the file to check the next against."""
    if first is None:
        return out
    if exact:
        if out.read_bytes() != first.read_bytes():
            sys.exit(f"{out} differs from {first}: the decoder threads must not change a row")
        return first
    with first.open(newline="") as a, out.open(newline="") as b:
        left, right = list(csv.DictReader(a)), list(csv.DictReader(b))
    if len(right) != n or [r["image"] for r in left] != [r["image"] for r in right]:
        sys.exit(f"{out} does not hold the {n} photos of {first} in its order")
    worst = max(abs(float(x["score"]) - float(y["score"])) for x, y in zip(left, right))
    if worst > SCORE_SLACK:
        sys.exit(f"{out}: scores differ from {first} by up to {worst:.3f}")
    return first


if __name__ == "__main__":
    main()
