"""An int8 copy of an exported grader: ONNX Runtime's static quantization, checked before it ships.

:func:`quantize` turns the fp32 grader that ``onnx_export.onnx_bytes`` makes into a QDQ int8 one:
the network's convolutions and dense layers get int8 weights (one scale per output channel) and
int8 activations whose ranges are calibrated on photos the run was trained on. Everything else in
the graph (the preprocessing, the head's decoding, the decision after the network) stays as it
was, so the file keeps its uint8 NHWC input, its float outputs and imgrade's metadata, which gains
``"precision": "int8"`` and what was quantized.

Two parts stay in fp32 (``KEEP_FP32``): the first convolution, which sees the raw pixels, and the
head's dense layers, which make the score. On real photos, quantizing the first convolution changed
the most grades, the head a few more (benchmarks/int8.py, docs/results/int8.md).

:func:`compare` grades labelled photos with both graphs; :func:`write_int8` writes the int8 file
only when it lost no more than a tolerance of exact accuracy and QWK, and records both in its
metadata (``int8_check``).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import logging
import math
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from imgrade.core.errors import ConfigError, ImgradeError
from imgrade.core.io import atomic_write
from imgrade.evaluation.metrics import quadratic_weighted_kappa
from imgrade.runtime.onnx_engine import METADATA_KEY, OnnxEngine

logger = logging.getLogger(__name__)

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
"""The network's layers that get int8 weights; the graph's other nodes stay in fp32."""
KEEP_FP32 = ("first", "head")
"""Layers left in fp32: ``first``, the convolutions that see the pixels; ``head``, the head's dense layers."""
CALIBRATION_IMAGES = 256
"""Training photos that calibrate the activations' ranges, at most."""
CALIBRATION_BATCH = 16
"""Photos per calibration pass; every pass has as many (the percentile calibrator stacks them)."""
DEFAULT_TOLERANCE = 0.01
"""The largest drop of exact accuracy or QWK on the validation split that ``export --int8`` accepts."""

_SCOPES = "pkg.torch.onnx.name_scopes"
"""The PyTorch exporter's node metadata: the module path of each node (``model.head.layers.0``)."""


@dataclass(frozen=True)
class Int8Check:
    """Exact accuracy and QWK of the fp32 and the int8 graph on the same labelled photos."""

    n: int
    fp32_accuracy: float
    fp32_qwk: float
    int8_accuracy: float
    int8_qwk: float
    agreement: float
    """The share of photos both graphs give the same grade."""
    tolerance: float

    @property
    def passed(self) -> bool:
        """Whether neither exact accuracy nor QWK dropped by more than ``tolerance``.

        >>> Int8Check(50, 0.42, 0.80, 0.40, 0.80, 0.96, 0.02).passed
        True
        >>> Int8Check(50, 0.42, 0.80, 0.40, 0.80, 0.96, 0.01).passed
        False
        """
        return all(dropped(before, after) <= self.tolerance + 1e-9 for before, after in self._pairs())

    def _pairs(self) -> list[tuple[float, float]]:
        return [(self.fp32_accuracy, self.int8_accuracy), (self.fp32_qwk, self.int8_qwk)]

    def summary(self) -> str:
        """Both graphs' numbers in one line.

        >>> Int8Check(50, 0.42, 0.815, 0.40, 0.805, 0.96, 0.01).summary()
        'validation split (50 photos): exact accuracy fp32 0.420, int8 0.400; QWK fp32 0.815, int8 0.805; same grade 96%'
        """
        return (
            f"validation split ({self.n} photos): exact accuracy fp32 {self.fp32_accuracy:.3f}, int8 "
            f"{self.int8_accuracy:.3f}; QWK fp32 {self.fp32_qwk:.3f}, int8 {self.int8_qwk:.3f}; "
            f"same grade {self.agreement:.0%}"
        )

    def to_dict(self) -> dict:
        """The JSON stored in the int8 file's metadata (``int8_check``); an undefined QWK is null."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def dropped(before: float, after: float) -> float:
    """How much ``after`` lost against ``before``; an undefined number counts as lost unless both are.

    >>> round(dropped(0.82, 0.80), 3), dropped(0.8, 0.9) < 0, dropped(float("nan"), float("nan"))
    (0.02, True, 0.0)
    """
    if math.isnan(before) and math.isnan(after):
        return 0.0
    if math.isnan(after):
        return math.inf
    return 0.0 if math.isnan(before) else before - after


def check_tolerance(tolerance: float) -> float:
    """``tolerance`` if it is a drop ``export --int8`` can check against, else a one-line error.

    Raises:
        ConfigError: negative, above 1 or not a number.
    """
    if not 0 <= tolerance <= 1:
        raise ConfigError(
            f"--int8-tolerance {tolerance} must be between 0 and 1: the largest drop of exact accuracy or QWK "
            f"accepted on the validation split (default {DEFAULT_TOLERANCE})"
        )
    return float(tolerance)


def fp32_layers(model, keep: tuple[str, ...] = KEEP_FP32) -> list[str]:
    """The names of the nodes among ``QUANTIZED_OPS`` that ``keep`` leaves in fp32.

    ``first``: those no other such node comes before (an ensemble has one per member). ``head``: the
    dense layers (Gemm, MatMul) inside a module named ``head``, by the PyTorch exporter's node
    metadata; in a graph without it, the dense layers after the last convolution.
    """
    unknown = set(keep) - {"first", "head"}
    assert not unknown, f"unknown layers to keep in fp32: {unknown}"
    layers = [node for node in model.graph.node if node.op_type in QUANTIZED_OPS]
    kept = []
    if "first" in keep:
        after_a_layer: set[str] = set()  # tensors computed from some layer's output
        for node in model.graph.node:
            fed = any(name in after_a_layer for name in node.input)
            if node.op_type in QUANTIZED_OPS and not fed:
                kept.append(node.name)
            if fed or node.op_type in QUANTIZED_OPS:
                after_a_layer.update(node.output)
    if "head" in keep:
        dense = [node for node in layers if node.op_type != "Conv"]
        if any(p.key == _SCOPES for node in dense for p in node.metadata_props):
            kept += [node.name for node in dense if _in_head(node)]
        else:
            convs = [i for i, node in enumerate(layers) if node.op_type == "Conv"]
            kept += [node.name for node in layers[convs[-1] + 1 if convs else 0 :] if node.op_type != "Conv"]
    return list(dict.fromkeys(kept))


def _in_head(node) -> bool:
    """Whether the PyTorch exporter says ``node`` comes from a module named ``head``."""
    scopes = next((p.value for p in node.metadata_props if p.key == _SCOPES), "[]")
    try:
        paths = ast.literal_eval(scopes)  # a Python list's repr: "['', 'model', 'model.head', ...]"
    except (ValueError, SyntaxError):
        return False
    return isinstance(paths, list) and any(isinstance(path, str) and path.split(".")[-1] == "head" for path in paths)


class _Photos:
    """ONNX Runtime's CalibrationDataReader: ``images`` in passes of ``CALIBRATION_BATCH``."""

    def __init__(self, input_name: str, images: np.ndarray):
        self.batch = batch = min(CALIBRATION_BATCH, len(images))
        self._passes = iter(
            {input_name: np.ascontiguousarray(images[i : i + batch])} for i in range(0, len(images) - batch + 1, batch)
        )

    def get_next(self) -> dict | None:
        return next(self._passes, None)


def quantize(fp32: bytes, images: np.ndarray, keep_fp32: tuple[str, ...] = KEEP_FP32) -> bytes:
    """The int8 (QDQ) copy of the serialized fp32 grader ``fp32``, calibrated on ``images``.

    Args:
        fp32: what ``onnx_export.onnx_bytes`` returns.
        images: uint8 photos (N, S, S, 3) the run was trained on; a few hundred at most.
        keep_fp32: which layers stay in fp32 (see :func:`fp32_layers`).

    Raises:
        ImgradeError: no photos, or no layer left to quantize.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    if len(images) == 0:
        raise ImgradeError("int8 export needs training photos to calibrate on: the run's training split is empty")
    model = onnx.load_from_string(fp32)
    keep = fp32_layers(model, keep_fp32)
    layers = [node for node in model.graph.node if node.op_type in QUANTIZED_OPS and node.name not in keep]
    if not layers:
        raise ImgradeError("int8 export found no convolution or dense layer to quantize: keep the fp32 file")
    photos = _Photos(model.graph.input[0].name, images)
    used = len(images) // photos.batch * photos.batch
    # ONNX Runtime's quantizer logs advice through the root logger and prints its calibration's progress
    with tempfile.TemporaryDirectory() as folder, _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source, out = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(fp32)  # a path, which every onnxruntime this package allows takes
        quantize_static(
            source,
            out,
            photos,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            nodes_to_exclude=keep,
            calibrate_method=CalibrationMethod.Percentile,
        )
        quantized = onnx.load(out)
    for node in quantized.graph.node:  # the exporter's notes on each node (module paths, FX nodes): a fifth of the file
        del node.metadata_props[:]
    counts = {op: sum(node.op_type == op for node in layers) for op in QUANTIZED_OPS}
    return with_metadata(
        quantized,
        {
            "precision": "int8",
            "quantization": {
                "method": "ONNX Runtime static quantization, QDQ; int8 weights per output channel, int8 activations",
                "calibration": f"99.999th percentile of the activations on {used} training photos",
                "int8_layers": {op: n for op, n in counts.items() if n},
                "fp32_layers": keep,
            },
        },
    )


def with_metadata(model, extra: dict) -> bytes:
    """``model`` (a ModelProto or its bytes) serialized with ``extra`` merged into imgrade's metadata."""
    import onnx

    if isinstance(model, bytes):
        model = onnx.load_from_string(model)
    entries = {p.key: p.value for p in model.metadata_props}
    info = {**json.loads(entries[METADATA_KEY]), **extra}
    del model.metadata_props[:]
    for key, value in {**entries, METADATA_KEY: json.dumps(info)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def compare(fp32: OnnxEngine, int8: OnnxEngine, images: np.ndarray, targets: np.ndarray, tolerance: float) -> Int8Check:
    """Grade ``images`` (uint8, labelled with grade indexes ``targets``) with both graphs, each with its
    file's own decision (cut points, the head's rule)."""
    assert fp32.grade_names is not None and len(images) > 0
    y = np.asarray(targets).astype(np.int64)
    num_grades = len(fp32.grade_names)
    before, after = fp32.grades(fp32.outputs(images)), int8.grades(int8.outputs(images))
    return Int8Check(
        n=len(y),
        fp32_accuracy=float(np.mean(before == y)),
        fp32_qwk=float(quadratic_weighted_kappa(y, before, num_grades)),
        int8_accuracy=float(np.mean(after == y)),
        int8_qwk=float(quadratic_weighted_kappa(y, after, num_grades)),
        agreement=float(np.mean(before == after)),
        tolerance=tolerance,
    )


def write_int8(
    fp32: bytes,
    out: Path,
    *,
    calibration: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray],
    tolerance: float = DEFAULT_TOLERANCE,
    name: str = "the run",
) -> dict:
    """Quantize ``fp32``, check it on ``validation`` (images, grade indexes), write it to ``out``.

    The file is written atomically, and only when the int8 graph lost no more than ``tolerance``
    of exact accuracy or QWK: else nothing is written and an old file stays intact.

    Returns:
        ``path``, ``bytes``, ``fp32_bytes``, ``outputs`` and ``int8_check`` (the :class:`Int8Check`).

    Raises:
        ImgradeError: the int8 graph lost more than ``tolerance``, or could not be made.
    """
    int8 = quantize(fp32, calibration)
    reference = OnnxEngine.from_bytes(fp32, name=f"{name} (fp32)")
    check = compare(reference, OnnxEngine.from_bytes(int8, name=f"{name} (int8)"), *validation, tolerance)
    if not check.passed:
        raise ImgradeError(
            f"the int8 copy of {name} lost more than --int8-tolerance {tolerance:g} on the {check.summary()}: "
            f"nothing written; keep the fp32 file (export without --int8) or raise --int8-tolerance"
        )
    payload = with_metadata(int8, {"int8_check": check.to_dict()})
    with atomic_write(out, "wb") as f:
        f.write(payload)
    logger.info(f"int8: {check.summary()}; {len(payload) / 1e6:.2f} MB against {len(fp32) / 1e6:.2f} MB in fp32")
    return {
        "path": str(out),
        "bytes": len(payload),
        "fp32_bytes": len(fp32),
        "outputs": [o.name for o in reference.session.get_outputs()],
        "int8_check": check,
    }


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantizer warns through the root logger ("consider pre-processing"), which
    would give a program without a root handler one (``logging.basicConfig``) and print every later
    record twice, and prints its calibration's progress on stdout: keep all three out."""
    root = logging.getLogger()
    level, silent = root.level, logging.NullHandler()
    root.setLevel(logging.ERROR)
    root.addHandler(silent)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeHandler(silent)
        root.setLevel(level)
