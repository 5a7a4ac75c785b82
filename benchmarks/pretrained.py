"""Do ImageNet weights help on the real CUCUMBER-9 sample? The reference, SORD and EfficientNet-Lite0
(from its ImageNet weights and from scratch) at several input sizes, over k folds x seeds.

Usage:
    python benchmarks/pretrained.py [--sizes 32,64,128] [--folds 5] [--seeds 1] [--epochs 30]
        [--recipes regression,sord,sord+backbone=efficientnet_lite0+pretrained=imagenet,...]
        [--only-size 32=regression,sord] [--threads 0] [--out bench-pretrained] [--docs docs]

Every run (size, recipe, fold, seed) trains once into OUT/sizeS/RECIPE-foldF-seedN and is scored on
its fold's test images (the folds and their 3:1 train/validation splits are those of
benchmarks/accuracy.py and `imgrade compare --folds`, the same at every size). Its rows go to
OUT/results.csv as each run ends, so the script runs in stages: run it again with more sizes,
recipes, folds or seeds (and the same --epochs) and it trains only what is missing. The photos are
32 px; larger sizes are the same photos enlarged by imgrade's loader, as a user's --image-size does.

The table has the exact accuracy and QWK of the calibrated decisions (as a user grades), mean +- std
over folds x seeds, and each recipe's paired gain over the reference (regression) at the same size
with the corrected resampled t-test's standard error (imgrade.evaluation.stats). The recipes need
`pip install "imgrade[efficientnet]"` for --pretrained imagenet. With --docs the table goes to
DOCS/results/pretrained.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import sys
import time
from pathlib import Path

import numpy as np

from imgrade.config import RunConfig
from imgrade.core.io import write_csv, write_text
from imgrade.data.loader import load_dataset
from imgrade.evaluation.comparison import paired_test
from imgrade.pipeline.comparer import fold_splits, score_recipe_run
from imgrade.pipeline.recipe import parse_recipes
from imgrade.pipeline.trainer import speed_settings, train

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/cucumber9-p1-sample/cucumber-9-python"
REFERENCE = "regression"
LITE = "sord+backbone=efficientnet_lite0"
DEFAULT_RECIPES = f"{REFERENCE},sord,{LITE}+pretrained=imagenet,{LITE}"
NUMERIC = ("size", "epochs", "fold", "seed", "run_seed", "accuracy", "qwk", "n_train", "n_test", "train_seconds")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SAMPLE))
    parser.add_argument("--sizes", default="32,64,128", help="input sizes in pixels, comma-separated")
    parser.add_argument("--recipes", default=DEFAULT_RECIPES, help=f"comma-separated (default {DEFAULT_RECIPES})")
    parser.add_argument(
        "--only-size",
        action="append",
        default=[],
        metavar="SIZE=RECIPES",
        help="train only these recipes at SIZE (e.g. 32=regression,sord where the rest do not fit the time); repeatable",
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="training threads (0: imgrade's choice)")
    parser.add_argument(
        "--compile", default="off", help="train.compile for every run (default off: no compile time in a short run)"
    )
    parser.add_argument("--out", default="bench-pretrained")
    parser.add_argument("--docs", default=None, help="write results/pretrained.md under this folder")
    parser.add_argument("--table-only", action="store_true", help="train nothing: the table of the rows so far")
    args = parser.parse_args()
    if not Path(args.data).exists():
        raise SystemExit(
            f"{args.data} is absent: pass --data with the CUCUMBER-9 sample (cucumber9-p1-sample/cucumber-9-python)"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    recipes = [r.name for r in parse_recipes(args.recipes)]
    only = {int(k): [r.name for r in parse_recipes(v)] for k, _, v in (o.partition("=") for o in args.only_size)}
    plan = [(size, recipe) for size in sizes for recipe in only.get(size, recipes)]
    rows = _read_rows(out / "results.csv")
    if not args.table_only:
        with (out / "commands.txt").open("a") as f:  # what trained the rows, stage by stage, for the docs
            f.write(_command(sys.argv[1:]) + "\n")
        rows = run(args, out, plan, rows)
    mine = [r for r in rows if r["epochs"] == args.epochs and r["fold"] < args.folds and r["seed"] < args.seeds]
    table = results_table(mine, sizes, recipes, folds=args.folds)
    print(table)
    if args.docs:
        write_docs(Path(args.docs), table, args, out)


def run(args, out: Path, plan: list[tuple[int, str]], rows: list[dict]) -> list[dict]:
    """Train and score every run of ``plan`` x folds x seeds not in ``rows``; save the rows after each."""
    done = {(r["size"], r["recipe"], r["fold"], r["seed"]) for r in rows if r["epochs"] == args.epochs}
    todo = [
        (size, recipe, fold, seed)
        for size, recipe in plan
        for fold in range(args.folds)
        for seed in range(args.seeds)
        if (size, recipe, fold, seed) not in done
    ]
    print(f"{len(todo)} runs to train ({len(done)} done before)", flush=True)
    loaded: dict[int, tuple] = {}
    for i, (size, recipe_name, fold, seed) in enumerate(todo, 1):
        if size not in loaded:
            base = RunConfig.from_dict(
                {
                    "data": {"path": args.data, "image_size": size},
                    "train": {"epochs": args.epochs, "threads": args.threads, "compile": args.compile},
                }
            )
            imageset = load_dataset(base.data)
            loaded = {size: (base, imageset, fold_splits(imageset, args.folds))}  # one size in memory at a time
        base, imageset, splits = loaded[size]
        (recipe,) = parse_recipes(recipe_name)
        cfg = speed_settings(recipe.config(base.with_overrides({"train.seed": seed})))
        split = splits[fold]
        run_dir = out / f"size{size}" / f"{recipe.folder}-fold{fold}-seed{seed}"
        t0 = time.perf_counter()
        with contextlib.redirect_stderr(io.StringIO()):  # one line per run here; the run's own log is in its folder
            train(cfg, run_dir, split=split, imageset=imageset, overwrite=True)
        seconds = time.perf_counter() - t0
        for row in score_recipe_run(run_dir, imageset.subset(split["test"]), recipe, fold, seed, seconds):
            extra = {"size": size, "epochs": args.epochs, "n_train": len(split["train"]), "n_test": len(split["test"])}
            rows.append({**extra, **row})
        write_csv(out / "results.csv", rows)
        calibrated = rows[-1]
        print(
            f"[{i}/{len(todo)}] {size} px {recipe.name} fold {fold} seed {seed}: "
            f"accuracy {calibrated['accuracy']:.3f} QWK {calibrated['qwk']:.3f} in {seconds:.0f} s",
            flush=True,
        )
    return rows


def results_table(rows: list[dict], sizes: list[int], recipes: list[str], *, folds: int) -> str:
    """Markdown: per size and recipe, accuracy and QWK (mean +- std) and the paired gains over the reference."""
    lines = [
        "| size | recipe | runs | exact accuracy | QWK | accuracy gain vs reference | QWK gain vs reference | train s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        reference = _calibrated(rows, size, REFERENCE)
        for recipe in recipes:
            mine = _calibrated(rows, size, recipe)
            if not mine:
                continue
            cells = [f"{size} px", f"`{recipe}`", str(len(mine))]
            cells += [_mean_std([r[m] for r in mine]) for m in ("accuracy", "qwk")]
            for metric in ("accuracy", "qwk"):
                test = paired_test(mine, reference, metric, folds=folds) if reference and recipe != REFERENCE else None
                cells.append(_gain(test) if reference else "no reference run at this size")
            cells.append(f"{np.mean([r['train_seconds'] for r in mine]):.0f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _calibrated(rows: list[dict], size: int, recipe: str) -> list[dict]:
    return [r for r in rows if r["size"] == size and r["recipe"] == recipe and r["decision"] == "calibrated"]


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def _gain(test: dict | None) -> str:
    """``+0.041 ± 0.015 (p 0.03)``: the mean paired difference, its corrected standard error and p."""
    if test is None:
        return "-"
    if test["diff_se"] is None:
        return f"{test['diff']:+.3f}"
    p = "n/a" if test["p"] is None or not np.isfinite(test["p"]) else f"{test['p']:.2g}"
    return f"{test['diff']:+.3f} ± {test['diff_se']:.3f} (p {p})"


def write_docs(docs: Path, table: str, args, out: Path) -> None:
    """DOCS/results/pretrained.md: the commands that trained the rows (folders by name) and the table."""
    stages = (out / "commands.txt").read_text().splitlines() if (out / "commands.txt").exists() else []
    text = [
        "<!-- written by benchmarks/pretrained.py; do not edit by hand -->",
        f"{args.folds} folds x {args.seeds} seed(s), {args.epochs} epochs per network (train.compile {args.compile}),"
        f" on {Path(args.data).name} (248 real 32 px photos, enlarged to each size). Exact accuracy and QWK of the"
        " calibrated decisions, mean ± std over folds x seeds; gains are paired with the reference (regression)"
        " at the same size, ± the corrected resampled t-test's standard error. The runs were trained in stages:",
        "",
        *[f"    {command}" for command in stages],
        "",
        table,
    ]
    write_text(docs / "results" / "pretrained.md", "\n".join(text) + "\n")


def _command(argv: list[str]) -> str:
    """The command line as shown in the docs: --docs dropped, absolute folders by their name."""
    if "--docs" in argv:  # where the table is written is no part of the measurement
        i = argv.index("--docs")
        argv = argv[:i] + argv[i + 2 :]
    shown = [Path(a).name if Path(a).is_absolute() else a for a in argv if not a.startswith("--docs=")]
    return " ".join(["python benchmarks/pretrained.py", *shown])


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in NUMERIC:
            if row.get(key) not in (None, "", "None"):
                row[key] = float(row[key])
        for key in ("size", "epochs", "fold", "seed", "run_seed"):
            row[key] = int(row[key])
    return rows


if __name__ == "__main__":
    main()
