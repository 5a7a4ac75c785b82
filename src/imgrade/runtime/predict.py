"""``imgrade predict``: grade image files and print CSV or JSON. No torch import for .onnx graders."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

from imgrade.core.errors import ConfigError
from imgrade.data.images import list_images, load_images
from imgrade.runtime import load_grader


def predict(
    run: str | Path,
    inputs: list[str],
    *,
    fmt: str = "csv",
    device: str = "auto",
    runtime: str = "auto",
    stream=None,
    tta: bool | None = None,
) -> list[dict]:
    """Score and grade each image under ``inputs``; writes CSV or JSON to ``stream`` (stdout).

    ``run`` is a run folder or checkpoint (PyTorch) or an exported ``.onnx`` file (ONNX Runtime).
    """
    if fmt not in ("csv", "json"):
        raise ConfigError(f"--format {fmt!r} is not csv or json")
    grader = load_grader(run, runtime=runtime, device=device, tta=tta)
    paths = [p for item in inputs for p in list_images(item)]
    records = grader.grade(load_images(paths, grader.image_size), [str(p) for p in paths])
    rows = [output_row(record, probabilities=fmt == "json") for record in records]
    stream = stream or sys.stdout
    if fmt == "json":
        json.dump(rows, stream, indent=1)
        stream.write("\n")
    else:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]) if rows else ["image", "score"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def output_row(record: dict[str, Any], *, probabilities: bool = False) -> dict[str, Any]:
    """One row of ``predict``'s output for a grader record (``--engine ray`` writes the same rows).

    >>> output_row({"file": "a.png", "score": 1.23456, "grade": "L", "grade_set": ["2L", "L"], "probabilities": None})
    {'image': 'a.png', 'score': 1.2346, 'grade': 'L', 'grade_set': '2L|L'}
    """
    row: dict[str, Any] = {"image": record["file"], "score": round(record["score"], 4)}
    if record["grade"] is not None:
        row["grade"] = record["grade"]
    if record["grade_set"] is not None:
        row["grade_set"] = "|".join(record["grade_set"])
    if probabilities and record["probabilities"] is not None:
        row["probabilities"] = {name: round(p, 4) for name, p in record["probabilities"].items()}
    return row
