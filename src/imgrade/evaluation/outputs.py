"""The files an evaluation writes besides metrics.json: predictions.csv and the pictures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from imgrade.core.grades import format_set
from imgrade.core.io import atomic_write
from imgrade.evaluation import plots


def write_predictions(path: Path, imageset, scores, predicted, sets, grade_names) -> None:
    with atomic_write(path, "w") as f:
        writer = csv.writer(f)
        if grade_names is not None:
            header = ["image", "true_grade", "score", "predicted_grade", "error"]
            writer.writerow(header + (["grade_set"] if sets is not None else []))
            for i, (image_id, t) in enumerate(zip(imageset.ids, imageset.targets.astype(int))):
                row = [image_id, grade_names[t], f"{scores[i]:.4f}", grade_names[predicted[i]], f"{scores[i] - t:.4f}"]
                writer.writerow(row + ([format_set(sets[i], grade_names)] if sets is not None else []))
        else:
            writer.writerow(["image", "true", "predicted", "error"])
            for image_id, t, s in zip(imageset.ids, imageset.targets, scores):
                writer.writerow([image_id, f"{t:.6g}", f"{s:.6g}", f"{s - t:.6g}"])


def run_label(run_dir) -> str:
    """A run as plot titles name it: its folder with the folder above, e.g. ``demo-run/run`` or ``runs/mine``.

    The folder alone is often a generic word (the demo trains into ``demo-run/run``); the two
    together say which run a picture belongs to without the whole path.

    >>> run_label("/home/me/runs/mine"), run_label("/demo-run/run/")
    ('runs/mine', 'demo-run/run')
    """
    path = Path(run_dir).resolve()
    return "/".join(part for part in (path.parent.name, path.name) if part)


def evaluation_plots(
    out_dir, history, y, scores, grade_names, metrics, thresholds, title, run_name, frozen_epochs: int = 0
) -> dict[str, Path]:
    """Scatter, error violin, confusion matrix and loss curve PNGs; returns their paths by name."""
    pictures = {"scatter": out_dir / "scatter.png", "violin": out_dir / "error_violin.png"}
    cut_points = thresholds["thresholds"] if thresholds and thresholds.get("kind") == "tuned" else None
    plots.plot_scatter(
        y, scores, grade_names, pictures["scatter"], thresholds=cut_points, title=f"predicted vs true - {title}"
    )
    plots.plot_error_violin(y, scores, grade_names, pictures["violin"], title=f"error per grade - {title}")
    if grade_names is not None:
        pictures["confusion"] = out_dir / "confusion.png"
        plots.plot_confusion(
            np.asarray(metrics["confusion"]), grade_names, pictures["confusion"], title=f"confusion - {title}"
        )
    if history:
        pictures["loss"] = out_dir / "loss_curve.png"
        plots.plot_loss_curve(history, pictures["loss"], title=f"loss: {run_name}", frozen_epochs=frozen_epochs)
    return pictures
