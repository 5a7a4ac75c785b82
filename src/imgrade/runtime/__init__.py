"""Graders: a trained model as images -> scores, grades and grade sets, from PyTorch or ONNX Runtime.

``load_grader`` picks the back end: a run folder or ``.pt`` checkpoint loads with PyTorch, an
``.onnx`` file written by ``imgrade export`` with ONNX Runtime (no torch import), or with OpenVINO in
bf16 where the CPU has bf16 units and the file's bf16 check passed (:func:`onnx_runtime_for`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from imgrade.core.cpu import cpu_has_bf16
from imgrade.core.errors import ConfigError
from imgrade.runtime.grading import Engine, Outputs

RUNTIMES = ("auto", "torch", "onnx", "openvino")

__all__ = ["Engine", "Outputs", "RUNTIMES", "load_grader", "onnx_grader", "onnx_runtime_for"]

logger = logging.getLogger(__name__)


def load_grader(
    source: str | Path, runtime: str = "auto", device: str = "auto", threads: int | None = None, tta: bool | None = None
) -> Engine:
    """Load a grader from a run folder, a ``.pt`` checkpoint or an exported ``.onnx`` file.

    Args:
        source: what ``imgrade train`` wrote (folder or checkpoint) or ``imgrade export`` wrote.
        runtime: "auto" (by the file: .onnx -> onnx, or openvino where :func:`onnx_runtime_for`
            says so; else torch), "torch", "onnx" or "openvino" (an .onnx file in OpenVINO, in bf16
            where the CPU computes it natively, else fp32).
        device: PyTorch device for the torch runtime ("auto", "cpu", "cuda", ...).
        threads: inference threads, ONNX Runtime's intra-op, OpenVINO's or torch's (None: ONNX Runtime's and OpenVINO's are
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
    auto = runtime == "auto"
    is_onnx = Path(source).suffix.lower() == ".onnx"
    if runtime == "auto":
        runtime = "onnx" if is_onnx else "torch"
    if runtime in ("onnx", "openvino"):
        if not is_onnx:
            raise ConfigError(
                f"--runtime {runtime} needs an .onnx file, got {source}: export it first with `imgrade export {source} --out model.onnx`"
            )
        from imgrade.runtime.onnx_engine import OnnxEngine

        grader = OnnxEngine.from_file(source, threads=threads)
        _check_tta(grader, source, tta)
        return onnx_grader(grader, str(source), "auto" if auto else runtime, threads)
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


def _check_tta(grader: Engine, source: str | Path, tta: bool | None) -> None:
    """An .onnx file grades with test-time augmentation when it was exported with it, and only then."""
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


def onnx_grader(grader: Engine, model: str | bytes, runtime: str, threads: int | None = None) -> Engine:
    """The .onnx file ``grader`` (ONNX Runtime) was loaded from (``model``: its path or bytes) as
    ``runtime`` grades it: "onnx" -> ``grader`` itself, "openvino" -> compiled by OpenVINO, "auto"
    -> as :func:`onnx_runtime_for` chooses here (on a CPU with bf16 units it logs why: as INFO when it
    chose OpenVINO, as DEBUG when it kept ONNX Runtime).

    Raises:
        ConfigError: OpenVINO asked for and not installed.
        CheckpointError: OpenVINO cannot compile the file.
    """
    if runtime == "auto":
        from imgrade.runtime.openvino_engine import openvino_available

        native = cpu_has_bf16()
        runtime, why = onnx_runtime_for(grader.meta, native_bf16=native, openvino=native and openvino_available())
        if native:  # said where bf16 is used; why not, only with -v (every predict would repeat it)
            (logger.info if runtime == "openvino" else logger.debug)(f"runtime auto -> {runtime}: {why}")
    if runtime != "openvino":
        return grader
    from imgrade.runtime.openvino_engine import OpenVinoEngine

    return OpenVinoEngine.from_onnx(grader, model, threads=threads)


def onnx_runtime_for(meta: dict, *, native_bf16: bool, openvino: bool) -> tuple[str, str]:
    """Which runtime ``--runtime auto`` grades an .onnx file with, and why: ``("openvino", ...)``
    (bf16) only on a CPU with bf16 units (``native_bf16``), with OpenVINO installed (``openvino``),
    for a file whose stored bf16 check passed (``imgrade.runtime.bf16_check``); else ``("onnx", ...)``.

    >>> onnx_runtime_for({}, native_bf16=False, openvino=True)
    ('onnx', 'this CPU has no bf16 units (amx_bf16, avx512_bf16)')
    """
    from imgrade.runtime.bf16_check import Bf16Check
    from imgrade.runtime.openvino_engine import INSTALL

    if not native_bf16:
        return "onnx", "this CPU has no bf16 units (amx_bf16, avx512_bf16)"
    check = Bf16Check.from_dict(meta.get("bf16_check"))
    if check is None:
        return "onnx", (
            "the file holds no bf16 check: export the run again with OpenVINO installed "
            f"({INSTALL}) on a CPU with bf16 units, or grade with --runtime openvino unchecked"
        )
    if not check.passed:
        return "onnx", f"its bf16 check was refused: {'; '.join(check.problems)}"
    if not openvino:
        return "onnx", (
            f"OpenVINO is not installed, or cannot run beside tcmalloc: {INSTALL} to grade "
            f"{check.speedup:.1f}x faster in bf16 (docs/deploy.md)"
        )
    return "openvino", f"its bf16 check passed ({check.summary()})"
