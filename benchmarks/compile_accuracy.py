"""Does a compiled training grade as well as an eager one? The accurate preset on the real sample, paired by seed.

Usage:
    python benchmarks/compile_accuracy.py [--data DATA] [--preset accurate] [--epochs 30] [--seeds 3]
        [--choices off,auto] [--work bench-compile-accuracy] [--docs docs]

For each seed it trains ``--preset`` on ``--data`` (the real CUCUMBER-9 sample beside the repository
by default) once per ``--compile`` choice, on the same split (the run's default split, seed 0), and
grades the run's test split (``imgrade.evaluate``). Printed per run: what the choice resolved to
(config.yaml) and the start line's reason, exact accuracy, QWK and the training seconds; then, for
each choice against the first, the paired differences over seeds: mean, the plain standard error,
and the corrected one of the Nadeau-Bengio test as ``benchmarks/accuracy.py`` reports it (the split
is fixed here, so the plain one is the honest spread; the corrected one is larger), and whether
the difference lies within one standard error. A run already in ``--work`` is reused. ``--docs
DOCS`` writes DOCS/results/compile_accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import yaml

import imgrade
from imgrade.cli import main as imgrade_main
from imgrade.core.io import write_text
from imgrade.evaluation.stats import corrected_ttest
from imgrade.runtime.run import RunFolder

SAMPLE = Path(__file__).resolve().parents[2] / "shared/data/cucumber9-p1-sample/cucumber-9-python"
METRICS = ("accuracy", "qwk")


def train(run: Path, args, seed: int, choice: str) -> float:
    """Train (unless ``run`` holds a finished run); the seconds it took (nan when reused)."""
    if (run / "best.pt").is_file() and (run / "timing.json").is_file():
        return json.loads((run / "timing.json").read_text())["seconds"]
    flags = ["--data", str(args.data), "--preset", args.preset, "--epochs", str(args.epochs)]
    start = time.perf_counter()
    code = imgrade_main(["train", *flags, "--seed", str(seed), "--compile", choice, "--out", str(run), "--overwrite"])
    assert code == 0, f"training {run} failed"
    seconds = time.perf_counter() - start
    (run / "timing.json").write_text(json.dumps({"seconds": seconds}))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SAMPLE)
    parser.add_argument("--preset", default="accurate")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--choices", default="off,auto")
    parser.add_argument("--work", type=Path, default=Path("bench-compile-accuracy"))
    parser.add_argument("--docs", type=Path, default=None)
    args = parser.parse_args()
    choices = args.choices.split(",")
    print(f"load average at the start: {os.getloadavg()[0]:.1f}", flush=True)
    results: dict[str, list[dict]] = {choice: [] for choice in choices}
    for seed in range(args.seeds):
        for choice in choices:
            run = args.work / f"{choice}-seed{seed}"
            seconds = train(run, args, seed, choice)
            config = yaml.safe_load((run / "config.yaml").read_text())
            resolved = config["train"]["compile"]
            metrics = imgrade.evaluate(run, out=run / "eval", gallery=0)
            folder = RunFolder.open(run)
            _, split = folder.data()
            row = {
                "seed": seed,
                "resolved": resolved,
                "seconds": seconds,
                "n_train": len(split["train"]),
                "n_test": len(split["test"]),
                **{m: float(metrics[m]) for m in METRICS},
            }
            results[choice].append(row)
            print(
                f"seed {seed} --compile {choice} -> {resolved}: accuracy {row['accuracy']:.3f}, "
                f"qwk {row['qwk']:.3f}, {seconds:.0f} s",
                flush=True,
            )
    base = choices[0]
    lines = [
        "| --compile | resolved to | accuracy (mean ± std over seeds) | qwk | train seconds |",
        "|---|---|---|---|---:|",
    ]
    for choice in choices:
        rows = results[choice]
        resolved = ", ".join(sorted({r["resolved"] for r in rows}))
        cells = [f"{statistics.mean(r[m] for r in rows):.3f} ± {statistics.pstdev(r[m] for r in rows):.3f}" for m in METRICS]  # fmt: skip
        seconds = statistics.mean(r["seconds"] for r in rows)
        lines.append(f"| {choice} | {resolved} | {cells[0]} | {cells[1]} | {seconds:.0f} |")
    lines.append("")
    for choice in choices[1:]:
        for metric in METRICS:
            diffs = [a[metric] - b[metric] for a, b in zip(results[choice], results[base])]
            plain = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
            first = results[base][0]
            corrected = corrected_ttest(diffs, first["n_train"], first["n_test"]) if any(diffs) else None
            se = corrected["se"] if corrected else 0.0
            within = abs(statistics.mean(diffs)) <= max(plain, 0.0) or not any(diffs)
            lines.append(
                f"- {metric}, {choice} - {base}: {statistics.mean(diffs):+.3f} (per seed "
                f"{', '.join(f'{d:+.3f}' for d in diffs)}); standard error {plain:.3f}, corrected {se:.3f}: "
                + ("within one standard error" if within else "NOT within one standard error")
            )
    text = "\n".join(lines)
    print("\n" + text)
    if args.docs is not None:
        command = f"python benchmarks/compile_accuracy.py --preset {args.preset} --epochs {args.epochs} --seeds {args.seeds} --choices {args.choices}"  # fmt: skip
        write_text(
            args.docs / "results" / "compile_accuracy.md",
            "<!-- written by benchmarks/compile_accuracy.py; do not edit by hand -->\n"
            f"# --compile and accuracy on the real sample\n\n`{command}`: the run's own split of the 248 real "
            f"photos, test split graded.\n\n{text}\n",
        )


if __name__ == "__main__":
    main()
