"""Do `imgrade suggest`'s picks teach more than random ones? A simulated labelling loop on the real sample.

Usage:
    python benchmarks/suggest_loop.py [--folds 5] [--seeds 3] [--start 30] [--step 30] [--stop 150]
        [--epochs 25] [--task sord] [--depth 11] [--diversity 0.5] [--jobs 2] [--out bench-suggest] [--docs docs]

Per fold (stratified, as `imgrade compare --folds`): the fold's photos are the test set; the rest
is the unlabelled pool, whose labels are revealed only when a photo is picked. --start photos are
picked at random and a grader is trained on them (every 4th photo labelled goes to the validation
split, the rest to training). Then, round by round, --step more are labelled, chosen either by
`suggest`'s ranking (``imgrade.pipeline.suggester.rank`` with the last round's grader) or at
random, and a grader is trained from scratch on all labelled so far, until --stop. Every round's
grader grades the held-out fold: exact accuracy and QWK. Both arms share the first round and, per
fold x seed, the training seed.

Prints the mean +- std over folds x seeds per round, the paired difference (suggest - random) with
the corrected resampled t-test, and the labels the suggested curve needs to reach the random
curve's final mean accuracy (linear between rounds), against the goal of 25% fewer. With --docs the
table goes to DOCS/results/suggest_loop.md (every round's row to suggest_loop.csv) and the curves to
DOCS/img/suggest_curve.png.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/cucumber9-p1-sample/cucumber-9-python"
ARMS = ("random", "suggest")
GOAL_SAVING = 0.25
"""The issue's bar: the suggested curve reaches random's final accuracy with this share fewer labels."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SAMPLE))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--start", type=int, default=30, help="photos labelled at random before the first training")
    parser.add_argument("--step", type=int, default=30, help="photos labelled per round")
    parser.add_argument("--stop", type=int, default=150, help="labels of the last round")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--task", default="sord")
    parser.add_argument("--depth", type=int, default=11)
    parser.add_argument("--diversity", type=float, default=0.5, help="suggest's --diversity")
    parser.add_argument("--jobs", type=int, default=2, help="processes, each training on one thread")
    parser.add_argument("--out", default="bench-suggest")
    parser.add_argument("--docs", default=None, metavar="DIR", help="write DIR/results/suggest_loop.md and the picture")
    args = parser.parse_args()
    if not Path(args.data).exists():
        sys.exit(f"{args.data} is absent: pass --data with the CUCUMBER-9 sample")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(fold, seed) for fold in range(args.folds) for seed in range(args.seeds)]
    started = time.perf_counter()
    rows: list[dict] = []
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        for done in pool.map(_loop, [(vars(args), fold, seed) for fold, seed in tasks]):
            rows.extend(done)
            last = done[-1]
            print(f"fold {last['fold']} seed {last['seed']} done ({time.perf_counter() - started:.0f} s)", flush=True)
    from imgrade.core.io import write_csv

    write_csv(out / "rows.csv", rows)
    report = _report(rows, args, time.perf_counter() - started)
    print(report)
    if args.docs:
        docs = Path(args.docs)
        from imgrade.core.io import write_text

        write_text(docs / "results" / "suggest_loop.md", report)
        write_csv(docs / "results" / "suggest_loop.csv", rows)
        _plot(rows, args, docs / "img" / "suggest_curve.png")
        print(f"wrote {docs / 'results'}/suggest_loop.md, .csv and {docs / 'img' / 'suggest_curve.png'}")


def _loop(job: tuple[dict, int, int]) -> list[dict]:
    """One fold x seed: both arms, every round; a row per (arm, round)."""
    settings, fold, seed = job
    args = argparse.Namespace(**settings)
    import torch

    torch.set_num_threads(1)
    logging.getLogger("imgrade").setLevel(logging.WARNING)
    from imgrade.config import RunConfig
    from imgrade.data.loader import load_dataset
    from imgrade.evaluation.metrics import quadratic_weighted_kappa
    from imgrade.pipeline import train
    from imgrade.pipeline.comparer import fold_splits
    from imgrade.pipeline.suggester import rank
    from imgrade.runtime.torch_engine import TorchEngine

    cfg = RunConfig.from_dict(
        {
            "data": {"path": args.data},
            "model": {"task": args.task, "depth": args.depth},
            "train": {"epochs": args.epochs, "seed": seed, "threads": 1, "compile": False},
        }
    )
    imageset = load_dataset(cfg.data)
    split = fold_splits(imageset, args.folds)[fold]
    test = split["test"]
    unlabelled = np.sort(np.concatenate([split["train"], split["val"]]))
    rng = np.random.default_rng(1000 * fold + seed)
    first = list(rng.choice(unlabelled, args.start, replace=False))
    targets = imageset.targets.astype(np.int64)
    k = len(imageset.grade_names)
    folder = Path(args.out) / "runs" / f"fold{fold}-seed{seed}"

    def fit(labelled: list[int], name: str) -> TorchEngine:
        chosen = np.asarray(labelled)
        order = np.arange(len(chosen))
        run_split = {"train": chosen[order % 4 != 3], "val": chosen[order % 4 == 3], "test": test}
        train(cfg, folder / name, split=run_split, imageset=imageset, overwrite=True)
        return TorchEngine.from_run(folder / name, device="cpu")

    def score(engine: TorchEngine) -> dict:
        outputs = engine.outputs(imageset.images[test])
        grades = engine.grades(outputs)
        truth = targets[test]
        return {"accuracy": float(np.mean(grades == truth)), "qwk": quadratic_weighted_kappa(truth, grades, k)}

    rows = []
    engine = fit(first, f"{args.start}")
    start_row = {"fold": fold, "seed": seed, "labels": args.start, **score(engine)}
    rows.extend({**start_row, "arm": arm} for arm in ARMS)
    for arm in ARMS:
        labelled, current = list(first), engine
        picker = np.random.default_rng(10_000 + 1000 * fold + seed)  # random's own stream
        while len(labelled) < args.stop:
            pool = np.setdiff1d(unlabelled, labelled)
            step = min(args.step, args.stop - len(labelled), len(pool))
            if arm == "random":
                picked = picker.choice(pool, step, replace=False)
            else:
                picked = pool[rank(current, imageset.images[pool], step, args.diversity).order]
            labelled.extend(int(i) for i in picked)
            current = fit(labelled, f"{arm}-{len(labelled)}")
            rows.append({"fold": fold, "seed": seed, "labels": len(labelled), **score(current), "arm": arm})
    return rows


def _curves(rows: list[dict], metric: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """arm -> (labels, mean, std) of ``metric`` over folds x seeds."""
    curves = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        labels = np.array(sorted({r["labels"] for r in mine}))
        values = [np.array([r[metric] for r in mine if r["labels"] == n]) for n in labels]
        curves[arm] = (labels, np.array([v.mean() for v in values]), np.array([v.std(ddof=1) for v in values]))
    return curves


def labels_to_reach(labels: np.ndarray, curve: np.ndarray, target: float) -> float | None:
    """The first label count at which ``curve`` reaches ``target``, linear between rounds; None if never.

    >>> labels_to_reach(np.array([30, 60, 90]), np.array([0.2, 0.4, 0.6]), 0.5)
    75.0
    """
    if curve[0] >= target:
        return float(labels[0])
    for i in range(1, len(labels)):
        if curve[i] >= target:
            return float(
                labels[i - 1] + (target - curve[i - 1]) / (curve[i] - curve[i - 1]) * (labels[i] - labels[i - 1])
            )
    return None


def _report(rows: list[dict], args: argparse.Namespace, seconds: float) -> str:
    from imgrade.evaluation.stats import corrected_ttest

    resamples = args.folds * args.seeds
    lines = [
        "# Which photos to label next: suggested vs random",
        "",
        f"`python benchmarks/suggest_loop.py --folds {args.folds} --seeds {args.seeds} --start {args.start} "
        f"--step {args.step} --stop {args.stop} --epochs {args.epochs} --task {args.task} --depth {args.depth} "
        f"--diversity {args.diversity} --jobs {args.jobs}` on the real CUCUMBER-9 sample (248 photos, prototype 1): "
        f"each fold held out in turn, the rest the pool; {resamples} loops (folds x seeds), {seconds / 60:.0f} minutes.",
        "",
        "| labels | random accuracy | suggest accuracy | gain (corrected SE, p) | random QWK | suggest QWK | gain (corrected SE, p) |",
        "|---|---|---|---|---|---|---|",
    ]
    acc, qwk = _curves(rows, "accuracy"), _curves(rows, "qwk")
    n_test = round(248 / args.folds)
    for i, n in enumerate(acc["random"][0]):
        cells = [str(n)]
        for metric, curves in (("accuracy", acc), ("qwk", qwk)):
            pairs = {(r["fold"], r["seed"], r["arm"]): r[metric] for r in rows if r["labels"] == n}
            diffs = [pairs[(f, s, "suggest")] - pairs[(f, s, "random")] for f, s, a in pairs if a == "random"]
            cells += [f"{curves[arm][1][i]:.3f} +- {curves[arm][2][i]:.3f}" for arm in ARMS]
            if n == args.start:
                cells.append("(same runs)")
            else:
                test = corrected_ttest(diffs, n_train=int(n), n_test=n_test)
                cells.append(f"{test['mean']:+.3f} ({test['se']:.3f}, {test['p']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    labels, random_curve, _ = acc["random"]
    target = float(random_curve[-1])
    reached = labels_to_reach(labels, acc["suggest"][1], target)
    lines += [
        "",
        "Mean +- standard deviation over folds x seeds; gain: suggest minus random on the same fold, seed and test "
        "photos, with the corrected resampled t-test (Nadeau and Bengio; n_train the labels, n_test the fold).",
        "",
    ]
    if reached is None:
        lines.append(
            f"Random's final mean accuracy, {target:.3f} at {labels[-1]} labels, is not reached by the suggested "
            f"curve within {labels[-1]} labels: the goal (reach it with {GOAL_SAVING:.0%} fewer) is not met."
        )
    else:
        saving = 1 - reached / labels[-1]
        verdict = "met" if saving >= GOAL_SAVING else "not met"
        lines.append(
            f"Random's final mean accuracy, {target:.3f} at {labels[-1]} labels, is reached by the suggested curve at "
            f"{reached:.0f} labels: {saving:.0%} fewer. Goal ({GOAL_SAVING:.0%} fewer): {verdict}."
        )
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], args: argparse.Namespace, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from imgrade.evaluation.plots import save_figure

    fig = Figure(figsize=(9, 3.8))
    FigureCanvasAgg(fig)
    colours = {"random": "tab:grey", "suggest": "tab:blue"}
    for position, (metric, title) in enumerate((("accuracy", "exact accuracy"), ("qwk", "QWK")), start=1):
        ax = fig.add_subplot(1, 2, position)
        for arm, (labels, mean, std) in _curves(rows, metric).items():
            ax.plot(labels, mean, marker="o", color=colours[arm], label=f"{arm} (mean)")
            ax.fill_between(labels, mean - std, mean + std, color=colours[arm], alpha=0.2, label=f"{arm} (+- 1 std)")
        ax.set_xlabel("labelled photos")
        ax.set_ylabel(title)
        ax.set_xticks(labels)
        ax.grid(alpha=0.3)
        if position == 1:
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"held-out fold, {args.folds} folds x {args.seeds} seeds ({args.task}, depth {args.depth}, {args.epochs} epochs)",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
