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
from imgrade.runtime.grading import Engine, Grade


def predict(
    run: str | Path,
    inputs: list[str],
    *,
    fmt: str = "csv",
    device: str = "auto",
    runtime: str = "auto",
    stream=None,
    tta: bool | None = None,
) -> list[Grade]:
    """Score and grade each image under ``inputs``; writes CSV or JSON to ``stream`` (stdout).

    ``run`` is a run folder or checkpoint (PyTorch) or an exported ``.onnx`` file (ONNX Runtime).
    JSON holds one :meth:`Grade.to_dict` per image, the record ``POST /v1/grade`` answers; CSV has
    the columns image, score (4 decimals), grade and grade_set (its grades joined by ``|``), the
    last two only for a model that has them.
    """
    if fmt not in ("csv", "json"):
        raise ConfigError(f"--format {fmt!r} is not csv or json")
    grader = load_grader(run, runtime=runtime, device=device, tta=tta)
    paths = [p for item in inputs for p in list_images(item)]
    results = grader.results([str(p) for p in paths], grader.outputs(load_images(paths, grader.resize)))
    stream = stream or sys.stdout
    if fmt == "json":
        json.dump([result.to_dict() for result in results], stream, indent=1)
        stream.write("\n")
    else:
        writer = csv.DictWriter(stream, fieldnames=csv_columns(grader), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(csv_row(result.to_dict()) for result in results)
    return results


def csv_columns(grader: Engine) -> list[str]:
    """The columns of ``predict``'s CSV for this grader: image, score, and grade and grade_set where it has them."""
    columns = ["image", "score"]
    if grader.grade_names is not None:
        columns.append("grade")
        if grader.conformal is not None:
            columns.append("grade_set")
    return columns


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV row of ``predict``'s output for a grade in its JSON form (:meth:`Grade.to_dict`);
    ``--engine ray`` writes the same rows. The grade set is its names joined by ``|``.

    >>> csv_row({"image": "a.png", "score": 1.23456, "grade": "L", "grade_index": 1, "grade_set": ["2L", "L"], "probabilities": None})
    {'image': 'a.png', 'score': 1.2346, 'grade': 'L', 'grade_set': '2L|L'}
    """
    row: dict[str, Any] = {"image": record["image"], "score": round(record["score"], 4)}
    if record["grade"] is not None:
        row["grade"] = record["grade"]
    if record["grade_set"] is not None:
        row["grade_set"] = "|".join(record["grade_set"])
    return row
