"""Evaluation charts: each function draws one figure and writes it as one PNG, atomically.

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas, never
through ``pyplot``: nothing here changes the caller's backend (a notebook keeps its own), no
global figure list grows, and a server thread can plot (matplotlib's advice for web servers).
"""

from __future__ import annotations

import io
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from imgrade.core.io import atomic_write

DPI = 120
POINT_COLOUR = "tab:blue"
_GUIDE_COLOUR = "0.55"


def plot_scatter(
    y_true,
    scores,
    grade_names: list[str] | None,
    path: str | os.PathLike,
    *,
    thresholds=None,
    seed: int = 0,
    title: str | None = None,
) -> None:
    """Predicted score against the true grade (or value), with the identity line.

    Ordinal sets (``grade_names`` given) get horizontal jitter of +-0.2 (seeded) so the points of
    one grade spread out, grade names on both axes, and the cut points between grades as faint
    dashed lines: ``thresholds`` (K - 1 values) when given, else the rounding midpoints k + 0.5.
    A short black bar marks each grade's mean score. Continuous sets (``grade_names`` None) are
    drawn without jitter on axes "true" and "predicted".
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    _check_pair(y_true, scores)
    fig, ax = _figure(figsize=(7.5, 6.5))
    alpha = _point_alpha(len(y_true))

    if grade_names is None:
        ax.scatter(y_true, scores, s=14, alpha=alpha, color=POINT_COLOUR, edgecolors="none", label="sample")
        low, high = _span(np.concatenate([y_true, scores]))
        ax.plot([low, high], [low, high], color="black", lw=1, label="predicted = true")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.set_title(title or f"Predicted vs true (n={len(y_true)})")
        ax.legend(loc="upper left", frameon=False)
        save_figure(fig, path)
        return

    num_grades = len(grade_names)
    if thresholds is None:
        cuts, cut_label = np.arange(num_grades - 1) + 0.5, "rounding cut points"
    else:
        cuts, cut_label = np.asarray(thresholds, dtype=np.float64).reshape(-1), "thresholds"
        if len(cuts) != num_grades - 1:
            raise ValueError(f"thresholds needs {num_grades - 1} cut points for {num_grades} grades, got {len(cuts)}")
    jitter = np.random.default_rng(seed).uniform(-0.2, 0.2, size=len(y_true))
    ax.scatter(y_true + jitter, scores, s=14, alpha=alpha, color=POINT_COLOUR, edgecolors="none", label="sample")
    for k, cut in enumerate(cuts):
        ax.axhline(cut, color=_GUIDE_COLOUR, lw=0.8, ls="--", alpha=0.6, zorder=0, label=cut_label if k == 0 else None)
    edge = np.array([-0.5, num_grades - 0.5])
    ax.plot(edge, edge, color="black", lw=1, label="predicted = true")
    present = [k for k in range(num_grades) if np.any(y_true == k)]
    for k in present:
        mean = scores[y_true == k].mean()
        label = "grade mean" if k == present[0] else None
        ax.plot([k - 0.3, k + 0.3], [mean, mean], color="black", lw=2.5, label=label)

    finite = scores[np.isfinite(scores)]
    low = min(-0.5, float(finite.min()) - 0.3) if len(finite) else -0.5
    high = max(num_grades - 0.5, float(finite.max()) + 0.3) if len(finite) else num_grades - 0.5
    ax.set_xlim(-0.5, num_grades - 0.5)
    ax.set_ylim(low, high)
    grade_ticks(ax.xaxis, grade_names)
    grade_ticks(ax.yaxis, grade_names)
    ax.set_xlabel("true grade")
    ax.set_ylabel("predicted score (grade scale)")
    ax.set_title(title or f"Predicted score vs true grade (n={len(y_true)})")
    ax.legend(loc="upper left", frameon=True, framealpha=0.9, fontsize=9)
    save_figure(fig, path)


def plot_error_violin(
    y_true,
    scores,
    grade_names: list[str] | None,
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> None:
    """One violin of the error (score - true) per true grade, with lines at 0 and +-0.5.

    Errors inside the dashed +-0.5 band round to the true grade. A grade without samples keeps
    its tick label (with n=0); a grade whose errors are all equal (e.g. one sample) is drawn as
    points. For a continuous target (``grade_names`` None) the true values are cut into 5
    quantile bins, labelled by their ranges.
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    _check_pair(y_true, scores)
    errors = scores - y_true

    if grade_names is None:
        bin_of, labels = _quantile_bins(y_true, num_bins=5)
        groups = [errors[bin_of == b] for b in range(len(labels))]
        xlabel, ylabel = "true value (quantile bins)", "error (predicted - true)"
        default_title = f"Prediction error per true-value bin (n={len(y_true)})"
    else:
        groups = [errors[y_true == k] for k in range(len(grade_names))]
        labels = list(grade_names)
        xlabel, ylabel = "true grade", "error (predicted - true grade)"
        default_title = f"Prediction error per true grade (n={len(y_true)})"

    fig, ax = _figure(figsize=(max(7.0, 0.8 * len(labels) + 2.5), 5.5))
    spread = [k for k, g in enumerate(groups) if len(g) >= 2 and np.ptp(g) > 0]
    if spread:
        parts = ax.violinplot([groups[k] for k in spread], positions=spread, widths=0.8, showmedians=True)
        for body in parts["bodies"]:
            body.set_facecolor(POINT_COLOUR)
            body.set_edgecolor("navy")
            body.set_alpha(0.45)
        for key in ("cmedians", "cmins", "cmaxes", "cbars"):
            parts[key].set_color("navy")
            parts[key].set_linewidth(1)
    for k, group in enumerate(groups):
        if len(group) and k not in spread:
            ax.scatter(np.full(len(group), k), group, s=28, color="navy", zorder=3)

    ax.axhline(0.0, color="black", lw=1, zorder=0)
    if grade_names is not None:
        for sign, label in ((-1, "rounding band (±0.5)"), (1, None)):
            ax.axhline(0.5 * sign, color=_GUIDE_COLOUR, lw=1, ls="--", zorder=0, label=label)
        ax.legend(loc="upper right", frameon=True, framealpha=0.9, fontsize=9)
    grade_ticks(ax.xaxis, [f"{label}\nn={len(g)}" for label, g in zip(labels, groups)])
    ax.set_xlim(-0.6, len(labels) - 0.4)
    if len(errors):
        low, high = _span(errors, pad=0.15)
        if grade_names is not None:
            low, high = min(low, -0.75), max(high, 0.75)
        ax.set_ylim(low, high)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.25)
    ax.set_title(title or default_title)
    save_figure(fig, path)


def plot_confusion(confusion, grade_names: list[str], path: str | os.PathLike, *, title: str | None = None) -> None:
    """Heatmap of a confusion matrix (rows true, columns predicted) with the count in each cell.

    Colours are normalised per row (the share of each true grade's samples), so a grade with
    few samples is as visible as a large one; the numbers are the raw counts. The colour scale
    ends at the largest share in the matrix, so the best-graded cells are the darkest.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    num_grades = len(grade_names)
    if confusion.shape != (num_grades, num_grades):
        raise ValueError(
            f"confusion must be {num_grades}x{num_grades} for {num_grades} grade names, got shape {confusion.shape}"
        )
    row_sums = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, row_sums, out=np.zeros(confusion.shape), where=row_sums > 0)

    side = max(5.5, 0.62 * num_grades + 2.8)
    fig, ax = _figure(figsize=(side + 1.2, side))
    top = float(shares.max()) or 1.0
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=top)
    colourbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colourbar.set_label("share of the true grade's samples (row-normalised)")
    cell_font = 10 if num_grades <= 12 else 7
    for i in range(num_grades):
        for j in range(num_grades):
            if confusion[i, j] or row_sums[i, 0]:
                # Zeros in grey so the cells that hold samples stand out.
                colour = "white" if shares[i, j] > 0.55 * top else ("black" if confusion[i, j] else "0.6")
                ax.text(j, i, str(confusion[i, j]), ha="center", va="center", color=colour, fontsize=cell_font)
    grade_ticks(ax.xaxis, grade_names)
    grade_ticks(ax.yaxis, [f"{name} (n={int(n)})" for name, n in zip(grade_names, row_sums[:, 0])])
    ax.set_xlabel("predicted grade")
    ax.set_ylabel("true grade")
    ax.set_title(title or f"Confusion matrix (n={int(confusion.sum())})")
    save_figure(fig, path)


def plot_loss_curve(
    history: list[dict], path: str | os.PathLike, *, title: str | None = None, frozen_epochs: int = 0
) -> None:
    """Training and validation loss per epoch, with the best validation epoch marked.

    The y axis turns logarithmic when the losses span more than 10x. When the learning rate
    changes it is drawn on a secondary (right) axis. When rows carry ``val_mae`` a second panel
    below shows it. The first ``frozen_epochs`` epochs (``--freeze-backbone-epochs``, when only
    the head trained) are shaded.
    """
    if not history:
        raise ValueError("history is empty: there is no epoch to plot")
    epochs = np.array([row["epoch"] for row in history], dtype=np.float64)
    train_loss = _column(history, "train_loss")
    val_loss = _column(history, "val_loss")
    val_mae = _column(history, "val_mae")
    lr = _column(history, "lr")
    has_mae = bool(np.isfinite(val_mae).any())
    marker = "o" if len(epochs) <= 40 else None

    fig = Figure(figsize=(8.0, 6.5 if has_mae else 4.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if has_mae:
        ax, ax_mae = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    else:
        ax, ax_mae = fig.subplots(), None

    if frozen_epochs > 0 and epochs.min() <= frozen_epochs:
        for axis in (ax, ax_mae):
            if axis is not None:
                axis.axvspan(
                    epochs.min() - 0.5,
                    min(frozen_epochs, epochs.max()) + 0.5,
                    color="0.5",
                    alpha=0.15,
                    lw=0,
                    label="backbone frozen" if axis is ax else None,
                )
    _plot_known(ax, epochs, train_loss, marker=marker, ms=3.5, color="tab:blue", label="train loss")
    _plot_known(ax, epochs, val_loss, marker=marker, ms=3.5, color="tab:orange", label="validation loss")
    losses = np.concatenate([train_loss, val_loss])
    losses = losses[np.isfinite(losses)]
    if len(losses) and losses.min() > 0 and losses.max() / losses.min() > 10:
        ax.set_yscale("log")
    if np.isfinite(val_loss).any():
        best = int(np.nanargmin(val_loss))
        # Align the label away from the plot's edge so it is never cut off.
        position = (best + 0.5) / len(epochs)
        align = "left" if position < 0.2 else ("right" if position > 0.8 else "center")
        ax.plot(epochs[best], val_loss[best], "o", ms=9, mfc="none", mec="red", mew=2, label="best validation")
        ax.annotate(
            f"best {val_loss[best]:.4g}\nepoch {epochs[best]:g}",
            (epochs[best], val_loss[best]),
            xytext=(0, 14),
            textcoords="offset points",
            ha=align,
            va="bottom",
            fontsize=9,
            color="red",
        )
        ax.margins(y=0.15)
    ax.set_ylabel("loss")
    ax.grid(alpha=0.25)
    handles, labels = ax.get_legend_handles_labels()

    known_lr = lr[np.isfinite(lr)]
    if len(known_lr) and np.ptp(known_lr) > 0:
        ax_lr = ax.twinx()
        ax_lr.step(epochs, lr, where="post", color="0.45", lw=1, ls=":", label="learning rate")
        if known_lr.min() > 0 and known_lr.max() / known_lr.min() > 10:
            ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate", color="0.35")
        ax_lr.tick_params(axis="y", colors="0.35", labelsize=9)
        lr_handles, lr_labels = ax_lr.get_legend_handles_labels()
        handles, labels = handles + lr_handles, labels + lr_labels
    ax.legend(handles, labels, loc="upper right", frameon=True, framealpha=0.9, fontsize=9)

    if ax_mae is not None:
        _plot_known(ax_mae, epochs, val_mae, marker=marker, ms=3.5, color="tab:green", label="validation MAE")
        ax_mae.set_ylabel("validation MAE")
        ax_mae.grid(alpha=0.25)
        ax_mae.set_xlabel("epoch")
    else:
        ax.set_xlabel("epoch")
    if len(epochs) <= 20:
        (ax_mae or ax).set_xticks(epochs)
    ax.set_title(title or "Loss per epoch")
    save_figure(fig, path)


def _figure(figsize: tuple[float, float]):
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Render to memory first, so a failed draw leaves no file; then write it atomically."""
    buffer = io.BytesIO()
    # bbox_inches="tight" keeps long grade names and labels inside the image.
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())


def grade_ticks(axis, names: list[str]) -> None:
    """One tick per grade, labelled with its name; long names on an x axis are slanted so they do not overlap."""
    axis.set_ticks(range(len(names)))
    longest = max((len(line) for name in names for line in str(name).splitlines()), default=0)
    if axis.axis_name == "x" and longest * len(names) > 60:
        axis.set_ticklabels(names, rotation=30, ha="right", rotation_mode="anchor")
    else:
        axis.set_ticklabels(names)


def _check_pair(y_true: np.ndarray, scores: np.ndarray) -> None:
    if len(y_true) != len(scores):
        raise ValueError(f"y_true and scores differ in length: {len(y_true)} vs {len(scores)}")


def _point_alpha(n: int) -> float:
    """0.4 for a few thousand points, fainter for more so dense regions still show structure."""
    return 0.4 if n <= 2000 else max(0.05, 0.4 * (2000 / n) ** 0.5)


def _span(values: np.ndarray, pad: float = 0.05) -> tuple[float, float]:
    """Finite min and max of ``values``, widened by ``pad`` of the range (or 0.5 if flat)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return -1.0, 1.0
    low, high = float(values.min()), float(values.max())
    margin = (high - low) * pad if high > low else 0.5
    return low - margin, high + margin


def _quantile_bins(values: np.ndarray, num_bins: int) -> tuple[np.ndarray, list[str]]:
    """Bin index per value and one "low–high" label per bin; tied quantiles merge bins."""
    edges = np.unique(np.quantile(values, np.linspace(0.0, 1.0, num_bins + 1))) if len(values) else np.array([0.0])
    if len(edges) == 1:
        return np.zeros(len(values), dtype=np.int64), [f"{edges[0]:.3g}"]
    bin_of = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    labels = [f"{low:.3g}–{high:.3g}" for low, high in zip(edges[:-1], edges[1:])]
    return bin_of, labels


def _plot_known(ax, x: np.ndarray, y: np.ndarray, **style) -> None:
    """Plot only the epochs that have a value (validation may run every few epochs, or never)."""
    known = np.isfinite(y)
    if known.any():
        ax.plot(x[known], y[known], **style)


def _column(history: list[dict], key: str) -> np.ndarray:
    """One history field as floats, NaN where a row lacks it (e.g. no validation that epoch)."""
    return np.array([np.nan if row.get(key) is None else float(row[key]) for row in history], dtype=np.float64)
