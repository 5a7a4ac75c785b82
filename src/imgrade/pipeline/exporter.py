"""``imgrade export``: a trained run as one self-contained ONNX grader file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgrade.core.errors import ConfigError
from imgrade.runtime.onnx_export import write_onnx
from imgrade.runtime.run import RunFolder


def export(
    run: str | Path, *, out: str | Path, fmt: str = "onnx", tta: bool | None = None, any_size: bool = False
) -> dict[str, Any]:
    """Write ``run`` as one self-contained grader file (ONNX); returns what was written (:func:`format_export`)

    An ensemble becomes one graph holding every member; ``tta`` puts the test-time views in the graph.
    With ``any_size`` the graph takes decoded photos of any size and resizes them itself.
    """
    if fmt != "onnx":
        raise ConfigError(f"--format {fmt!r} is not supported: use onnx")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {out} must end in .onnx")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: give a file name ending in .onnx")
    return write_onnx(RunFolder.open(run).grader(device="cpu", tta=tta), out, name=str(run), any_size=any_size)


def format_export(summary: dict[str, Any]) -> str:
    """What ``imgrade export`` prints: the file, its size and outputs, the parity check, what next."""
    return (
        f"wrote {summary['path']} ({summary['bytes'] / 1e6:.1f} MB; outputs {', '.join(summary['outputs'])}); "
        f"ONNX Runtime matches PyTorch within {summary['max_score_diff']:.1e}\n"
        f"grade with it: imgrade predict {summary['path']} IMAGES  |  imgrade serve {summary['path']}"
    )
