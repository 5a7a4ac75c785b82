"""Graders: a trained model as images -> scores, grades and grade sets, from PyTorch or ONNX Runtime.

``load_grader`` picks the back end: a run folder or ``.pt`` checkpoint loads with PyTorch, an
``.onnx`` file written by ``imgrade export`` with ONNX Runtime (no torch import).
"""

from __future__ import annotations

from pathlib import Path

from imgrade.core.errors import ConfigError
from imgrade.runtime.grading import Engine, Outputs

RUNTIMES = ("auto", "torch", "onnx")

__all__ = ["Engine", "Outputs", "RUNTIMES", "load_grader"]


def load_grader(
    source: str | Path, runtime: str = "auto", device: str = "auto", threads: int | None = None, tta: bool | None = None
) -> Engine:
    """Load a grader from a run folder, a ``.pt`` checkpoint or an exported ``.onnx`` file.

    Args:
        source: what ``imgrade train`` wrote (folder or checkpoint) or ``imgrade export`` wrote.
        runtime: "auto" (by the file: .onnx -> onnx, else torch), "torch" or "onnx".
        device: PyTorch device for the torch runtime ("auto", "cpu", "cuda", ...).
        threads: inference threads, ONNX Runtime's intra-op or torch's (None: ONNX Runtime's are
            chosen from the usable and busy cores, see ``OnnxEngine.from_file``; torch keeps its own).
        tta: grade each image as the average of a few views of it (flip, small shifts); None: as
            the run was configured (``calibrate.tta``). An .onnx file does so when it was exported
            with ``--tta``, and only then: asking otherwise is an error.

    Raises:
        ConfigError: an unknown runtime, or one that cannot read ``source``.
        CheckpointError: ``source`` is not a model imgrade can load.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    is_onnx = Path(source).suffix.lower() == ".onnx"
    if runtime == "auto":
        runtime = "onnx" if is_onnx else "torch"
    if runtime == "onnx":
        if not is_onnx:
            raise ConfigError(
                f"--runtime onnx needs an .onnx file, got {source}: export it first with `imgrade export {source} --out model.onnx`"
            )
        from imgrade.runtime.onnx_engine import OnnxEngine

        grader = OnnxEngine.from_file(source, threads=threads)
        if tta and not grader.tta:
            raise ConfigError(
                f"{source} was exported without test-time augmentation: export the run again with "
                f"`imgrade export RUN --out {Path(source).name} --tta`, or grade without --tta"
            )
        if tta is False and grader.tta:
            raise ConfigError(
                f"{source} was exported with test-time augmentation in its graph: export the run again with "
                f"`imgrade export RUN --out {Path(source).name} --no-tta`, or grade without --no-tta"
            )
        return grader
    if is_onnx:
        raise ConfigError(f"{source} is an ONNX file: grade it with --runtime onnx (or auto)")
    try:
        from imgrade.runtime.torch_engine import TorchEngine
    except ImportError as e:
        raise ConfigError(
            f"grading the run {source} needs PyTorch ({e}): pip install 'imgrade[train]', or export the run on a machine "
            f"that has it (`imgrade export {source} --out model.onnx`) and grade the .onnx file"
        ) from None
    return TorchEngine.from_run(source, device=device, tta=tta, threads=threads)
