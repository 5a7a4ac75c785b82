"""Every formulation on the same split and budget: which one grades this data best, honestly.

``imgrade compare`` trains each recipe (a task such as regression, classification, coral or corn,
with optional config changes: see :mod:`imgrade.pipeline.recipe`) for each seed (or each cross-validation
fold) into ``OUT/runs/``, scores the test images of each, and summarises them
(:mod:`imgrade.evaluation.comparison`): a table of mean +- std per formulation, a paired comparison against the reference formulation
(regression with plain rounding), a box plot per metric, a report, and one recommendation.

Gains are paired by resample (fold and seed: the same test images). Over cross-validation folds
their p-value comes from the corrected resampled t-test (:func:`imgrade.evaluation.stats.corrected_ttest`),
because folds share most of their training images; over seeds on one split, from the paired t-test.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from imgrade.calibration import set_summary
from imgrade.config import RunConfig, parse_split, read_config_file
from imgrade.core.errors import CheckpointError, ConfigError, DataError
from imgrade.core.registry import head_entry, task_names
from imgrade.core.rundir import ensemble_members
from imgrade.data.imageset import ImageSet
from imgrade.data.loader import load_dataset
from imgrade.data.splits import make_split, stratified_split, stratify_labels
from imgrade.evaluation.comparison import RECOMMEND_METRICS, summarise
from imgrade.evaluation.metrics import compared, ordinal_metrics
from imgrade.pipeline.recipe import Recipe, parse_recipe, parse_recipes
from imgrade.pipeline.trainer import speed_settings, train
from imgrade.runtime.torch_engine import TorchEngine

logger = logging.getLogger(__name__)


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
    # one thread count and precision for every run, chosen now: the recipes compete on equal terms
    configs = {name: speed_settings(run_cfg) for name, run_cfg in configs.items()}
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
            member_seed = int(read_config_file(config)["train"]["seed"])
        except (KeyError, TypeError, ValueError):  # ValueError: a ConfigError too
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
    predictor = TorchEngine.from_run(run, tta=tta)
    outputs = predictor.outputs(test_set.images)
    y = test_set.targets.astype(np.int64)
    coverage = set_size = None
    sets = predictor.sets(outputs)
    if sets is not None:
        summary = set_summary(sets, y, predictor.grade_names)
        coverage, set_size = summary["coverage"], summary["mean_size"]
    rule = "rounding" if head_entry(task).cut_points is not None else "own rule"
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
                **{k: m[k] for k in compared() if k in m},  # those computed from the grades; the rest below
                "coverage": coverage,
                "set_size": set_size,
                "train_seconds": None if seconds is None else round(seconds, 1),
            }
        )
    return rows


"""What ``compare --metric`` optimises: QWK, accuracy, the grade MAE (mean |predicted - true grade|),
or both QWK and accuracy at once."""
