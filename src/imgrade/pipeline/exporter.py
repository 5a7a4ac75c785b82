"""``imgrade export``: a trained run as one self-contained ONNX grader file (fp32, or int8 with ``--int8``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from imgrade.core.allocator import tcmalloc_loaded
from imgrade.core.cpu import cpu_has_bf16
from imgrade.core.errors import ConfigError, DataError, ImgradeError
from imgrade.core.io import remove_abandoned_temporaries
from imgrade.core.rundir import inside, rewriting_run, run_folder
from imgrade.runtime.bf16_check import Bf16Check, check_bf16
from imgrade.runtime.onnx_engine import OnnxEngine
from imgrade.runtime.onnx_export import checked_onnx_bytes, write_onnx
from imgrade.runtime.onnx_quantize import (
    CALIBRATION_IMAGES,
    DEFAULT_TOLERANCE,
    check_tolerance,
    with_metadata,
    write_int8,
)
from imgrade.runtime.openvino_engine import BESIDE_TCMALLOC, INSTALL, OpenVinoEngine, openvino_available
from imgrade.runtime.run import RunFolder

logger = logging.getLogger(__name__)


def export(
    run: str | Path,
    *,
    out: str | Path,
    fmt: str = "onnx",
    tta: bool | None = None,
    any_size: bool = False,
    int8: bool = False,
    int8_tolerance: float = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """Write ``run`` as one self-contained grader file (ONNX); returns what was written (:func:`format_export`)

    An ensemble becomes one graph holding every member; ``tta`` puts the test-time views in the graph.
    With ``any_size`` the graph takes decoded photos of any size and resizes them itself.
    On a CPU with bf16 units and OpenVINO installed, an fp32 file also gets a bf16 check
    (:func:`bf16_checked`), which decides whether ``--runtime auto`` grades it in bf16.
    ``int8`` writes an int8 copy (calibrated on the run's training photos), and only when on the
    validation split it loses no more than ``int8_tolerance`` of exact accuracy or QWK against fp32.

    The file is written atomically. Temporary files of ``out`` that an export killed earlier left
    behind go first (``remove_abandoned_temporaries``); an ``out`` inside the run folder is written
    under the run's lock, as ``imgrade train`` writes the run.

    Raises:
        ConfigError: a bad flag, or a training holds the run ``out`` lies in: wait for it to finish.
    """
    if fmt != "onnx":
        raise ConfigError(f"--format {fmt!r} is not supported: use onnx")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"--out {out} must end in .onnx")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder: give a file name ending in .onnx")
    if int8:
        check_tolerance(int8_tolerance)
    with rewriting_run(run, "export", writes=inside(out, run_folder(run))):
        stale = remove_abandoned_temporaries(out)
        if stale:
            logger.info(f"removed {len(stale)} temporary file(s) of {out} left by an export that was killed")
        return _export(run, out, tta=tta, any_size=any_size, int8=int8, int8_tolerance=int8_tolerance)


def _export(
    run: str | Path, out: Path, *, tta: bool | None, any_size: bool, int8: bool, int8_tolerance: float
) -> dict[str, Any]:
    folder = RunFolder.open(run)
    grader = folder.grader(device="cpu", tta=tta)
    if not int8:
        summary = {}

        def amend(payload: bytes) -> bytes:
            payload, summary["bf16_check"] = bf16_checked(folder, payload, str(run))
            return payload

        return {**write_onnx(grader, out, name=str(run), any_size=any_size, amend=amend), **summary}
    if grader.grade_names is None:
        raise ConfigError(f"--int8 checks grades, and {run} predicts a continuous target: export it without --int8")
    calibration, validation = int8_photos(folder)
    fp32, parity = checked_onnx_bytes(grader, name=str(run), any_size=any_size)
    summary = write_int8(
        fp32,
        out,
        calibration=calibration,
        validation=validation,
        tolerance=int8_tolerance,
        name=str(run),
    )
    return {**summary, **parity}


def bf16_checked(folder: RunFolder, payload: bytes, name: str) -> tuple[bytes, Bf16Check | None]:
    """``payload`` (an fp32 grader) with a bf16 check of it on the run's validation photos in its
    metadata (``bf16_check``) and a paragraph on it in its model card, and the check; ``payload``
    and None where no check can be made here, with one line saying why.

    bf16 can only be checked where it runs: on a CPU with bf16 units (AMX, AVX512-BF16), in OpenVINO.
    A file exported elsewhere holds no check, and ``--runtime auto`` grades it in fp32.
    """
    if not cpu_has_bf16():
        logger.debug("no bf16 check: this CPU has no bf16 units")
        return payload, None
    reason = None
    if tcmalloc_loaded():
        reason = BESIDE_TCMALLOC
    elif not openvino_available():
        reason = f"OpenVINO is not installed ({INSTALL})"
    grader = OnnxEngine.from_bytes(payload, name=name)
    if reason is None and grader.grade_names is None:
        reason = "bf16 is checked on grades, and this model predicts a continuous target"
    if reason is None:
        try:
            imageset, split = folder.data()
        except ImgradeError as e:
            reason = f"the run's data cannot be read ({e})"
        else:
            if len(split["val"]) == 0:
                reason = "the run has no validation split"
    if reason is not None:
        logger.info(f"no bf16 check, so `--runtime auto` will grade this file in fp32: {reason}")
        return payload, None
    validation = imageset.subset(split["val"])
    bf16 = OpenVinoEngine.from_onnx(grader, payload)
    check = check_bf16(grader, bf16, np.asarray(validation.images), validation.targets)
    logger.info(check.summary())
    card = grader.model_card
    extra = {"bf16_check": check.to_dict()}
    if card is not None:
        extra["model_card"] = card.rstrip("\n") + "\n\n" + bf16_card(check)
    return with_metadata(payload, extra), check


def bf16_card(check: Bf16Check) -> str:
    """The model card's paragraph on the bf16 check.

    >>> print(bf16_card(Bf16Check(50, "bf16", 0.6, 0.8, 0.6, 0.8, 1.0, 0.02, 0.01, 1000.0, 3000.0)).splitlines()[0])
    ## Grading in bf16
    """
    verdict = (
        "`--runtime auto` grades this file in bf16 (OpenVINO) on CPUs with bf16 units."
        if check.passed
        else "`--runtime auto` grades this file in fp32 (ONNX Runtime)."
    )
    return f"## Grading in bf16\n\n{check.summary()}; on {check.cpu}. {verdict}\n"


def int8_photos(folder: RunFolder) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """What ``export --int8`` calibrates on (up to ``CALIBRATION_IMAGES`` of the run's training photos,
    drawn with a fixed seed) and checks on (the validation photos and their grades).

    Raises:
        DataError: the run has no validation split.
    """
    imageset, split = folder.data()
    if len(split["val"]) == 0:
        raise DataError(f"{folder.path} has no validation split to check the int8 copy on: export it without --int8")
    drawn = np.sort(np.random.default_rng(0).permutation(split["train"])[:CALIBRATION_IMAGES])
    validation = imageset.subset(split["val"])
    return np.asarray(imageset.subset(drawn).images), (np.asarray(validation.images), validation.targets)


def format_export(summary: dict[str, Any]) -> str:
    """What ``imgrade export`` prints: the file, its size and outputs, the parity check, what next."""
    check = summary.get("int8_check")
    if check is None:
        size = f"{summary['bytes'] / 1e6:.1f} MB"
        parity = f"ONNX Runtime matches PyTorch within {summary['max_score_diff']:.1e}"
        if summary.get("bf16_check") is not None:
            parity += f"; {summary['bf16_check'].summary()}"
    else:
        size = (
            f"{summary['bytes'] / 1e6:.2f} MB int8, {summary['fp32_bytes'] / summary['bytes']:.1f}x smaller than fp32"
        )
        parity = f"{check.summary()} (tolerance {check.tolerance:g})"
    return (
        f"wrote {summary['path']} ({size}; outputs {', '.join(summary['outputs'])}); {parity}\n"
        f"grade with it: imgrade predict {summary['path']} IMAGES  |  imgrade serve {summary['path']}"
    )
