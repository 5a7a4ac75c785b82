"""The box plot of ``imgrade compare``: each metric across seeds or folds, one box per recipe."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from imgrade.evaluation.metrics import METRICS
from imgrade.evaluation.plots import DPI, POINT_COLOUR, grade_ticks, save_figure

_REFERENCE_COLOUR = "tab:orange"


def plot_metric_boxes(
    results: dict[str, dict[str, list[float]]],
    metrics: list[str],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    reference: str | None = None,
    seed: int = 0,
) -> None:
    """One box per formulation for each metric, across seeds or folds, with every run as a point.

    Args:
        results: formulation name -> metric name -> values (one per seed or fold); None and NaN
            values are left out, and a formulation without values keeps its tick, marked "no data".
        metrics: the metrics to draw, one subplot each: a row for up to 3, else a grid.
        reference: a formulation drawn in orange, with its median as a dashed line across the
            subplot, so the others read as better or worse than it.
        seed: seeds the horizontal jitter of the points.

    Subplot titles name the metric as the tables do and say which way is better ("MAE (lower is
    better)") where its row in ``METRICS`` says.
    """
    names = list(results)
    if not names:
        raise ValueError("results is empty: there is no formulation to plot")
    if not metrics:
        raise ValueError("metrics is empty: name at least one metric to plot, e.g. ['qwk', 'mae']")
    if reference is not None and reference not in results:
        raise ValueError(f"reference {reference!r} is not among the formulations {names}")

    num_columns = len(metrics) if len(metrics) <= 3 else (2 if len(metrics) == 4 else 3)
    num_rows = -(-len(metrics) // num_columns)
    panel_width = max(4.4, 0.75 * len(names) + 1.6)
    fig = Figure(figsize=(panel_width * num_columns, 4.2 * num_rows + 0.4), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(num_rows, num_columns, squeeze=False)).reshape(-1)
    rng = np.random.default_rng(seed)

    for ax, metric in zip(axes, metrics):
        groups = [_finite(results[name].get(metric)) for name in names]
        filled = [k for k, group in enumerate(groups) if len(group)]
        if filled:
            parts = ax.boxplot(
                [groups[k] for k in filled],
                positions=filled,
                widths=0.55,
                patch_artist=True,
                showfliers=False,
                medianprops={"color": "black", "lw": 1.5},
                whiskerprops={"color": "0.3"},
                capprops={"color": "0.3"},
            )
            for k, box in zip(filled, parts["boxes"]):
                colour = _REFERENCE_COLOUR if names[k] == reference else POINT_COLOUR
                box.set(facecolor=colour, alpha=0.3, edgecolor="0.3")
        for k in filled:
            colour = _REFERENCE_COLOUR if names[k] == reference else "navy"
            jitter = rng.uniform(-0.12, 0.12, size=len(groups[k]))
            ax.scatter(k + jitter, groups[k], s=22, color=colour, edgecolors="white", linewidths=0.5, zorder=3)
        reference_values = groups[names.index(reference)] if reference is not None else []
        if len(reference_values):
            ax.axhline(np.median(reference_values), color=_REFERENCE_COLOUR, lw=1, ls="--", zorder=0)
        grade_ticks(ax.xaxis, [name if len(group) else f"{name}\n(no data)" for name, group in zip(names, groups)])
        for label, name in zip(ax.get_xticklabels(), names):
            if name == reference:
                label.set_fontweight("bold")
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.margins(y=0.12)
        ax.grid(axis="y", alpha=0.25)
        ax.set_title(_metric_title(metric))
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)

    runs = max((len(_finite(values)) for entry in results.values() for values in entry.values()), default=0)
    heading = title or f"Metrics across runs ({len(names)} formulations, up to {runs} runs each)"
    if reference is not None:
        heading += f"\nreference (orange, dashed median): {reference}"
    fig.suptitle(heading)
    save_figure(fig, path)


def _metric_title(metric: str) -> str:
    row = METRICS.get(metric)
    if row is None:
        return metric
    if row.higher_is_better is None:
        return row.label
    return f"{row.label} ({'higher' if row.higher_is_better else 'lower'} is better)"


def _finite(values) -> np.ndarray:
    """Values as floats without None or NaN (a seed whose metric was undefined)."""
    array = np.array([np.nan if v is None else float(v) for v in (values or [])], dtype=np.float64)
    return array[np.isfinite(array)]
