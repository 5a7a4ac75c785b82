"""What ``imgrade evaluate MODEL.onnx`` records about the file it accepted: its identity and a model card.

QA signs off the artifact that goes to the line, not the training folder: the acceptance names the
file by its SHA-256 and size, with what its metadata says (precision, export date, the imgrade that
trained it), so a later copy can be checked to be the accepted one.
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Any

from imgrade.core.version import __version__
from imgrade.evaluation.metrics import METRICS, headline
from imgrade.runtime.grading import Engine

RUNTIME_NAMES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO", "torch": "PyTorch"}


def file_facts(model: Path, grader: Engine) -> dict[str, Any]:
    """The accepted file: name, SHA-256, size, precision, export date, versions, runtime."""
    digest = hashlib.sha256()
    with open(model, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    meta = getattr(grader, "meta", {})
    return {
        "file": model.name,
        "sha256": digest.hexdigest(),
        "bytes": model.stat().st_size,
        "precision": grader.precision,
        "exported": meta.get("exported"),
        "trained_with": grader.version,
        "runtime": grader.runtime,
        "tta": bool(getattr(grader, "tta", False)),
    }


def acceptance_card(card: str | None, facts: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The file's model card followed by an acceptance section with ``metrics`` (Markdown).

    >>> facts = {"file": "m.onnx", "sha256": "ab12", "bytes": 10, "precision": "fp32", "runtime": "onnx"}
    >>> text = acceptance_card(None, facts, {"data": "photos", "n": 3, "accuracy": 0.5, "per_grade": {}})
    >>> "| accuracy | 0.500 |" in text and "`ab12`" in text and "fp32, graded by ONNX Runtime." in text
    True
    """
    graded = metrics.get("per_grade") is not None
    rows = [
        f"| {METRICS[key].label} | {_number(metrics[key], METRICS[key].digits)} |"
        for key in headline(graded)
        if metrics.get(key) is not None
    ]
    sets = metrics.get("grade_sets")
    if sets:
        rows.append(f"| grade-set coverage (target {1 - sets['alpha']:.0%}) | {sets['coverage']:.3f} |")
        rows.append(f"| mean grade-set size | {sets['mean_size']:.2f} |")
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    lines = [
        (card or f"# {facts['file']}\n\nThis file carries no model card.").rstrip(),
        "",
        f"## Acceptance: {facts['file']} on {metrics.get('data')}",
        "",
        f"Graded on {today} by imgrade {__version__} with ONNX Runtime, from the file itself: "
        f"`{facts['file']}`, SHA-256 `{facts['sha256']}`, {facts['bytes']:,} bytes, {facts['precision']}, graded by {RUNTIME_NAMES.get(facts['runtime'], facts['runtime'])}.",
        "",
        f"{metrics.get('n')} photos.",
        "",
        "| metric | value |",
        "|---|---|",
        *rows,
        "",
    ]
    return "\n".join(lines)


def _number(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
