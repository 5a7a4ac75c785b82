"""Does bf16 training grade the real CUCUMBER-9 sample as well as fp32? Paired by fold and seed.

Usage:
    python benchmarks/precision.py [--tasks regression,sord] [--epochs 40] [--seeds 3] [--out bench-precision]
        [--merge FOLDER ...] [--docs docs]

For each task it trains ``TASK+amp=off`` and ``TASK+amp=bf16`` with benchmarks/accuracy.py (5
folds x ``--seeds`` seeds, one thread per process, the same folds, seeds and budget), then prints,
per task and decision (the head's own rule and the calibrated cut points), the mean +- std of
each metric under fp32 and bf16 and their paired difference (bf16 minus fp32) with its corrected
standard error and p-value (the corrected resampled t-test of Nadeau and Bengio,
``imgrade.evaluation.stats.corrected_ttest``). "Agrees" means every difference lies within two
corrected standard errors of zero; the training seconds say what bf16 buys.

``--merge`` reads the results.csv files an earlier run left under those folders (part*/results.csv)
instead of training. ``--docs`` writes DOCS/results/precision.md, which docs/training.md quotes.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
from pathlib import Path

from imgrade.core.io import write_text
from imgrade.evaluation.stats import corrected_ttest

METRICS = ("qwk", "accuracy", "within1", "mae", "coverage", "set_size")
"""Compared metrics: agreement, exact and adjacent grades, score error, grade sets."""
ACCURACY = Path(__file__).with_name("accuracy.py")


def _rows(folders: list[Path]) -> list[dict]:
    rows = []
    for folder in folders:
        for path in sorted(folder.glob("part*/results.csv")) + sorted(folder.glob("results.csv")):
            with path.open() as f:
                rows += list(csv.DictReader(f))
    return rows


def compare(rows: list[dict], task: str) -> list[str]:
    """Markdown table lines: fp32 against bf16 for ``task``, per decision and metric."""
    lines = []
    by = {}
    for row in rows:
        if row["recipe"] in (f"{task}+amp=off", f"{task}+amp=bf16"):
            by[row["recipe"].rsplit("=", 1)[1], row["decision"], row["fold"], row["seed"]] = row
    decisions = sorted({key[1] for key in by})
    for decision in decisions:
        pairs = [
            (by["off", decision, f, s], by["bf16", decision, f, s])
            for (amp, d, f, s) in sorted(by)
            if amp == "off" and d == decision and ("bf16", decision, f, s) in by
        ]
        if len(pairs) < 2:
            continue
        n_train, n_test = int(float(pairs[0][0]["n_train"])), int(float(pairs[0][0]["n_test"]))
        for metric in (*METRICS, "train_seconds"):
            fp32 = [float(a[metric]) for a, _ in pairs]
            bf16 = [float(b[metric]) for _, b in pairs]
            test = corrected_ttest([b - a for a, b in zip(fp32, bf16)], n_train=n_train, n_test=n_test)
            agrees = "" if metric == "train_seconds" else ("yes" if abs(test["mean"]) <= 2 * test["se"] else "NO")
            lines.append(
                f"| {task} | {decision} | {metric} | {len(pairs)} | {_ms(fp32)} | {_ms(bf16)} | "
                f"{test['mean']:+.3f} ± {test['se']:.3f} | {test['p']:.2g} | {agrees} |"
            )
    return lines


def _ms(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="regression,sord", help="tasks to train both ways (default regression,sord)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-precision"))
    parser.add_argument("--merge", nargs="*", type=Path, default=None, help="read these earlier outputs, train nothing")
    parser.add_argument("--docs", type=Path, default=None, help="write DOCS/results/precision.md")
    args = parser.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    folders = args.merge
    if folders is None:
        folders = []
        for task in tasks:
            out = args.out / task
            recipes = f"{task}+amp=off,{task}+amp=bf16"
            command = [sys.executable, str(ACCURACY), "--recipes", recipes, "--goal", f"{task}+amp=bf16"]
            command += ["--epochs", str(args.epochs), "--seeds", str(args.seeds), "--jobs", str(args.jobs)]
            subprocess.run([*command, "--out", str(out)], check=False)  # its goal check may fail: only its runs count
            folders.append(out)
    rows = _rows(folders)
    table = [
        "| task | decision | metric | pairs | fp32 | bf16 | bf16 − fp32 (± corrected SE) | p | agrees |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        table += compare(rows, task)
    text = "\n".join(table)
    print(text)
    if args.docs:
        folds = {row["fold"] for row in rows}
        seeds = {row["seed"] for row in rows}
        header = (
            "<!-- written by benchmarks/precision.py; do not edit by hand -->\n"
            f"`python benchmarks/precision.py --tasks {','.join(tasks)} --epochs {args.epochs}`: "
            f"{len(folds)} folds x {len(seeds)} seeds on the real CUCUMBER-9 sample, one thread per training, "
            "the same folds, seeds and budget for both precisions. Mean ± std over the runs; the difference is "
            "paired by fold and seed, with the corrected resampled t-test. `agrees`: the difference lies within "
            "two corrected standard errors of zero.\n\n"
        )
        write_text(args.docs / "results" / "precision.md", header + text + "\n")


if __name__ == "__main__":
    main()
