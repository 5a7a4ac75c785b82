"""Every formulation on the same split and budget: which one grades this data best, honestly.

``imgrade compare`` trains each recipe (a task such as regression, classification, coral or corn,
with optional config changes: see :mod:`imgrade.pipeline.recipe`) for each seed (or each cross-validation
fold) into ``OUT/runs/``, scores the test images of each, and summarises:
a table of mean +- std per formulation, a paired comparison against the reference formulation
(regression with plain rounding), a box plot per metric, a report, and one recommendation.

Gains are paired by resample (fold and seed: the same test images). Over cross-validation folds
their p-value comes from the corrected resampled t-test (:func:`imgrade.evaluate.stats.corrected_ttest`),
because folds share most of their training images; over seeds on one split, from the paired t-test.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.stats import ttest_rel

from imgrade.calibrate import set_summary
from imgrade.config import RunConfig, parse_split
from imgrade.core.errors import CheckpointError, ConfigError, DataError
from imgrade.core.io import write_csv, write_text
from imgrade.core.registry import task_names
from imgrade.core.rundir import ensemble_members
from imgrade.data.imageset import ImageSet
from imgrade.data.loader import load_dataset
from imgrade.data.splits import make_split, stratified_split, stratify_labels
from imgrade.evaluate.boxes import plot_metric_boxes
from imgrade.evaluate.metrics import ordinal_metrics
from imgrade.evaluate.report import mean_std, paired_gain, write_compare_report
from imgrade.evaluate.stats import corrected_ttest
from imgrade.pipeline.recipe import Recipe, parse_recipe, parse_recipes
from imgrade.pipeline.train import train
from imgrade.runtime.predictor import Predictor

logger = logging.getLogger(__name__)

REFERENCE = "regression, rounding"
METRICS = ("qwk", "accuracy", "within1", "grade_mae", "mae", "rmse", "coverage", "set_size", "train_seconds")
HIGHER_IS_BETTER = {"qwk": True, "accuracy": True, "within1": True, "coverage": True}
PLOTTED = ("qwk", "accuracy", "within1", "grade_mae", "coverage", "set_size")


def fold_splits(imageset: ImageSet, folds: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Stratified k-fold: fold f is the test set; the rest is split 3:1 into train and val."""
    if folds < 2:
        raise ConfigError(f"--folds {folds} must be at least 2 (or 0 for one split with several seeds)")
    strata = stratify_labels(imageset)
    parts = stratified_split(strata, tuple([1.0 / folds] * folds), seed, imageset.groups)
    result = []
    for f, test in enumerate(parts):
        rest = np.setdiff1d(np.arange(len(imageset)), test)
        groups = None if imageset.groups is None else imageset.groups[rest]
        train, val = stratified_split(strata[rest], (0.75, 0.25), seed + f, groups)
        result.append({"train": rest[train], "val": rest[val], "test": np.sort(test)})
    return result


def parse_tasks(text: str) -> list[Recipe]:
    """``--tasks``: plain task names, each one a recipe without changes."""
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    for task in tasks:
        RunConfig.from_dict({"model": {"task": task}})  # unknown names fail with the closest one
    if not tasks:
        raise ConfigError(f"--tasks is empty: give some of {', '.join(task_names())}")
    return [parse_recipe(task) for task in dict.fromkeys(tasks)]


def compare(
    cfg: RunConfig,
    out: str | Path,
    *,
    tasks: str | list[str] | None = None,
    recipes: str | list[str] | None = None,
    seeds: int = 3,
    folds: int = 0,
    metric: str = "qwk",
) -> dict[str, Any]:
    """Train every recipe on the same split(s) and budget; write tables, box plots and a report.

    ``recipes`` (``"regression,corn+ema=0.999+tta"``, see :mod:`imgrade.pipeline.recipe`) or ``tasks`` (plain
    task names); neither: the four tasks. ``metric`` (qwk, accuracy, mae or both) is what the
    recommendation optimises.
    """
    if cfg.data.path is None:
        raise ConfigError("no data given: pass --data PATH")
    if tasks is not None and recipes is not None:
        raise ConfigError("give --recipes or --tasks, not both: every task is a recipe")
    if recipes is not None:
        recipe_list = parse_recipes(recipes if isinstance(recipes, str) else ",".join(recipes))
    else:
        tasks = "regression,classification,coral,corn" if tasks is None else tasks
        recipe_list = parse_tasks(tasks if isinstance(tasks, str) else ",".join(tasks))
    return run_comparison(cfg, out, recipes=recipe_list, seeds=seeds, folds=folds, metric=metric)


def run_comparison(
    cfg: RunConfig,
    out: str | Path,
    *,
    recipes: list[Recipe],
    seeds: int = 3,
    folds: int = 0,
    metric: str = "qwk",
) -> dict[str, Any]:
    """Train and score every recipe x seed (x fold); write the tables, plots and report into ``out``."""
    out = Path(out)
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds} must be at least 1")
    if (out / "results.csv").exists():
        raise ConfigError(f"{out} already holds a comparison: choose another --out")
    if metric not in RECOMMEND_METRICS:
        raise ConfigError(f"--metric {metric!r} is not one of {', '.join(RECOMMEND_METRICS)}")
    configs = {recipe.name: recipe.config(cfg) for recipe in recipes}  # every bad recipe fails before any training
    imageset = load_dataset(cfg.data)
    if not imageset.is_ordinal:
        raise DataError(f"compare needs graded data, but {cfg.data.path} has a continuous target")
    splits = fold_splits(imageset, folds) if folds else [make_split(imageset, parse_split(cfg.data.split), 0)]
    rows: list[dict[str, Any]] = []
    total = len(splits) * len(recipes) * seeds
    done = 0
    trained: dict[str, float] = {}  # run folder -> training seconds: recipes that differ only by tta share runs
    for f, split in enumerate(splits):
        test_set = imageset.subset(split["test"])
        for seed in range(seeds):
            for recipe in recipes:
                done += 1
                name = f"{recipe.folder}-fold{f}" if folds else f"{recipe.folder}-seed{seed}"
                if folds and seeds > 1:
                    name += f"-seed{seed}"
                logger.info(f"\n[{done}/{total}] {name}")
                run_cfg = configs[recipe.name]
                run_cfg = replace(run_cfg, train=replace(run_cfg.train, seed=seed))
                if name not in trained:
                    t0 = time.perf_counter()
                    train(run_cfg, out / "runs" / name, split=split, imageset=imageset)
                    trained[name] = time.perf_counter() - t0
                seconds = trained[name]
                for row in score_recipe_run(out / "runs" / name, test_set, recipe, f, seed, seconds):
                    # The split sizes, for the corrected t-test's n_test / n_train.
                    rows.append({**row, "n_train": len(split["train"]), "n_test": len(split["test"])})
    return summarise(rows, out, cfg, recipes=[r.name for r in recipes], seeds=seeds, folds=folds, metric=metric)


def score_recipe_run(
    run: Path, test_set: ImageSet, recipe: Recipe, fold: int, seed: int, seconds: float | None
) -> list[dict[str, Any]]:
    """Rows of a recipe's run on the test images and, for an ensemble, of each of its members.

    An ensemble run keeps its members as complete run folders ``members/m0``, ``members/m1``, ...;
    each is scored like the run (same images, same ``tta``) as formulation "<recipe> member", with
    its own seed from its config.yaml and the ensemble's seed as ``run_seed`` (what pairs it).
    """
    rows = _score_run(run, test_set, recipe.name, recipe.task, fold, seed, seconds, tta=recipe.tta)
    for member in ensemble_members(run):
        config = member / "config.yaml"
        try:
            member_seed = int(yaml.safe_load(config.read_text())["train"]["seed"])
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
            raise CheckpointError(
                f"{config} names no train.seed: the ensemble member {member} is incomplete, retrain {run}"
            ) from None
        member_rows = _score_run(
            member, test_set, f"{recipe.name} member", recipe.task, fold, member_seed, None, tta=recipe.tta
        )
        rows += [{**r, "run_seed": seed} for r in member_rows]
    return rows


def _score_run(
    run: Path,
    test_set: ImageSet,
    name: str,
    task: str,
    fold: int,
    seed: int,
    seconds: float | None,
    *,
    tta: bool = False,
) -> list[dict[str, Any]]:
    """Test metrics of one run, once with the head's own rule and once as calibrated."""
    # scored as the recipe says, whatever the run's own calibrate.tta default
    predictor = Predictor.from_run(run, tta=tta)
    outputs = predictor.outputs(test_set.images)
    y = test_set.targets.astype(np.int64)
    coverage = set_size = None
    sets = predictor.sets(outputs)
    if sets is not None:
        summary = set_summary(sets, y, predictor.grade_names)
        coverage, set_size = summary["coverage"], summary["mean_size"]
    rule = "rounding" if task == "regression" else "own rule"
    rows = []
    for decision, predicted in ((rule, outputs.native), ("calibrated", predictor.grades(outputs))):
        m = ordinal_metrics(y, outputs.scores, predictor.grade_names, y_pred=predicted)
        rows.append(
            {
                "formulation": f"{name}, {decision}",
                "recipe": name,
                "task": task,
                "decision": decision,
                "fold": fold,
                "seed": seed,
                "run_seed": seed,
                "tta": tta,
                "thresholds": (predictor.thresholds or {}).get("kind", "rounding"),
                **{k: m[k] for k in ("qwk", "accuracy", "within1", "grade_mae", "mae", "rmse")},
                "coverage": coverage,
                "set_size": set_size,
                "train_seconds": None if seconds is None else round(seconds, 1),
            }
        )
    return rows


def summarise(
    rows: list[dict[str, Any]],
    out: Path,
    cfg: RunConfig,
    *,
    recipes: list[str],
    seeds: int,
    folds: int,
    metric: str = "qwk",
) -> dict[str, Any]:
    """Aggregate per-run rows into the summary table, the paired comparison, the plots and the report."""
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "results.csv", rows)
    formulations = list(dict.fromkeys(r["formulation"] for r in rows))
    by = {f: [r for r in rows if r["formulation"] == f] for f in formulations}
    summary = []
    reference = by.get(REFERENCE)
    for f in formulations:
        entry: dict[str, Any] = {"formulation": f, "runs": len(by[f])}
        if by[f][0].get("recipe", "").endswith(" member"):
            entry["member"] = True  # one network of an ensemble: shown, never recommended
        for name in METRICS:
            values = [r[name] for r in by[f] if r[name] is not None]
            entry[name] = float(np.mean(values)) if values else None
            entry[name + "_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        if reference is not None and f != REFERENCE:
            for name in ("qwk", "accuracy", "grade_mae"):
                gain = paired_test(by[f], reference, name, folds=folds)
                if gain is not None:
                    entry.update({f"{name}_{key}": value for key, value in gain.items()})
        summary.append(entry)
    write_csv(out / "summary.csv", summary)
    recommendation = recommend(summary, metric)
    markdown = summary_markdown(summary, recommendation, seeds=seeds, folds=folds)
    write_text(out / "summary.md", markdown)
    results = {f: {m: [r[m] for r in by[f] if r[m] is not None] for m in PLOTTED} for f in formulations}
    plot_metric_boxes(
        results, list(PLOTTED), out / "boxes.png", title="test metrics per formulation", reference=REFERENCE
    )
    write_compare_report(
        out / "report.html",
        summary,
        recommendation,
        out / "boxes.png",
        cfg,
        recipes=recipes,
        seeds=seeds,
        folds=folds,
        gain_test=gain_test(folds),
    )
    return {"summary": summary, "recommendation": recommendation, "rows": rows, "markdown": markdown}


def paired_test(
    rows: list[dict[str, Any]], reference: list[dict[str, Any]], metric: str, *, folds: int
) -> dict[str, Any] | None:
    """Mean gain of ``rows`` over ``reference`` paired by resample (fold, run seed), its standard error and p.

    Rows of one resample (an ensemble's members) are averaged first. Over folds the standard error
    and p are the corrected resampled t-test's (n_train and n_test from the rows); on one split,
    the plain paired t-test's. None when no resample is shared; se and p None below two pairs.

    >>> ref = [{"fold": f, "run_seed": 0, "qwk": q} for f, q in enumerate([0.5, 0.6, 0.7])]
    >>> new = [{"fold": f, "run_seed": 0, "qwk": q, "n_train": 60, "n_test": 30} for f, q in enumerate([0.6, 0.6, 0.9])]
    >>> {k: round(v, 4) for k, v in paired_test(new, ref, "qwk", folds=3).items()}
    {'diff': 0.1, 'diff_std': 0.1, 'diff_se': 0.0913, 'p': 0.3876, 'pairs': 3}
    """
    mine, theirs = _per_resample(rows, metric), _per_resample(reference, metric)
    shared = [key for key in mine if key in theirs]
    if not shared:
        return None
    diff = np.array([mine[key] - theirs[key] for key in shared])  # same test images in each pair
    result: dict[str, Any] = {
        "diff": float(np.mean(diff)),
        "diff_std": None,
        "diff_se": None,
        "p": None,
        "pairs": len(shared),
    }
    if len(diff) < 2:
        return result
    result["diff_std"] = float(np.std(diff, ddof=1))
    if folds:
        paired = set(shared)
        sizes = [r for r in rows if (r["fold"], r["run_seed"]) in paired]
        n_train = float(np.mean([r["n_train"] for r in sizes]))
        n_test = float(np.mean([r["n_test"] for r in sizes]))
        test = corrected_ttest(diff, n_train, n_test)
        result["diff_se"], p = test["se"], test["p"]
    else:
        result["diff_se"] = result["diff_std"] / math.sqrt(len(diff))
        a = np.array([mine[key] for key in shared])
        b = np.array([theirs[key] for key in shared])
        p = float(ttest_rel(a, b).pvalue) if np.ptp(diff) > 0 else math.nan
    result["p"] = None if math.isnan(p) else p
    return result


def _per_resample(rows: list[dict[str, Any]], metric: str) -> dict[tuple[int, int], float]:
    """``{(fold, run_seed): mean metric}`` over the rows with a defined value."""
    groups: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        if r.get(metric) is not None:
            groups.setdefault((int(r["fold"]), int(r["run_seed"])), []).append(float(r[metric]))
    return {key: float(np.mean(values)) for key, values in groups.items()}


RECOMMEND_METRICS = ("qwk", "accuracy", "mae", "both")
"""What ``compare --metric`` optimises: QWK, accuracy, the grade MAE (mean |predicted - true grade|),
or both QWK and accuracy at once."""
_LABEL = {"qwk": "qwk", "accuracy": "accuracy", "grade_mae": "grade MAE"}


def recommend(summary: list[dict[str, Any]], metric: str = "qwk") -> str:
    """One line: the formulation to use for ``metric`` (see RECOMMEND_METRICS), ensemble members aside.

    Means are compared at 3 decimals (differences below that are noise), ties broken by the other
    metric. qwk: best qwk (and, when another wins it, the best accuracy); accuracy: best accuracy;
    mae: smallest grade MAE; both: a formulation at least as good as every other on qwk and on
    accuracy, else among those no other beats on both, the best worst rank (minimax of its rank
    by qwk and by accuracy; then the rank sum, then qwk).

    >>> rows = [{"formulation": "regression, rounding", "qwk": 0.80, "accuracy": 0.50, "grade_mae": 0.60},
    ...         {"formulation": "corn, own rule", "qwk": 0.85, "accuracy": 0.45, "grade_mae": 0.62, "qwk_diff": 0.05, "accuracy_diff": -0.05}]
    >>> recommend(rows, "accuracy")
    'use regression, rounding: accuracy 0.500, qwk 0.800; by qwk the best is corn, own rule: qwk 0.850, accuracy 0.450'
    """
    if metric not in RECOMMEND_METRICS:
        raise ConfigError(f"--metric {metric!r} is not one of {', '.join(RECOMMEND_METRICS)}")
    if metric == "both":
        return _recommend_both(summary)
    key, other = {"qwk": ("qwk", "accuracy"), "accuracy": ("accuracy", "qwk"), "mae": ("grade_mae", "qwk")}[metric]
    sign = -1 if key == "grade_mae" else 1  # lower is better
    candidates = [s for s in summary if s.get(key) is not None and s.get(other) is not None and not s.get("member")]
    if not candidates:
        return f"no formulation produced a defined {_LABEL[key]}: the test sets hold a single grade"
    best = max(candidates, key=lambda s: (sign * round(s[key], 3), s[other]))
    line = (
        f"use {best['formulation']}: {_LABEL[key]} {mean_std(best, key)}, {_LABEL[other]} {mean_std(best, other)}"
        + _gain(summary, best, key, other)
    )
    runner = max(candidates, key=lambda s: (round(s[other], 3), sign * s[key]))
    if runner is not best:
        intro = "for the most exact grades use" if metric == "qwk" else f"by {_LABEL[other]} the best is"
        line += f"; {intro} {runner['formulation']}: {_LABEL[other]} {mean_std(runner, other)}, {_LABEL[key]} {mean_std(runner, key)}"
    return line


def _recommend_both(summary: list[dict[str, Any]]) -> str:
    candidates = [
        s for s in summary if s.get("qwk") is not None and s.get("accuracy") is not None and not s.get("member")
    ]
    if not candidates:
        return "no formulation produced a defined qwk: the test sets hold a single grade"
    q = {id(s): round(s["qwk"], 3) for s in candidates}
    a = {id(s): round(s["accuracy"], 3) for s in candidates}

    def beats(x, y) -> bool:
        return q[id(x)] >= q[id(y)] and a[id(x)] >= a[id(y)] and (q[id(x)] > q[id(y)] or a[id(x)] > a[id(y)])

    front = [s for s in candidates if not any(beats(o, s) for o in candidates)]
    rank_q = {id(s): 1 + sum(q[id(o)] > q[id(s)] for o in candidates) for s in candidates}
    rank_a = {id(s): 1 + sum(a[id(o)] > a[id(s)] for o in candidates) for s in candidates}
    best = min(front, key=lambda s: (max(rank_q[id(s)], rank_a[id(s)]), rank_q[id(s)] + rank_a[id(s)], -s["qwk"]))
    scores = f"qwk {mean_std(best, 'qwk')}, accuracy {mean_std(best, 'accuracy')}" + _gain(
        summary, best, "qwk", "accuracy"
    )
    if rank_q[id(best)] == 1 and rank_a[id(best)] == 1:
        return f"use {best['formulation']}, at least as good as every other on qwk and accuracy: {scores}"
    others = ", ".join(s["formulation"] for s in front if s is not best)
    return (
        f"no formulation is best on both qwk and accuracy; use {best['formulation']}, the best compromise "
        f"(rank {rank_q[id(best)]} by qwk and {rank_a[id(best)]} by accuracy of {len(candidates)}): {scores}; "
        f"also unbeaten on both: {others}"
    )


def _gain(summary: list[dict[str, Any]], best: dict[str, Any], *metrics: str) -> str:
    """`` (paired gain over the reference: qwk +0.041, accuracy +0.020)``; empty for the reference itself."""
    ref = next((s for s in summary if s["formulation"] == REFERENCE), None)
    gains = [f"{_LABEL[m]} {best[m + '_diff']:+.3f}" for m in metrics if best.get(m + "_diff") is not None]
    if ref is None or best is ref or not gains:
        return ""
    return f" (paired gain over {REFERENCE}: {', '.join(gains)})"


def gain_test(folds: int) -> str:
    """Which test gave the gains' standard errors and p-values, for a table caption."""
    if folds:
        return "p: corrected resampled t-test of Nadeau and Bengio, paired by fold and seed, since folds share training images"
    return "p: paired t-test over seeds"


def summary_markdown(summary: list[dict[str, Any]], recommendation: str, *, seeds: int, folds: int) -> str:
    shown = ("qwk", "accuracy", "within1", "grade_mae", "mae", "coverage", "set_size", "train_seconds")
    header = ["formulation", "runs", *shown, "qwk gain", "accuracy gain"]
    over = f"{folds} cross-validation folds" if folds else f"{seeds} seeds on one split"
    if folds and seeds > 1:
        over += f" x {seeds} seeds"
    lines = [
        f"Test metrics, mean ± std over {over}; gains are paired differences against {REFERENCE}, "
        f"mean ± standard error ({gain_test(folds)}).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for s in summary:
        cells = [s["formulation"], str(s["runs"])] + [mean_std(s, m) for m in shown]
        cells += [paired_gain(s, "qwk"), paired_gain(s, "accuracy")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", recommendation, ""]
    return "\n".join(lines)
