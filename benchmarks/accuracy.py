"""Which formulation grades the real CUCUMBER-9 sample best? `imgrade compare --folds 5` on it.

Usage:
    python benchmarks/accuracy.py [--epochs 60] [--out bench-accuracy] [--data PATH] [--seeds 1]
        [--recipes regression,classification,coral,corn] [--metric qwk|accuracy|mae|both]

Every recipe (by default the four tasks; see `imgrade compare --help` for TASK+key=value...) gets
the same 5 folds (each fold's images are the test set once; the rest splits 3:1 into train and
validation) and the same budget. Prints the comparison table (mean +- std over folds, paired gains
against regression with rounding, p from the corrected resampled t-test) and the recommendation
for --metric; the runs, CSVs, box plot and report.html stay in --out.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from imgrade import pipeline
from imgrade.config import RunConfig

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/cucumber9-p1-sample/cucumber-9-python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SAMPLE))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--recipes", "--tasks", dest="recipes", default="regression,classification,coral,corn",
                        help="comma-separated recipes TASK[+key=value][+flag]... (default: the four tasks)")
    parser.add_argument("--metric", choices=("qwk", "accuracy", "mae", "both"), default="qwk", help="what the recommendation optimises")
    parser.add_argument("--out", default="bench-accuracy")
    parser.add_argument("--calibration-holdout", type=float, default=0.0, help="see imgrade train --help")
    args = parser.parse_args()
    if not Path(args.data).exists():
        raise SystemExit(f"{args.data} is absent: pass --data with the CUCUMBER-9 sample (../shared/data/cucumber9-p1-sample/cucumber-9-python)")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    cfg = RunConfig.from_dict({
        "data": {"path": args.data}, "train": {"epochs": args.epochs}, "calibrate": {"holdout": args.calibration_holdout},
    })
    t0 = time.perf_counter()
    result = pipeline.compare(cfg, out, recipes=args.recipes, seeds=args.seeds, folds=args.folds, metric=args.metric)
    runs = len({(r["recipe"], r["fold"], r["seed"]) for r in result["rows"] if not r["recipe"].endswith(" member")})
    print(f"{runs} runs of {args.epochs} epochs in {time.perf_counter() - t0:.0f} s; report: {out / 'report.html'}")


if __name__ == "__main__":
    main()
