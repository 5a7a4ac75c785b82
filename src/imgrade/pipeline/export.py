"""``imgrade export``: a trained run as one self-contained ONNX grader file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgrade.core.errors import ConfigError
from imgrade.runtime.export import export_onnx


def export(run: str | Path, *, out: str | Path, fmt: str = "onnx", tta: bool | None = None) -> dict[str, Any]:
    """Write ``run`` as one self-contained grader file (ONNX); prints what was written.

    An ensemble becomes one graph holding every member; ``tta`` puts the test-time views in the graph.
    """
    if fmt != "onnx":
        raise ConfigError(f"--format {fmt!r} is not supported: use onnx")
    summary = export_onnx(run, out, tta=tta)
    print(
        f"wrote {summary['path']} ({summary['bytes'] / 1e6:.1f} MB; outputs {', '.join(summary['outputs'])}); "
        f"ONNX Runtime matches PyTorch within {summary['max_score_diff']:.1e}\n"
        f"grade with it: imgrade predict {summary['path']} IMAGES  |  imgrade serve {summary['path']}"
    )
    return summary
