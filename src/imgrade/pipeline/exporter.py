"""``imgrade export``: a trained run as one self-contained ONNX grader file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgrade.core.errors import ConfigError
from imgrade.runtime.onnx_export import export_onnx


def export(run: str | Path, *, out: str | Path, fmt: str = "onnx", tta: bool | None = None) -> dict[str, Any]:
    """Write ``run`` as one self-contained grader file (ONNX); returns what was written (:func:`format_export`)

    An ensemble becomes one graph holding every member; ``tta`` puts the test-time views in the graph.
    """
    if fmt != "onnx":
        raise ConfigError(f"--format {fmt!r} is not supported: use onnx")
    return export_onnx(run, out, tta=tta)


def format_export(summary: dict[str, Any]) -> str:
    """What ``imgrade export`` prints: the file, its size and outputs, the parity check, what next."""
    return (
        f"wrote {summary['path']} ({summary['bytes'] / 1e6:.1f} MB; outputs {', '.join(summary['outputs'])}); "
        f"ONNX Runtime matches PyTorch within {summary['max_score_diff']:.1e}\n"
        f"grade with it: imgrade predict {summary['path']} IMAGES  |  imgrade serve {summary['path']}"
    )
