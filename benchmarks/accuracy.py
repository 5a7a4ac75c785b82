"""Which recipe grades the real CUCUMBER-9 sample best? `imgrade compare --folds 5` on it, in parallel.

Usage:
    python benchmarks/accuracy.py [--epochs 40] [--seeds 3] [--jobs 2] [--out bench-accuracy]
        [--recipes regression,classification,corn,sord+ensemble=3,sord+ensemble=3+tta,...]
        [--goal sord+ensemble=3,sord+ensemble=3+tta] [--curve 50,100] [--docs docs]

Every recipe (see `imgrade compare --help` for TASK+key=value...) gets the same 5 folds (each
fold's images are the test set once; the rest splits 3:1 into train and validation), the same
seeds and the same budget. The runs are shared out over --jobs processes of one thread each (a
few hundred 32-pixel photos keep one core busy; two processes train faster than one process of two
threads); recipes that differ only by +tta share their runs. Prints the comparison table (mean +-
std over folds x seeds, paired gains against regression with rounding, corrected resampled t-test)
and checks --goal against the issue's bar: more exact than the classifier and a higher QWK than
regression, each by more than one corrected standard error, with half the seed-to-seed spread of
exact accuracy of a single CORN network. With --curve it also trains --goal and the reference on
50 and 100 training photos per fold (seed 0) for the accuracy-vs-photos picture.

With --docs the tables go to DOCS/results/ and the picture to DOCS/img/, where docs/accuracy.md
reads them. --merge FOLDER... calibrates and scores again, with this code, the runs that earlier
runs of this script (or of `imgrade compare --folds`) trained there, instead of training.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from imgrade import pipeline
from imgrade.config import RunConfig
from imgrade.core.errors import CheckpointError
from imgrade.core.io import write_csv, write_text
from imgrade.core.rundir import ensemble_members
from imgrade.data.loader import load_dataset
from imgrade.data.splits import stratified_split, stratify_labels
from imgrade.evaluation.comparison import paired_test, summarise
from imgrade.pipeline.comparer import fold_splits, score_recipe_run
from imgrade.pipeline.recipe import parse_recipes
from imgrade.pipeline.runs import finished_training
from imgrade.runtime.run_checkpoint import Checkpoint

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/cucumber9-p1-sample/cucumber-9-python"
DEFAULT_RECIPES = "regression,classification,corn,sord+ensemble=3,sord+ensemble=3+tta,sord+ema=0.99,axes"
NUMERIC = (
    "fold",
    "seed",
    "run_seed",
    "qwk",
    "accuracy",
    "within1",
    "grade_mae",
    "mae",
    "rmse",
    "coverage",
    "set_size",
    "train_seconds",
    "n_train",
    "n_test",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SAMPLE))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--recipes",
        "--tasks",
        dest="recipes",
        default=DEFAULT_RECIPES,
        help=f"comma-separated recipes (default {DEFAULT_RECIPES})",
    )
    parser.add_argument(
        "--goal",
        default="sord+ensemble=3",
        help="the recipes checked against the bar, comma-separated; the first is drawn in the curve (default sord+ensemble=3)",
    )
    parser.add_argument(
        "--metric", choices=("qwk", "accuracy", "mae", "both"), default="both", help="what the recommendation optimises"
    )
    parser.add_argument("--jobs", type=int, default=2, help="processes training at once, one thread each (default 2)")
    parser.add_argument(
        "--curve",
        default="",
        help="training photos per fold for the accuracy-vs-photos curve, e.g. 50,100 (default: none)",
    )
    parser.add_argument("--out", default="bench-accuracy")
    parser.add_argument(
        "--docs",
        default=None,
        help="write results/accuracy.md, results/accuracy.csv (and img/accuracy_vs_photos.png) under this folder",
    )
    parser.add_argument(
        "--merge",
        nargs="*",
        default=None,
        help="calibrate and score again the runs trained under these earlier --out folders (their part*/ or compare outputs) instead of training",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not Path(args.data).exists():
        raise SystemExit(
            f"{args.data} is absent: pass --data with the CUCUMBER-9 sample (../shared/data/cucumber9-p1-sample/cucumber-9-python)"
        )
    cfg = RunConfig.from_dict({"data": {"path": args.data}, "train": {"epochs": args.epochs, "threads": 1}})
    out = Path(args.out)
    if args.worker:  # one share of the recipes, in this process
        pipeline.compare(cfg, out, recipes=args.recipes, seeds=args.seeds, folds=args.folds, metric=args.metric)
        return
    t0 = time.perf_counter()
    if args.merge is not None:
        out.mkdir(parents=True, exist_ok=True)
        rows = rescore(cfg, [Path(p) for p in args.merge], args.recipes, seeds=args.seeds, folds=args.folds)
    else:
        if out.exists():
            shutil.rmtree(out)
        parts = _run_in_parallel(args, out)
        rows = [row for part in parts for row in _read_rows(part / "results.csv")]
    out.mkdir(parents=True, exist_ok=True)
    recipes = list(dict.fromkeys(r["recipe"] for r in rows if not r["recipe"].endswith(" member")))
    result = summarise(rows, out, cfg, recipes=recipes, seeds=args.seeds, folds=args.folds, metric=args.metric)
    goals = [g.strip() for g in args.goal.split(",") if g.strip()]
    goal = "\n".join(goal_check(rows, g, folds=args.folds) for g in goals)
    print(goal)
    curve = None
    if args.curve:
        curve = photos_curve(
            cfg, out / "curve", goals[0], [int(n) for n in args.curve.split(",")], rows, folds=args.folds
        )
    if args.docs:
        _write_docs(Path(args.docs), out, result, goal, curve, args)
    print(f"{len(rows)} rows in {time.perf_counter() - t0:.0f} s; report: {out / 'report.html'}")


def _run_in_parallel(args, out: Path) -> list[Path]:
    """Share the recipes out over ``--jobs`` worker processes (recipes with the same runs together)."""
    groups: dict[str, list[str]] = {}
    for recipe in parse_recipes(args.recipes):
        groups.setdefault(recipe.folder, []).append(recipe.name)
    jobs = [[] for _ in range(max(1, min(args.jobs, len(groups))))]
    cost = [0.0] * len(jobs)
    for folder, names in sorted(groups.items(), key=lambda kv: -_cost(kv[0])):  # longest first, to the least loaded
        j = int(np.argmin(cost))
        jobs[j] += names
        cost[j] += _cost(folder)
    parts, processes = [], []
    for i, names in enumerate(jobs):
        part = out / f"part{i}"
        part.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            __file__,
            "--worker",
            "--data",
            args.data,
            "--epochs",
            str(args.epochs),
            "--seeds",
            str(args.seeds),
            "--folds",
            str(args.folds),
            "--recipes",
            ",".join(names),
            "--metric",
            args.metric,
            "--out",
            str(part),
        ]
        log = (out / f"part{i}.log").open("w")
        processes.append(
            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
        )
        parts.append(part)
        print(f"job {i}: {', '.join(names)} (log {out / f'part{i}.log'})", flush=True)
    failed = [i for i, p in enumerate(processes) if p.wait() != 0]
    if failed:
        raise SystemExit(f"job(s) {failed} failed: see {out}/part*.log")
    return parts


def rescore(cfg: RunConfig, parts: list[Path], recipes: str, *, seeds: int, folds: int) -> list[dict]:
    """Calibrate again and score, with this code, every run of ``recipes`` already trained under ``parts``.

    The runs are found as PART/runs/RECIPE-foldF-seedS (what compare writes); a missing one is
    reported and left out. Training seconds are the sum of the run's epoch times (members' too).
    """
    imageset = load_dataset(cfg.data)
    splits = fold_splits(imageset, folds)
    rows, calibrated = [], set()
    for recipe in parse_recipes(recipes):
        for f, split in enumerate(splits):
            test_set = imageset.subset(split["test"])
            for seed in range(seeds):
                names = [f"{recipe.folder}-fold{f}-seed{seed}"] + (
                    [f"{recipe.folder}-fold{f}"] if seed == 0 else []
                )  # compare --seeds 1 adds no suffix
                found = [
                    part / "runs" / name
                    for part in parts
                    for name in names
                    if (part / "runs" / name / "best.pt").exists()
                ]
                name = names[0]
                if not found:
                    print(f"missing: {name}", flush=True)
                    continue
                run = found[0]
                if run not in calibrated:  # both plain and test-time augmented, with this code's cut points
                    for folder in [run, *ensemble_members(run)]:
                        if (
                            Checkpoint.load(folder / "best.pt").calibration(True) is None
                        ):  # calibrated before --tta existed
                            with contextlib.redirect_stderr(io.StringIO()):
                                pipeline.calibrate(folder, device="cpu")
                    calibrated.add(run)
                # the networks' own epoch times: an ensemble's members, not the mean history beside them
                networks = ensemble_members(run) or [run]
                seconds = sum(float(r["seconds"]) for h in networks for r in _read_csv(h / "history.csv"))
                for row in score_recipe_run(run, test_set, recipe, f, seed, seconds):
                    rows.append({**row, "n_train": len(split["train"]), "n_test": len(split["test"])})
    return rows


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _cost(folder: str) -> float:
    """Relative training cost of a recipe's runs: an ensemble of K trains K networks."""
    for part in folder.split("+"):
        if part.startswith("ensemble="):
            return float(part.split("=", 1)[1])
    return 1.0


def _read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in NUMERIC:
            if key in row:
                row[key] = None if row[key] in ("", "None") else float(row[key])
        for key in ("fold", "seed", "run_seed"):
            row[key] = int(row[key])
    return rows


def _decision(rows: list[dict], recipe: str) -> list[dict]:
    """The rows of ``recipe`` as a user grades with it: calibrated (tuned cut points where kept)."""
    return [r for r in rows if r["recipe"] == recipe and r["decision"] == "calibrated"]


def seed_spread(rows: list[dict], metric: str = "accuracy") -> float:
    """The seed-to-seed spread: per fold, the std of ``metric`` over the seeds; the mean over folds."""
    by_fold: dict[int, list[float]] = {}
    for r in rows:
        by_fold.setdefault(r["fold"], []).append(r[metric])
    return float(np.mean([np.std(v, ddof=1) for v in by_fold.values() if len(v) > 1]))


def goal_check(rows: list[dict], goal: str, *, folds: int) -> str:
    """The issue's bar for ``goal``, as lines of text: gains with corrected standard errors, spreads."""
    mine = _decision(rows, goal)
    if not mine:
        return f"goal: no rows for {goal}"
    lines = [f"goal check for {goal} (calibrated decisions; corrected resampled t-test over folds x seeds):"]
    for baseline, metric in (
        ("classification", "accuracy"),
        ("regression", "qwk"),
        ("corn", "accuracy"),
        ("corn", "qwk"),
    ):
        theirs = _decision(rows, baseline)
        test = paired_test(mine, theirs, metric, folds=folds) if theirs else None
        if test is None or test["diff_se"] is None:
            lines.append(f"  {metric} vs {baseline}: no paired rows")
            continue
        verdict = (
            "beats it by more than one standard error"
            if test["diff"] > test["diff_se"]
            else "does NOT beat it by one standard error"
        )
        lines.append(
            f"  {metric} vs {baseline}: {test['diff']:+.3f} +- {test['diff_se']:.3f} (p={_p(test['p'])}, {test['pairs']} pairs): {verdict}"
        )
    single = _decision(rows, "sord+ensemble=3 member")
    if single:
        lines.append("  each lever against one SORD network (the mean of the ensemble's members on the same fold):")
        for recipe in dict.fromkeys(r["recipe"] for r in rows):
            if recipe.endswith(" member") or recipe in ("regression", "classification", "corn"):
                continue
            parts = []
            for metric in ("accuracy", "qwk"):
                test = paired_test(_decision(rows, recipe), single, metric, folds=folds)
                if test is not None and test["diff_se"] is not None:
                    parts.append(
                        f"{metric} {test['diff']:+.3f} +- {test['diff_se']:.3f} (p={_p(test['p'])}, {test['pairs']} pairs)"
                    )
            lines.append(f"    {recipe}: " + ("; ".join(parts) or "no paired rows"))
    corn = _decision(rows, "corn")
    if corn:
        a, b = seed_spread(mine), seed_spread(corn)
        verdict = "halved" if a <= b / 2 else "NOT halved"
        lines.append(
            f"  seed-to-seed spread of exact accuracy (std over seeds, mean over folds): {a:.3f} against {b:.3f} for one CORN network: {verdict}"
        )
    return "\n".join(lines)


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"


def photos_curve(cfg: RunConfig, out: Path, goal: str, sizes: list[int], rows: list[dict], *, folds: int) -> list[dict]:
    """Test accuracy and QWK of ``goal`` and the reference with ``sizes`` training photos per fold (seed 0)."""
    imageset = load_dataset(cfg.data)
    splits = fold_splits(imageset, folds)
    strata = stratify_labels(imageset)
    points = []
    for recipe in parse_recipes(f"regression,{goal}"):
        for n in sizes:
            for f, split in enumerate(splits):
                train = split["train"]
                if n >= len(train):
                    continue
                keep, _ = stratified_split(strata[train], (n / len(train), 1 - n / len(train)), 0)
                smaller = {**split, "train": train[np.sort(keep)]}
                run = out / f"{recipe.folder}-n{n}-fold{f}"
                if not _finished(run):  # an interrupted curve continues where it stopped
                    pipeline.train(recipe.config(cfg), run, split=smaller, imageset=imageset, overwrite=True)
                test_set = imageset.subset(split["test"])
                for row in score_recipe_run(run, test_set, recipe, f, 0, None):
                    if row["decision"] == "calibrated" and not row["recipe"].endswith(" member"):
                        points.append(
                            {
                                "recipe": recipe.name,
                                "photos": len(smaller["train"]),
                                "fold": f,
                                "accuracy": row["accuracy"],
                                "qwk": row["qwk"],
                            }
                        )
        for r in _decision(rows, recipe.name):
            if r["seed"] == 0 and not r["recipe"].endswith(" member"):
                points.append(
                    {
                        "recipe": recipe.name,
                        "photos": int(r["n_train"]),
                        "fold": r["fold"],
                        "accuracy": r["accuracy"],
                        "qwk": r["qwk"],
                    }
                )
    write_csv(out / "photos_curve.csv", points)
    return points


def _finished(run: Path) -> bool:
    """Trained and calibrated: a run's last.pt says finished, an ensemble's best.pt holds its calibration."""
    try:
        calibrated = Checkpoint.load(run / "best.pt").calibration() is not None
        if ensemble_members(run):
            return calibrated
        return finished_training(Checkpoint.load(run / "last.pt")) and calibrated
    except (CheckpointError, OSError):
        return False


def plot_curve(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for ax, metric in zip(axes, ("accuracy", "qwk")):
        for recipe in dict.fromkeys(p["recipe"] for p in points):
            mine = [p for p in points if p["recipe"] == recipe]
            sizes = sorted({_bucket(p["photos"]) for p in mine})
            means = [np.mean([p[metric] for p in mine if _bucket(p["photos"]) == s]) for s in sizes]
            stds = [np.std([p[metric] for p in mine if _bucket(p["photos"]) == s], ddof=1) for s in sizes]
            label = "reference (regression)" if recipe == "regression" else recipe
            ax.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, label=label)
        ax.set_xlabel("training photos (+ about 50 for validation)")
        ax.set_ylabel("exact accuracy" if metric == "accuracy" else "QWK")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("real CUCUMBER-9 sample: test metrics vs training photos (5 folds, mean +- std)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bucket(photos: float) -> int:
    """Full training splits differ by a photo or two between folds: group them."""
    return int(round(photos / 10.0) * 10)


def _write_docs(docs: Path, out: Path, result: dict, goal: str, curve: list[dict] | None, args) -> None:
    (docs / "results").mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "summary.csv", docs / "results" / "accuracy.csv")
    argv = sys.argv[1:]
    if "--docs" in argv:  # the folder the tables are written to is no part of the measurement
        i = argv.index("--docs")
        argv = argv[:i] + argv[i + 2 :]
    # folders as their names: a page of results names no path of the machine that measured it
    shown = [Path(a).name if Path(a).is_absolute() else a for a in argv if not a.startswith("--docs=")]
    command = "python benchmarks/accuracy.py " + " ".join(shown)
    text = [
        "<!-- written by benchmarks/accuracy.py; do not edit by hand -->",
        f"`{command.strip()}`: {args.folds} folds x {args.seeds} seeds, {args.epochs} epochs per network, "
        f"on {Path(args.data).name}.",
        "",
        (out / "summary.md").read_text(),
        "```",
        goal,
        "```",
    ]
    write_text(docs / "results" / "accuracy.md", "\n".join(text) + "\n")
    if curve:
        (docs / "img").mkdir(parents=True, exist_ok=True)
        plot_curve(curve, docs / "img" / "accuracy_vs_photos.png")
        write_csv(docs / "results" / "photos_curve.csv", curve)


if __name__ == "__main__":
    main()
