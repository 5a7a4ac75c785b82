"""Training and grading with a CPU that other work shares, each as a share of its speed alone.

Usage:
    python benchmarks/contention.py [--photos 2000] [--epochs 2] [--grade-photos 8000] [--repeats 3]
        [--flags "--threads 2 --amp off"] [--env GOMP_SPINCOUNT=300000] [--only train,pair,grade]
        [--docs docs/results/contention.md]

Every measurement runs the ``imgrade`` command as a user would, with default settings unless
``--flags`` (added to ``train``) or ``--env`` (added to the environment) say otherwise:

- **train**: ``imgrade train`` on ``--photos`` synthetic cucumbers for ``--epochs``, alone and beside
  one busy Python thread. Speed is photos trained per second of the epochs (history.csv), so the
  start-up and the reports after training do not blur it.
- **pair**: two identical trainings started together, against two run one after the other: the
  wall time until both have finished, as a multiple of the sequential time.
- **grade**: ``imgrade predict`` of a run on ``--grade-photos`` PNG photos, alone, beside one busy thread
  and beside a training; speed is photos per second of the command's wall time.

Each line is the median of ``--repeats`` measurements with the range in brackets; the thread
count and precision each training chose (its config.yaml) are printed with it. The machine should
have nothing else to do while this runs: the load average at the start is printed.
``--flags "--threads 2 --amp off" --env GOMP_SPINCOUNT=300000`` gives the settings of an imgrade
that did not choose (every core, fp32, libgomp's default spinning).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from imgrade.core.io import write_text

BUSY_LOOP = "while True: pass"


def _imgrade(*args: str) -> list[str]:
    return [sys.executable, "-m", "imgrade", *args]


class Bench:
    def __init__(
        self, work: Path, photos: Path, graded: Path, n_graded: int, epochs: int, flags: list[str], env: dict[str, str]
    ):
        self.work, self.photos, self.graded, self.n_graded = work, photos, graded, n_graded
        self.epochs, self.flags = epochs, flags
        self.env = {**os.environ, **env}
        self.count = 0

    def start_training(self, out: Path) -> subprocess.Popen:
        command = _imgrade("train", "--data", str(self.photos), "--epochs", str(self.epochs), "--out", str(out))
        return subprocess.Popen(
            [*command, "--seed", "0", *self.flags],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=(self.work / f"{out.name}.log").open("w"),
        )

    def new_run(self) -> Path:
        self.count += 1
        out = self.work / f"run{self.count}"
        shutil.rmtree(out, ignore_errors=True)
        return out

    def train(self) -> tuple[float, float, str]:
        """(photos per second of the epochs, wall seconds, what the run chose)."""
        out = self.new_run()
        t0 = time.perf_counter()
        if self.start_training(out).wait() != 0:
            raise SystemExit(f"training failed: see {self.work / (out.name + '.log')}")
        return _epoch_rate(out), time.perf_counter() - t0, _choice(out)

    def pair(self) -> tuple[float, list[str]]:
        """Wall seconds until two trainings started together have both finished, and their choices."""
        outs = [self.new_run(), self.new_run()]
        t0 = time.perf_counter()
        runs = [self.start_training(out) for out in outs]
        if any(run.wait() != 0 for run in runs):
            raise SystemExit(f"a training failed: see the logs in {self.work}")
        return time.perf_counter() - t0, [_choice(out) for out in outs]

    def grade(self, run: Path) -> float:
        """Photos per second of ``imgrade predict`` (the whole command)."""
        t0 = time.perf_counter()
        done = subprocess.run(
            _imgrade("predict", str(run), str(self.graded)), env=self.env, stdout=subprocess.DEVNULL, text=True
        )
        if done.returncode != 0:
            raise SystemExit("predict failed")
        return self.n_graded / (time.perf_counter() - t0)


def _epoch_rate(run: Path) -> float:
    """Training photos per second of the epochs (history.csv's seconds; the split from split.json)."""
    with (run / "history.csv").open() as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    n_train = len(json.loads((run / "split.json").read_text())["train"])
    return n_train * len(seconds) / sum(seconds)


def _choice(run: Path) -> str:
    train = yaml.safe_load((run / "config.yaml").read_text())["train"]
    return f"{train['threads']} thread{'s' if train['threads'] != 1 else ''}, amp {train['amp']}"


class Busy:
    """One busy-looping Python process (a single thread) for the duration of the ``with``."""

    def __enter__(self):
        self.process = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        time.sleep(0.5)  # running before the measured command starts
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


class Training:
    """A training in the background for the duration of the ``with``."""

    def __init__(self, bench: Bench):
        self.bench = bench

    def __enter__(self):
        self.process = self.bench.start_training(self.bench.new_run())
        time.sleep(8.0)  # past its start-up: training when the measured command starts
        return self

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait()


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000, help="synthetic photos to train on (default 2000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--grade-photos", type=int, default=8000, help="photos predict grades (default 8000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flags", default="", help='extra train flags, e.g. "--threads 2 --amp off"')
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment")
    parser.add_argument("--docs", type=Path, default=None, help="also write the table as Markdown to this file")
    parser.add_argument("--only", default="train,pair,grade", help="which measurements (default all three)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "imgrade-bench-contention",
        help="folder for the photos and runs; the photos are kept for the next run",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    env = dict(item.split("=", 1) for item in args.env)
    args.work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    photos = _synth(args.work / f"train-{args.photos}", args.photos, seed=1)
    graded = _synth(args.work / f"grade-{args.grade_photos}", args.grade_photos, seed=2, layout="folders")
    bench = Bench(args.work, photos, graded, args.grade_photos, args.epochs, shlex.split(args.flags), env)
    print(
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the start; train {args.photos} photos x {args.epochs} "
        f"epochs; flags {args.flags or '(defaults)'}; env {' '.join(args.env) or '(none)'}; {args.repeats} repeats",
        flush=True,
    )
    rows = []
    alone_wall: list[float] = []
    if only & {"train", "pair"}:
        alone = [bench.train() for _ in range(args.repeats)]
        alone_rate, alone_wall = [a[0] for a in alone], [a[1] for a in alone]
        rows.append(("train alone (photos/s)", _summary(alone_rate), "100%", alone[0][2]))
    if "train" in only:
        beside = []
        for _ in range(args.repeats):
            with Busy():
                beside.append(bench.train())
        rate = [b[0] for b in beside]
        share = statistics.median(rate) / statistics.median(alone_rate)
        rows.append(("train beside one busy thread", _summary(rate), f"{share:.0%}", beside[0][2]))
    if "pair" in only:
        pairs = [bench.pair() for _ in range(args.repeats)]
        walls = [p[0] for p in pairs]
        sequential = 2 * statistics.median(alone_wall)
        rows.append(
            (
                "two trainings together (wall s)",
                _summary(walls),
                f"{statistics.median(walls) / sequential:.2f}x of {sequential:.1f} s one after the other",
                " / ".join(pairs[0][1]),
            )
        )
    if "grade" in only:
        run = bench.new_run()
        subprocess.run(
            _imgrade("train", "--data", str(photos), "--epochs", "1", "--out", str(run), "--seed", "0"),
            env=bench.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        grade_alone = [bench.grade(run) for _ in range(args.repeats)]
        rows.append(("predict alone (photos/s)", _summary(grade_alone), "100%", ""))
        for name, context in (("predict beside one busy thread", Busy), ("predict beside a training", None)):
            rates = []
            for _ in range(args.repeats):
                with Busy() if context else Training(bench):
                    rates.append(bench.grade(run))
            rows.append((name, _summary(rates), f"{statistics.median(rates) / statistics.median(grade_alone):.0%}", ""))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'':{width}}  {'median (range)':>22}  {'share of alone':<14}  chosen")
    for name, value, share, chosen in rows:
        print(f"{name:{width}}  {value:>22}  {share:<14}  {chosen}")
    if args.docs:
        command = " ".join(["python benchmarks/contention.py", *sys.argv[1:]])
        table = ["| measurement | median (range) | against alone | chosen |", "|---|---|---|---|"]
        table += [f"| {name} | {value.strip()} | {share} | {chosen} |" for name, value, share, chosen in rows]
        header = (
            "<!-- written by benchmarks/contention.py; do not edit by hand -->\n"
            f"`{command}`: {os.cpu_count()} CPUs, load average {load:.1f} at the start (nothing else was started "
            f"meanwhile); {args.photos} synthetic photos x {args.epochs} epochs per training, "
            f"{args.grade_photos} photos per predict, median of {args.repeats}.\n\n"
        )
        write_text(args.docs, header + "\n".join(table) + "\n")


def _synth(folder: Path, n: int, seed: int, layout: str = "cucumber9") -> Path:
    """``n`` synthetic cucumbers (CUCUMBER-9 files or PNG folders), written once (``done`` marks them complete)."""
    if not (folder / "done").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        command = _imgrade("data", "synth", "--out", str(folder), "--n", str(n), "--seed", str(seed), "-q")
        subprocess.run([*command, "--format", layout], check=True)
        (folder / "done").write_text("")
    return folder


if __name__ == "__main__":
    main()
