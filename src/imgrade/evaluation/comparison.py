"""The summary of a comparison: per-recipe means, paired tests against the reference, a recommendation.

Rows in (one per recipe x seed x fold, as ``imgrade compare`` scores its runs), files out:
results.csv, summary.csv, summary.md, boxes.png and report.html. Nothing here trains or grades.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import ttest_rel

from imgrade.config import RunConfig
from imgrade.core.errors import ConfigError
from imgrade.core.io import write_csv, write_text
from imgrade.evaluation.boxes import plot_metric_boxes
from imgrade.evaluation.metrics import METRICS, compared, plotted
from imgrade.evaluation.report import mean_std, paired_gain, write_compare_report
from imgrade.evaluation.stats import corrected_ttest

REFERENCE = "regression, rounding"


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
        for name in compared():
            values = [r[name] for r in by[f] if r[name] is not None]
            entry[name] = float(np.mean(values)) if values else None
            entry[name + "_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        if reference is not None and f != REFERENCE:
            for name in dict.fromkeys(key for key, _ in _RANKED_BY.values()):  # what a recommendation ranks by
                gain = paired_test(by[f], reference, name, folds=folds)
                if gain is not None:
                    entry.update({f"{name}_{key}": value for key, value in gain.items()})
        summary.append(entry)
    write_csv(out / "summary.csv", summary)
    recommendation = recommend(summary, metric)
    markdown = summary_markdown(summary, recommendation, seeds=seeds, folds=folds)
    write_text(out / "summary.md", markdown)
    results = {f: {m: [r[m] for r in by[f] if r[m] is not None] for m in plotted()} for f in formulations}
    plot_metric_boxes(
        results,
        list(plotted()),
        out / "boxes.png",
        title="test metrics per formulation",
        reference=REFERENCE if REFERENCE in results else None,  # a comparison need not train regression
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


_RANKED_BY = {"qwk": ("qwk", "accuracy"), "accuracy": ("accuracy", "qwk"), "mae": ("grade_mae", "qwk")}
"""Each ``--metric``'s metric and the one that breaks its ties; ``both`` ranks by QWK and accuracy."""

RECOMMEND_METRICS = (*_RANKED_BY, "both")
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
    key, other = _RANKED_BY[metric]
    sign = 1 if METRICS[key].higher_is_better else -1
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
    shown = compared(table_only=True)
    header = ["formulation", "runs", *shown, "qwk gain", "accuracy gain"]
    over = f"{folds} cross-validation folds" if folds else f"{seeds} seeds on one split"
    if folds and seeds > 1:
        over += f" x {seeds} seeds"
    gains = (
        f"gains are paired differences against {REFERENCE}, mean ± standard error ({gain_test(folds)})"
        if any(s["formulation"] == REFERENCE for s in summary)
        else f"no gains: no {REFERENCE} runs to pair against (add regression to the recipes)"
    )
    lines = [
        f"Test metrics, mean ± std over {over}; {gains}.",
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
