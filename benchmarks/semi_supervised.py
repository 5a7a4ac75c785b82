"""Do unlabelled photos help? `train --unlabeled` and `--distill` on the real CUCUMBER-9 sample, with half the grades hidden.

Usage (train in shards, one per core, then report):
    python benchmarks/semi_supervised.py --out bench-semi --epochs 20 --seeds 3 --shard 0/2 &
    python benchmarks/semi_supervised.py --out bench-semi --epochs 20 --seeds 3 --shard 1/2
    python benchmarks/semi_supervised.py --out bench-semi --report [--docs docs]

Per fold (each fold of the sample is the test set once; the rest splits 3:1 into train and
validation, as `imgrade compare --folds` does) and seed, the grades of half the training photos
(stratified by grade, drawn by the seed) are hidden, and the recipe (--task, one network) trains:

- "labelled half": on the labelled half alone;
- "labelled half + unlabelled half": taught by the run above (the teacher `train --unlabeled`
  would train first: the same recipe, split and seed) on both halves, the hidden half through
  `--unlabeled` as PNG files;
- "all labels": on the whole training split with every grade.

With --distill the teacher is also an ensemble of --distill-members networks on the labelled half
("labelled half, ensemble"), distilled into one network on both halves ("distilled"), and the
report times grading with each (photos per second, one thread, the exported .onnx files).

The goal (issue 24): the unlabelled half recovers at least half of the gap between the two
labelled-only runs, in exact accuracy and in QWK, each by more than one corrected standard error;
the distilled network is within one standard error of the ensemble and grades 3x faster.
Validation photos are always labelled (they pick the best epoch and calibrate).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgrade import pipeline
from imgrade.config import RunConfig
from imgrade.core.io import write_csv, write_text
from imgrade.data.loader import load_dataset
from imgrade.evaluation.comparison import paired_test
from imgrade.pipeline.comparer import fold_splits, score_recipe_run
from imgrade.pipeline.recipe import parse_recipe

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/cucumber9-p1-sample/cucumber-9-python"
HALF, BOTH, ALL = "labelled half", "labelled half + unlabelled half", "all labels"
ENSEMBLE, DISTILLED = "labelled half, ensemble", "distilled, one network"
PRESET_BOTH, PRESET_ALL = "labelled half + unlabelled half, ensemble", "all labels, ensemble"
METRICS = ("accuracy", "qwk", "within1", "grade_mae")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SAMPLE))
    parser.add_argument("--task", default="sord", help="the recipe's task (default sord, the preset's)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--distill", action="store_true", help="also the ensemble teacher and the distilled network")
    parser.add_argument("--distill-members", type=int, default=3)
    parser.add_argument("--distill-seeds", type=int, default=None, help="seeds with --distill (default: all)")
    parser.add_argument(
        "--preset",
        action="store_true",
        help="train the preset's arms instead: the --distill ensemble taught on both halves, and on all labels",
    )
    parser.add_argument("--shard", default="0/1", help="I/N: train every N-th (fold, seed) from the I-th")
    parser.add_argument("--out", default="bench-semi")
    parser.add_argument("--report", action="store_true", help="read the rows trained so far and report")
    parser.add_argument("--docs", default=None, help="with --report: write DOCS/results/semi_supervised.md")
    parser.add_argument(
        "--speed",
        type=int,
        default=0,
        metavar="PHOTOS",
        help="with --report and --distill runs: time grading PHOTOS photos with the exported ensemble and distilled network",
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.report:
        report(args, out)
        return
    index, count = (int(part) for part in args.shard.split("/"))
    imageset = load_dataset(RunConfig.from_dict({"data": {"path": args.data}}).data)
    splits = fold_splits(imageset, args.folds, seed=0)
    units = [(fold, seed) for seed in range(args.seeds) for fold in range(args.folds)]
    if args.preset:  # after the --distill units, as their ensembles complete
        units = [u for u in units if args.distill_seeds is None or u[1] < args.distill_seeds]
    pending = units[index::count]
    while pending:
        fold, seed = pending.pop(0)
        folder = out / f"f{fold}-s{seed}"
        rows_file = out / "rows" / (f"f{fold}-s{seed}" + ("-preset" if args.preset else "") + ".csv")
        if rows_file.is_file():
            continue
        if args.preset and not (folder / "ensemble" / "seconds.txt").is_file():
            pending.append((fold, seed))  # its ensemble is still training elsewhere
            time.sleep(30)
            continue
        t0 = time.perf_counter()
        unit = Unit(args, imageset, splits[fold], fold, seed, folder)
        distill = args.distill and (args.distill_seeds is None or seed < args.distill_seeds)
        rows = run_preset(unit) if args.preset else run_unit(unit, distill)
        write_csv(rows_file, rows)
        print(f"fold {fold} seed {seed}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def hide_half(targets: np.ndarray, train: np.ndarray, seed: int) -> np.ndarray:
    """The training rows whose grades are hidden: every other photo of each grade, in a seeded order.

    >>> hide_half(np.array([0, 0, 1, 1, 1, 0]), np.arange(6), 0).size
    3
    """
    rng = np.random.default_rng(seed)
    hidden = []
    for grade in np.unique(targets[train]):
        rows = rng.permutation(train[targets[train] == grade])
        hidden.append(rows[rng.integers(2) :: 2])
    return np.sort(np.concatenate(hidden))


class Unit:
    """One (fold, seed): the labelled half, the hidden half as PNG files, and how an arm is trained and scored."""

    def __init__(self, args, imageset, split: dict, fold: int, seed: int, folder: Path):
        self.args, self.fold, self.seed, self.folder = args, fold, seed, folder
        hidden = hide_half(imageset.targets.astype(np.int64), split["train"], 1000 * seed + fold)
        keep = np.setdiff1d(np.arange(len(imageset)), hidden)
        position = np.full(len(imageset), -1)
        position[keep] = np.arange(len(keep))
        self.imageset, self.split = imageset, split
        self.labelled = imageset.subset(keep)
        self.half_split = {name: position[np.setdiff1d(rows, hidden)] for name, rows in split.items()}
        self.pool = folder / "unlabelled"
        self.pool.mkdir(parents=True, exist_ok=True)
        for i in hidden:
            if not (self.pool / f"{i}.png").is_file():
                Image.fromarray(np.asarray(imageset.images[i])).save(self.pool / f"{i}.png")
        self.test_set = imageset.subset(split["test"])
        self.n_train, self.n_test = len(split["train"]), len(split["test"])

    def cfg(self, unlabeled: bool = False, **train) -> RunConfig:
        values = {"epochs": self.args.epochs, "seed": self.seed, "threads": 1, "compile": "off", **train}
        data = {"path": self.args.data, **({"unlabeled": str(self.pool.resolve())} if unlabeled else {})}
        return RunConfig.from_dict({"data": data, "model": {"task": self.args.task}, "train": values})

    def teacher(self, name: str) -> str:
        return str((self.folder / name).resolve())

    def arm(self, name: str, run: str, config: RunConfig, half: bool = True) -> list[dict]:
        """Train ``run`` (unless complete) on the labelled half or on all labels, and score it on the test fold."""
        run = self.folder / run
        if not (run / "seconds.txt").is_file():  # written once the run is complete
            t0 = time.perf_counter()
            split, imageset = (self.half_split, self.labelled) if half else (self.split, self.imageset)
            pipeline.train(config, run, split=split, imageset=imageset, overwrite=True)
            write_text(run / "seconds.txt", f"{time.perf_counter() - t0:.1f}")
        seconds = float((run / "seconds.txt").read_text())
        rows = score_recipe_run(run, self.test_set, parse_recipe(self.args.task), self.fold, self.seed, seconds)
        extra = {"arm": name, "n_train": self.n_train, "n_test": self.n_test}
        return [{**r, **extra} for r in rows if "member" not in r["recipe"]]


def run_unit(unit: Unit, distill: bool) -> list[dict]:
    """The one-network arms, and with ``distill`` the ensemble on the labelled half and the network it teaches."""
    rows = unit.arm(HALF, "half", unit.cfg())
    rows += unit.arm(BOTH, "both", unit.cfg(unlabeled=True, teacher=unit.teacher("half")))
    rows += unit.arm(ALL, "all", unit.cfg(), half=False)
    if distill:
        k = unit.args.distill_members
        rows += unit.arm(ENSEMBLE, "ensemble", unit.cfg(ensemble=k))
        rows += unit.arm(DISTILLED, "distilled", unit.cfg(unlabeled=True, teacher=unit.teacher("ensemble")))
    return rows


def run_preset(unit: Unit) -> list[dict]:
    """The preset (an ensemble) taught by itself on both halves, and on all labels (its labelled-half
    run is the "ensemble" arm, which must be complete). Each ensemble's first member is the unit's
    distilled, or all-labels, network: the same config, split and seed, so it is copied, not trained again."""
    k = unit.args.distill_members
    # member 0 of each (seed = the unit's seed) is a run the unit has: the same config, split and seed
    for run, member in (("preset-both", "distilled"), ("preset-all", "all")):
        m0 = unit.folder / run / "members" / "m0"
        if not m0.exists() and (unit.folder / member / "seconds.txt").is_file():
            shutil.copytree(unit.folder / member, m0, ignore=shutil.ignore_patterns("*.onnx", "seconds.txt"))
    rows = unit.arm(PRESET_BOTH, "preset-both", unit.cfg(unlabeled=True, ensemble=k, teacher=unit.teacher("ensemble")))
    rows += unit.arm(PRESET_ALL, "preset-all", unit.cfg(ensemble=k), half=False)
    return rows


def report(args, out: Path) -> None:
    rows = []
    for path in sorted((out / "rows").glob("*.csv")):
        with path.open() as f:
            rows += [_numbers(r) for r in csv.DictReader(f)]
    rows = [r for r in rows if r["decision"] == "calibrated"]
    if not rows:
        sys.exit(f"no rows under {out / 'rows'}: train first (without --report)")
    arms = [
        a for a in (HALF, BOTH, ALL, ENSEMBLE, PRESET_BOTH, PRESET_ALL, DISTILLED) if any(r["arm"] == a for r in rows)
    ]
    by_arm = {a: [r for r in rows if r["arm"] == a] for a in arms}
    resamples = sorted({(r["fold"], r["seed"]) for r in rows})
    folds = len({f for f, _ in resamples})
    seeds = len({s for _, s in resamples})
    distill_seeds = len({r["seed"] for r in rows if r["arm"] == ENSEMBLE})
    trained = f"--epochs {args.epochs} --folds {folds} --seeds {seeds}"
    if distill_seeds:
        trained += f" --distill --distill-seeds {distill_seeds}"
    lines = [
        f"Trained by `python benchmarks/semi_supervised.py {trained} --shard I/2` (I = 0, 1)"
        + (" and then the same with `--preset`" if PRESET_BOTH in by_arm else "")
        + ", each process on one thread.",
        "",
        f"`{' '.join(['python', 'benchmarks/semi_supervised.py', *sys.argv[1:]])}` on {Path(args.data).name}: "
        f"{len(resamples)} resamples (fold, seed), task {rows[0]['task']}, one network per arm unless named, "
        f"{args.epochs} epochs, calibrated decisions.",
        "",
        "| arm | runs | accuracy | qwk | within1 | grade_mae | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for a in arms:
        cells = [_mean_std([r[m] for r in by_arm[a]]) for m in METRICS]
        seconds = [r["train_seconds"] for r in by_arm[a] if r.get("train_seconds") is not None]
        lines.append(f"| {a} | {len(by_arm[a])} | {' | '.join(cells)} | {_mean_std(seconds, 0)} |")
    if PRESET_BOTH in by_arm:
        lines += [
            "",
            f'The ensembles\' first member is the unit\'s "{DISTILLED}" (taught on both halves) or "{ALL}" network, '
            "copied rather than trained again (the same config, split and seed): their train s counts the other members only.",
        ]
    lines += ["", "Paired differences, mean ± corrected standard error (Nadeau and Bengio), p:", ""]
    pairs = [
        (BOTH, HALF),
        (ALL, HALF),
        (PRESET_BOTH, ENSEMBLE),
        (PRESET_ALL, ENSEMBLE),
        (DISTILLED, ENSEMBLE),
        (DISTILLED, HALF),
    ]
    tests = {}
    for new, ref in pairs:
        if new in by_arm and ref in by_arm:
            for m in ("accuracy", "qwk"):
                t = paired_test(_paired(by_arm[new]), _paired(by_arm[ref]), m, folds=folds)
                tests[(new, ref, m)] = t
                if t is not None and t["diff_se"] is not None:
                    lines.append(
                        f"- {new} - {ref}, {m}: {t['diff']:+.3f} ± {t['diff_se']:.3f} (p={_p(t['p'])}, {t['pairs']} pairs)"
                    )
    if args.speed and ENSEMBLE in by_arm:
        lines += ["", *speed_lines(out, args.speed)]
    lines += ["", *goal_lines(tests)]
    text = "\n".join(lines)
    print(text)
    if args.docs:
        write_text(
            Path(args.docs) / "results" / "semi_supervised.md",
            "<!-- written by benchmarks/semi_supervised.py; do not edit by hand -->\n" + text + "\n",
        )


def speed_lines(out: Path, photos: int, repeats: int = 5) -> list[str]:
    """Photos per second grading with the first resample's ensemble and distilled network, each
    exported to .onnx and run by ONNX Runtime on one thread, timed in turn ``repeats`` times."""
    from imgrade.pipeline.exporter import export
    from imgrade.runtime.onnx_engine import OnnxEngine

    folder = min(p for p in out.glob("f*-s*") if (p / "distilled" / "best.pt").is_file())
    engines = {}
    for arm, name in ((ENSEMBLE, "ensemble"), (DISTILLED, "distilled")):
        onnx = folder / f"{name}.onnx"
        if not onnx.is_file():
            export(folder / name, out=onnx)
        engines[arm] = OnnxEngine.from_file(onnx, threads=1)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (photos, engines[ENSEMBLE].image_size, engines[ENSEMBLE].image_size, 3), np.uint8)
    times = {arm: [] for arm in engines}
    for _ in range(repeats):
        for arm, engine in engines.items():
            t0 = time.perf_counter()
            engine.outputs(images)
            times[arm].append(time.perf_counter() - t0)
    rates = {arm: photos / np.median(t) for arm, t in times.items()}
    spread = {arm: (photos / max(t), photos / min(t)) for arm, t in times.items()}
    lines = [
        f"Grading speed ({folder.name}'s runs exported to .onnx, ONNX Runtime, 1 thread, {photos} photos, median of {repeats}, "
        f"interleaved; {os.cpu_count()} cores, other work may have shared them):",
        "",
    ]
    for arm, rate in rates.items():
        lines.append(f"- {arm}: {rate:.0f} photos/s (range {spread[arm][0]:.0f}-{spread[arm][1]:.0f})")
    lines.append(f"- the distilled network grades {rates[DISTILLED] / rates[ENSEMBLE]:.2f}x as fast as the ensemble")
    return lines


def goal_lines(tests: dict) -> list[str]:
    """Whether the unlabelled half recovered half the gap, and the distilled network matched the ensemble."""
    lines = []
    for label, (both, half, all_) in {
        "one network": (BOTH, HALF, ALL),
        "ensemble (the preset)": (PRESET_BOTH, ENSEMBLE, PRESET_ALL),
    }.items():
        for m in ("accuracy", "qwk"):
            gain, gap = tests.get((both, half, m)), tests.get((all_, half, m))
            if gain is None or gap is None or gain["diff_se"] is None:
                continue
            share = f"{gain['diff'] / gap['diff']:.0%}" if gap["diff"] > 0 else "no gap"
            met = gap["diff"] > 0 and gain["diff"] >= 0.5 * gap["diff"] and gain["diff"] > gain["diff_se"]
            lines.append(
                f"goal, {label}, {m}: the unlabelled half gained {gain['diff']:+.3f} ± {gain['diff_se']:.3f} of the "
                f"{gap['diff']:+.3f} gap to all labels ({share}): {'met' if met else 'not met'} "
                "(needs >= 50% of the gap and a gain above one standard error)"
            )
    for m in ("accuracy", "qwk"):
        t = tests.get((DISTILLED, ENSEMBLE, m))
        if t is not None and t["diff_se"] is not None:
            within = abs(t["diff"]) <= t["diff_se"] or t["diff"] > 0
            lines.append(
                f"goal, distilled vs ensemble, {m}: {t['diff']:+.3f} ± {t['diff_se']:.3f}: "
                f"{'within one standard error (or better)' if within else 'more than one standard error below'}"
            )
    return lines


def _p(p: float | None) -> str:
    return "-" if p is None else f"{p:.2g}"


def _paired(rows: list[dict]) -> list[dict]:
    return [{**r, "run_seed": r["seed"]} for r in rows]


def _numbers(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        try:
            out[key] = int(value) if key in ("fold", "seed", "run_seed", "n_train", "n_test") else float(value)
        except (TypeError, ValueError):
            out[key] = value if value != "" else None
    return out


def _mean_std(values: list, digits: int = 3) -> str:
    values = [float(v) for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.{digits}f}"


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", line_buffering=True)
    main()
