"""Peak memory and time of `imgrade predict` on each decoding bomb, and on entries that are not files.

Usage:
    python benchmarks/decode_bombs.py [MODEL] [--only NAME ...] [--work DIR] [--out docs/results/decode_bombs.md]

MODEL is a run folder, .pt or .onnx file; without one, the reference network is trained for
1 epoch on 60 synthetic cucumbers in a temporary folder (as serve_abuse.py does). The bombs
(bombs.py: small files that decode to just under imgrade's 64 MP limit, and one over it) are
written once into ``--work`` and reused. Each is graded alone, as a user types it,
``python -m imgrade predict MODEL FILE``, in a child process whose peak resident memory is read
exactly from ``os.wait4`` (its ``ru_maxrss``; imgrade's re-exec under tcmalloc keeps the process
id, and Linux keeps the peak across exec). First a normal 256x256 PNG: the baseline.

A watchdog polls the child's VmRSS (/proc/PID/status) every 20 ms and kills it above
``--rss-guard-mb`` (default 8000), or when it has run ``--timeout-s``: so a bomb cannot take
the machine down, and a kill counts as a failure. Then the entries that are not files
(``fifo.png``, ``zero.png`` -> /dev/zero, ``null.png`` -> /dev/null, ``sock.png``), each alone
and all four in one folder (``--entry-timeout-s``, default 60): through ``predict``, and
through the readers alone (``list_images`` then ``load_image`` in a bare Python, timed inside
it, so the start of Python and the model do not count).

Goals (issue 23): every bomb graded or refused with one line, its peak <= 300 MB above the
baseline's; every entry refused by predict, and by the readers within 1 s. Exits 1 if one is
missed. ``--out FILE.md`` also writes the tables as Markdown.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import bombs  # benchmarks/ modules import each other by name
import numpy as np
from PIL import Image

from imgrade.core.io import atomic_write

BUDGET_MB = 300
"""A bomb's peak may be at most this much above the baseline's."""
ENTRY_SECONDS = 1.0
"""The readers must refuse an entry that is not a file within this long."""
POLL_S = 0.02


@dataclass
class Result:
    """What one command did."""

    name: str
    outcome: str
    """"graded: GRADE", "refused: MESSAGE" or "FAILED: WHY" (a kill, a traceback, a crash)."""
    seconds: float
    peak_mb: float
    file_kb: float | None = None
    megapixels: float | None = None
    api: Result | None = None
    """For an entry that is not a file: the library's own time to the error (see ``PROBE``)."""

    @property
    def failed(self) -> bool:
        return self.outcome.startswith("FAILED")


@dataclass(frozen=True)
class Child:
    """A finished child process: how it ended and what it wrote."""

    returncode: int
    seconds: float
    peak_mb: float
    stdout: str
    stderr: str
    killed: str | None
    """Why the watchdog killed it, or None."""


def run_child(argv: list[str], *, timeout_s: float, guard_mb: float) -> Child:
    """Run ``argv`` under the watchdog; its wall time and exact peak resident memory."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        killed: list[str] = []
        done = threading.Event()
        watchdog = threading.Thread(target=_watch, args=(child.pid, start, timeout_s, guard_mb, done, killed))
        watchdog.start()
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak (KiB), not the largest child's so far
        seconds = time.perf_counter() - start
        done.set()
        watchdog.join()
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return Child(child.returncode, seconds, usage.ru_maxrss / 1024, stdout, stderr, killed[0] if killed else None)


def predict(model: Path, target: Path, *, timeout_s: float, guard_mb: float) -> Result:
    """``python -m imgrade predict MODEL TARGET``, as a user types it."""
    child = run_child(
        [sys.executable, "-m", "imgrade", "predict", str(model), str(target)], timeout_s=timeout_s, guard_mb=guard_mb
    )
    return Result(target.name, _outcome(child, target), child.seconds, child.peak_mb)


PROBE = """
import sys, time
from imgrade.data.images import list_images, load_image
start = time.perf_counter()
try:
    for path in list_images(sys.argv[1]):
        load_image(path, 32)
except Exception as error:
    print(f"{time.perf_counter() - start:.4f}", type(error).__name__, error)
else:
    print(f"{time.perf_counter() - start:.4f}", "no error")
"""
"""Times the library alone (the readers ``predict`` uses) from the entry to its error, without
the start of Python and the model: the issue's "within 1 s"."""


def probe(target: Path, *, timeout_s: float, guard_mb: float) -> Result:
    """``PROBE`` on ``target`` in a child process: its own seconds to the error, its answer."""
    child = run_child([sys.executable, "-c", PROBE, str(target)], timeout_s=timeout_s, guard_mb=guard_mb)
    if child.killed or child.returncode != 0 or not child.stdout.strip():
        return Result(target.name, _outcome(child, target), child.seconds, child.peak_mb)
    seconds, said = child.stdout.strip().split(" ", 1)
    outcome = "FAILED: read without an error" if said == "no error" else f"refused: {_short(said, target)}"
    return Result(target.name, outcome, float(seconds), child.peak_mb)


def _watch(pid: int, start: float, timeout_s: float, guard_mb: float, done: threading.Event, killed: list) -> None:
    """Kill ``pid`` when its resident memory passes ``guard_mb`` or it has run ``timeout_s``.

    Signals go through a pidfd, which names this process and never one that reuses its id.
    """
    pidfd = os.pidfd_open(pid)
    try:
        while not done.wait(POLL_S):
            rss_mb = bombs.status_kb(pid, "VmRSS") / 1024
            if rss_mb > guard_mb:
                killed.append(f"killed by the guard at {rss_mb:,.0f} MB resident (--rss-guard-mb {guard_mb:g})")
            elif time.perf_counter() - start > timeout_s:
                killed.append(f"no answer in {timeout_s:g} s (killed)")
            else:
                continue
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            return
    finally:
        os.close(pidfd)


def _outcome(child: Child, target: Path) -> str:
    """One line for the table: graded, refused (a CSV error row, or a one-line error with exit 2), or FAILED."""
    if child.killed:
        return "FAILED: " + child.killed
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    if "Traceback" in child.stderr or child.returncode not in (0, 1, 2):
        return f"FAILED: exit {child.returncode}: {_short(lines[-1] if lines else 'no message', target)}"
    if child.returncode == 2:
        return f"refused: {_short(lines[0] if lines else 'exit 2, no message', target)}"
    rows = list(csv.DictReader(io.StringIO(child.stdout)))
    errors = [row["error"] for row in rows if row.get("error")]
    if child.returncode == 1 and errors:
        more = f" (+{len(errors) - 1} more rows)" if len(errors) > 1 else ""
        return f"refused: {_short(errors[0], target)}{more}"
    if child.returncode == 0 and rows and not errors:
        return f"graded: {rows[0]['grade']}"
    return f"FAILED: exit {child.returncode}, {len(rows)} rows, {len(errors)} errors: {_short(child.stderr or child.stdout, target)}"


def _short(message: str, target: Path, limit: int = 110) -> str:
    """``message`` without the folder of ``target`` and cut at ``limit`` characters, for a table cell."""
    message = message.replace(str(target.parent) + os.sep, "").replace("|", "/").strip()
    return message if len(message) <= limit else message[: limit - 3] + "..."


def header(path: Path) -> tuple[float, float]:
    """The file's size in kB and the megapixels its header claims (nothing decoded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's own bomb warning, at 89 MP
        with Image.open(path) as image:
            width, height = image.size
    return path.stat().st_size / 1000, width * height / 1e6


def normal_png(folder: Path) -> Path:
    """A 256x256 RGB PNG of noise: the baseline's photo."""
    path = folder / "normal.png"
    if not path.is_file():
        pixels = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        with atomic_write(path) as file:
            Image.fromarray(pixels).save(file, format="PNG")
    return path


def measure(args: argparse.Namespace, model: Path) -> tuple[Result, list[Result], list[Result]]:
    """The baseline, the bombs and the entries named by ``args`` (all when ``--only`` is not given)."""
    only = set(args.only or [*bombs.BOMBS, *ENTRIES])
    run = functools.partial(predict, model, guard_mb=args.rss_guard_mb)
    normal = normal_png(args.work)
    run(normal, timeout_s=args.timeout_s)  # warms the disk cache: the baseline is not the first start
    baseline = run(normal, timeout_s=args.timeout_s)
    print(
        f"baseline {normal.name}: {baseline.outcome}, {baseline.seconds:.1f} s, {baseline.peak_mb:.0f} MB", flush=True
    )
    bomb_results = []
    for name in [name for name in bombs.BOMBS if name in only]:
        path = bombs.write_bomb(name, args.work / "bombs", args.side)
        result = run(path, timeout_s=args.timeout_s)
        result.name, (result.file_kb, result.megapixels) = name, header(path)
        print(f"{name}: {result.outcome}, {result.seconds:.1f} s, {result.peak_mb:.0f} MB", flush=True)
        bomb_results.append(result)
    entry_results = []
    if only & set(ENTRIES):
        entries = bombs.special_entries(args.work / "entries")
        targets = {**{name: path for name, path in entries.items() if name in only}, "folder": entries["fifo"].parent}
        for name, path in targets.items():
            if name in only:
                result = run(path, timeout_s=args.entry_timeout_s)
                result.name = path.name + ("/ (all four)" if name == "folder" else "")
                result.api = probe(path, timeout_s=args.entry_timeout_s, guard_mb=args.rss_guard_mb)
                print(
                    f"{result.name}: {result.outcome}, {result.seconds:.1f} s; "
                    f"library: {result.api.outcome}, {result.api.seconds:.3f} s",
                    flush=True,
                )
                entry_results.append(result)
    return baseline, bomb_results, entry_results


ENTRIES = (*bombs.SPECIAL_ENTRIES, "folder")
"""The entries that are not files, and "folder": the folder holding all four."""


def report(
    args: argparse.Namespace, baseline: Result, bomb_results: list[Result], entry_results: list[Result]
) -> tuple[str, bool]:
    """The Markdown tables and goal lines; and whether every goal was met."""
    lines = [
        f"`python -m imgrade predict MODEL FILE` on each file alone (`benchmarks/decode_bombs.py`), on "
        f"{os.cpu_count()} CPU cores, Python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.1f} at the end. "
        f"Peak RSS is the command's own `ru_maxrss`. Baseline: a normal 256x256 PNG, "
        f"{baseline.outcome}, {baseline.seconds:.1f} s, {baseline.peak_mb:.0f} MB.",
    ]
    met = not baseline.failed
    if bomb_results:
        lines += [
            "",
            "| bomb | file kB | decoded MP | outcome | wall s | peak RSS MB | above baseline MB |",
            "|---|---:|---:|---|---:|---:|---:|",
        ]
        for r in bomb_results:
            lines.append(
                f"| {r.name} ({bombs.BOMBS[r.name].what}) | {r.file_kb:,.0f} | {r.megapixels:.1f} | {r.outcome} | "
                f"{r.seconds:.1f} | {r.peak_mb:,.0f} | {r.peak_mb - baseline.peak_mb:+,.0f} |"
            )
        worst = max(bomb_results, key=lambda r: r.peak_mb)
        wrong = [
            r.name
            for r in bomb_results
            if r.failed or (bombs.BOMBS[r.name].over_limit and r.outcome.startswith("graded"))
        ]
        bombs_met = not wrong and worst.peak_mb - baseline.peak_mb <= BUDGET_MB
        met &= bombs_met
        lines += [
            "",
            f"Goal: every bomb graded or refused with one line, at most {BUDGET_MB} MB above the baseline: "
            f"{'met' if bombs_met else 'NOT met'} (worst: {worst.name}, {worst.peak_mb - baseline.peak_mb:+,.0f} MB"
            f"{'; wrong answers: ' + ', '.join(wrong) if wrong else ''}).",
        ]
    if entry_results:
        lines += [
            "",
            "Entries that are not files: `imgrade predict MODEL ENTRY`, and the readers alone "
            "(`list_images` then `load_image`, timed inside the process, without Python's and the model's start).",
            "",
            "| entry | predict: outcome | predict wall s | readers: outcome | readers s to the error |",
            "|---|---|---:|---|---:|",
        ]
        for r in entry_results:
            lines.append(f"| {r.name} | {r.outcome} | {r.seconds:.1f} | {r.api.outcome} | {r.api.seconds:.3f} |")
        slowest = max(entry_results, key=lambda r: r.api.seconds)
        wrong = [
            r.name
            for r in entry_results
            if not (r.outcome.startswith("refused") and r.api.outcome.startswith("refused"))
        ]
        entries_met = not wrong and slowest.api.seconds <= ENTRY_SECONDS
        met &= entries_met
        lines += [
            "",
            f"Goal: each entry refused by predict and by the readers within {ENTRY_SECONDS:g} s, nothing hangs "
            f"(killed after {args.entry_timeout_s:g} s): {'met' if entries_met else 'NOT met'} (slowest: {slowest.name}, "
            f"{slowest.api.seconds:.3f} s{'; not refused: ' + ', '.join(wrong) if wrong else ''}).",
        ]
    return "\n".join(lines), met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "model", nargs="?", type=Path, help="run folder, .pt or .onnx (default: a 1-epoch run trained here)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[*bombs.BOMBS, *ENTRIES],
        help="run these bombs or entries (the baseline always runs)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "imgrade-bench-bombs",
        help="folder for the bombs, kept for the next run",
    )
    parser.add_argument(
        "--side",
        type=int,
        default=bombs.FULL_SIDE,
        help=f"bombs' side in pixels (default {bombs.FULL_SIDE}: just under the limit)",
    )
    parser.add_argument(
        "--timeout-s", type=float, default=120.0, help="a bomb's command is killed after this long (default 120)"
    )
    parser.add_argument(
        "--entry-timeout-s", type=float, default=60.0, help="an entry's command is killed after this long (default 60)"
    )
    parser.add_argument(
        "--rss-guard-mb",
        type=float,
        default=8000.0,
        help="a command is killed above this resident memory (default 8000)",
    )
    parser.add_argument(
        "--out", type=Path, help="also write the tables to this Markdown file (e.g. docs/results/decode_bombs.md)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if model is None:
            import serve_abuse  # its 1-epoch reference run

            print("training the reference network for 1 epoch on 60 synthetic cucumbers", flush=True)
            model = serve_abuse.train_small_model(Path(scratch))
        baseline, bomb_results, entry_results = measure(args, model)
    text, met = report(args, baseline, bomb_results, entry_results)
    print(text)
    if args.out:
        with atomic_write(args.out, "w") as file:
            file.write("# imgrade predict on decoding bombs\n\n" + text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
