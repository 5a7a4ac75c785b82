"""Whole ``imgrade train`` commands with ``--compile off``, ``on`` and ``auto``: what each costs and gives.

Usage:
    python benchmarks/compile_train.py [--photos 2000] [--epochs 5] [--choices off,on,auto]
        [--flags "--depth 29 --batch-size 32"] [--warm-cache] [--work DIR]

Each choice runs ``imgrade train`` as a user would, on ``--photos`` synthetic cucumbers (32x32, the
reference network unless ``--flags`` says otherwise), seed 0, one after the other. Printed per choice:

- **chose**: on or off, as the run's config.yaml records it; for auto, the start line's reason
  (the probe's eager and compiled ms/step and warm-up, or why it compiled nothing);
- **command s** and **images/s (command)**: the wall time of the whole command, start-up, probe,
  epochs, calibration and reports included, and the training images of all epochs per second of it;
- **images/s (epochs 2+)**: training images per second of the epochs after the first (history.csv),
  the steady speed once compiled;
- **warm-up s**: what the choice cost before it ran at that speed: the first epoch's time over a
  steady epoch's, plus the time outside the epochs over that of the off run (the probe, the check
  of ``on``). Without an off run, only the first part.

torch.compile caches what it generates on disk, and a graph it has made once compiles in seconds
after that. Each command therefore gets an empty cache folder of its own (TORCHINDUCTOR_CACHE_DIR),
as on a machine's first run; ``--warm-cache`` keeps torch's usual one instead. The machine should
have nothing else to do while this runs: the load average at the start is printed.
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

START_LINE = "training "


def _imgrade(*args: str) -> list[str]:
    return [sys.executable, "-m", "imgrade", *args]


def train(work: Path, photos: Path, epochs: int, choice: str, flags: list[str], warm_cache: bool) -> dict:
    """One ``imgrade train --compile choice``: wall time, epoch times, the choice recorded and the start line."""
    out = work / f"run-{choice}"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    if not warm_cache:
        env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"inductor-{choice}-", dir=work)
    command = _imgrade("train", "--data", str(photos), "--epochs", str(epochs), "--seed", "0", "--out", str(out))
    t0 = time.perf_counter()
    done = subprocess.run([*command, "--compile", choice, *flags], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"imgrade train --compile {choice} failed:\n{done.stderr[-3000:]}")
    with (out / "history.csv").open() as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    start = next(line for line in done.stderr.splitlines() if line.startswith(START_LINE))
    n_train = len(json.loads((out / "split.json").read_text())["train"])
    return {
        "choice": choice,
        "chose": yaml.safe_load((out / "config.yaml").read_text())["train"]["compile"],
        "why": start.partition("; ")[2],
        "wall": wall,
        "seconds": seconds,
        "n_train": n_train,
    }


def rows(results: list[dict]) -> list[str]:
    """The table, one row per choice (see the module docstring for the columns)."""
    off = next((r for r in results if r["choice"] == "off"), None)

    def outside(r):  # time outside the epochs: start-up, probe, calibration, reports
        return r["wall"] - sum(r["seconds"])

    lines = [
        "| --compile | chose | command s | images/s (command) | images/s (epochs 2+) | warm-up s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        later = r["seconds"][1:] or r["seconds"]
        steady = statistics.median(later)
        warmup = max(0.0, r["seconds"][0] - steady) + (outside(r) - outside(off) if off is not None else 0.0)
        images = r["n_train"] * len(r["seconds"])
        lines.append(
            f"| {r['choice']} | {r['chose']} | {r['wall']:.1f} | {images / r['wall']:.1f} | "
            f"{r['n_train'] / steady:.1f} | {warmup:.1f} |"
        )
    lines.append("")
    lines += [f"- {r['choice']}: {r['why']}" for r in results if r["why"]]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=2000, help="synthetic cucumbers (60%% train)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--choices", default="off,on,auto", help="the --compile values, in the order run")
    parser.add_argument("--flags", default="", help='more train flags, e.g. "--depth 29 --batch-size 32"')
    parser.add_argument("--warm-cache", action="store_true", help="keep torch.compile's usual on-disk cache")
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the data and runs (default: a temporary one)"
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="compile-train-"))
    work.mkdir(parents=True, exist_ok=True)
    photos = work / "synth"
    if not photos.exists():
        synth = _imgrade("data", "synth", "--out", str(photos), "--n", str(args.photos), "--seed", "3")
        subprocess.run(synth, check=True, capture_output=True)
    print(f"load average at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"imgrade train on {args.photos} synthetic cucumbers, {args.epochs} epochs {args.flags}".rstrip())
    print()
    results = []
    for choice in args.choices.split(","):
        results.append(train(work, photos, args.epochs, choice, shlex.split(args.flags), args.warm_cache))
        print(f"  --compile {choice}: {results[-1]['wall']:.1f} s", file=sys.stderr, flush=True)
    print("\n".join(rows(results)))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
