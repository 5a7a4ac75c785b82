"""Export a trained run as one self-contained ONNX grader.

The graph takes what a decoder gives, uint8 RGB images (N, S, S, 3), and does the rest itself:
scaling to [0, 1], subtracting the training set's per-pixel mean, the network, the head's decoding
and the run's decision (``graph_decision.py``). Its outputs are ``score`` (N,), ``probabilities``
(N, K) for heads that have them, and for a graded model ``grade`` (N,) int64, decided with the
tuned cut points or the head's own rule as imgrade decides it, ``grade_set`` (N, K) bool when the
run is calibrated, and ``native`` (N,) int64, the head's own grade before calibration. The grade
names, the input the graph expects, the calibration and the run's model card travel as JSON in the
model's metadata under the key ``imgrade``, so the file alone is a complete grader, for imgrade
and for any ONNX Runtime consumer.

``imgrade serve`` grades a run on a CPU with the same graph, made in memory (``serving_grader``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from imgrade.core.errors import ImgradeError
from imgrade.core.io import atomic_write
from imgrade.core.names import without_paths
from imgrade.core.registry import head_entry
from imgrade.core.version import __version__
from imgrade.runtime.grading import Engine
from imgrade.runtime.graph_decision import Decision
from imgrade.runtime.graph_resize import GraphResize
from imgrade.runtime.onnx_engine import METADATA_FORMAT, METADATA_KEY, OnnxEngine

if TYPE_CHECKING:  # the engine imports this module when it serves (for_serving)
    from imgrade.runtime.torch_engine import TorchEngine

logger = logging.getLogger(__name__)

PARITY_ATOL = 1e-4
"""Largest score difference between PyTorch and ONNX Runtime that export accepts."""

OPSET = 18

STACK_TRACE = "pkg.torch.onnx.stack_trace"
"""The exporter's node metadata entry with the Python source lines (and their absolute paths)."""


class _GraderGraph(torch.nn.Module):
    """uint8 NHWC images -> (score, [probabilities], [native, grade, [grade_set]]) with the
    preprocessing and the run's decision inside."""

    def __init__(self, predictor: TorchEngine):
        super().__init__()
        self.model = predictor.model
        self.register_buffer("mean", predictor.mean.clone())
        graded = predictor.grade_names is not None
        self.decision = Decision(len(predictor.grade_names), predictor.calibration) if graded else None

    def forward(self, images: torch.Tensor):
        x = images.permute(0, 3, 1, 2).float() / 255.0 - self.mean
        out = self.model(x)
        score = self.model.decode(out).float()
        results = [score]
        probabilities = self.model.probabilities(out)
        if probabilities is not None:
            probabilities = probabilities.float()
            results.append(probabilities)
        if self.decision is not None:
            native = self.model.predict_grade(out).long()
            grade, grade_set = self.decision(score, probabilities, native)
            results += [native, grade] + ([grade_set] if grade_set is not None else [])
        return tuple(results)


class _AnySizeGraph(torch.nn.Module):
    """uint8 NHWC photos of any size -> the grader graph's outputs: the run's crop or pad and
    resize first, pixel for pixel as imgrade's decoder does (``graph_resize.py``)."""

    def __init__(self, grader: _GraderGraph, predictor: TorchEngine):
        super().__init__()
        self.resize = GraphResize(predictor.image_size, predictor.resize_mode)
        self.grader = grader

    def forward(self, images: torch.Tensor):
        return self.grader(self.resize(images))


OUTPUTS = {
    "score": "float32 (N,): where the photo lies on the grade axis (0 is the first grade), or the continuous target",
    "probabilities": "float32 (N, K): each grade's probability, in grade order",
    "native": "int64 (N,): the head's own grade before calibration (for diagnosis; read `grade`)",
    "grade": "int64 (N,): the grade index, decided as imgrade decides it (tuned cut points or the head's rule)",
    "grade_set": "bool (N, K): the grades that hold the true one with the calibrated coverage",
}
"""Each output the graph may have, described for the metadata and docs/deploy.md."""


def metadata(predictor: TorchEngine, source: str, model_card: str | None = None, any_size: bool = False) -> dict:
    """The JSON stored in the ONNX file: what ``predict`` needs besides the network, and the run's
    model card. It names the run and its data, never a path of the machine that exported it."""
    ckpt = predictor.checkpoint
    data_path = ckpt.config.data.path
    info = {
        "format": METADATA_FORMAT,
        "imgrade_version": __version__,
        "trained_with": predictor.version,
        "task": predictor.task,
        "grade_names": predictor.grade_names,
        "image_size": predictor.image_size,
        "input": {
            "name": "images",
            "dtype": "uint8",
            "layout": "NHWC",
            "channels": "RGB",
            "size": predictor.image_size,
            "shape": ["batch", "height", "width", 3]
            if any_size
            else ["batch", predictor.image_size, predictor.image_size, 3],
            "preprocessing": "in the graph: x / 255 minus the training set's per-pixel mean image; feed decoded RGB pixels as they are",
            "resize": predictor.resize.describe(),
            "resize_mode": predictor.resize_mode,
            "any_size": any_size,
        },
        "outputs": {name: OUTPUTS[name] for name in _output_names(predictor)},
        "decision": _decision(predictor),
        "calibration": predictor.calibration.to_dict() if predictor.calibration is not None else None,
        "ensemble": predictor.members,
        "tta": predictor.tta,
        "source": source,
        "data_source": without_paths(ckpt.data_source, [data_path]) if ckpt.data_source else None,
        "model_card": model_card,
        "exported": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if ckpt.head_state:
        # the head's own state (the axes head: each grade's level per axis), for people and tools
        # reading the file; grading needs only the graph, whose outputs already use it
        info["head_state"] = ckpt.head_state
    return info


def _output_names(predictor: TorchEngine) -> list[str]:
    names = ["score"]
    if head_entry(predictor.task).probabilities:
        names.append("probabilities")
    if predictor.grade_names is not None:
        names += ["native", "grade"]
        if predictor.conformal is not None:
            names.append("grade_set")
    return names


def _decision(predictor: TorchEngine) -> dict | None:
    """How the graph's ``grade`` and ``grade_set`` are decided, for people reading the metadata."""
    if predictor.grade_names is None:
        return None
    conformal = predictor.conformal
    return {
        "rule": predictor.rule,
        "cut_points": predictor.cut_points,
        "grade_set": {"method": conformal.kind, "coverage": 1 - conformal.alpha, "threshold": conformal.threshold}
        if conformal is not None
        else None,
    }


def write_onnx(
    predictor: TorchEngine,
    out: Path,
    name: str | None = None,
    any_size: bool = False,
    amend: Callable[[bytes], bytes] | None = None,
) -> dict:
    """Write ``predictor`` (on the CPU) to ``out`` as an ONNX grader; return a summary of the check.

    An ensemble's members all go into the one graph; under TTA the graph grades each image as the
    average of its test-time views and the metadata carries the calibration fitted that way.

    The export is verified before the file is written: ONNX Runtime must reproduce PyTorch's
    scores within ``PARITY_ATOL``, its native grades exactly, and its grades and sets must be those
    the engine decides from its scores, on 64 random images. With ``any_size`` the graph takes
    photos of any size and resizes them in the graph (``graph_resize.py``); it must then also give
    the scores PyTorch gives the same photos resized by imgrade's decoder.
    The file is written atomically: a failed export leaves nothing, an old file stays intact.
    ``amend`` may add to the checked bytes before they are written (``export``'s bf16 check).

    Raises:
        ImgradeError: the exporter failed or the exported graph disagrees with PyTorch.
    """
    payload, check = checked_onnx_bytes(predictor, name, any_size=any_size)
    if amend is not None:
        payload = amend(payload)
    with atomic_write(out, "wb") as f:
        f.write(payload)
    return {"path": str(out), "bytes": len(payload), "outputs": _output_names(predictor), **check}


def checked_onnx_bytes(predictor: TorchEngine, name: str | None = None, any_size: bool = False) -> tuple[bytes, dict]:
    """:func:`onnx_bytes`, checked as :func:`write_onnx` checks a file: the bytes and the check's
    summary (``max_score_diff``). What ``export --int8`` quantizes."""
    try:
        payload = onnx_bytes(predictor, any_size=any_size)
    except Exception as e:  # the exporter raises many kinds; the user needs one line and the cause
        raise ImgradeError(
            f"exporting {name or predictor.source or 'the run'} to ONNX failed ({_first_line(e, 200)}); rerun with --debug for the trace"
        ) from e
    grader = OnnxEngine.from_bytes(payload)
    check = _check_parity(predictor, grader)
    if any_size:
        check["max_resize_score_diff"] = _check_resize_parity(predictor, grader)
    return payload, check


def onnx_bytes(predictor: TorchEngine, any_size: bool = False) -> bytes:
    """``predictor`` (on the CPU) as a serialized ONNX grader: the graph and imgrade's metadata;
    with ``any_size``, a graph that takes photos of any size and resizes them itself.

    Raises:
        Exception: whatever the exporter raises (many kinds; ImportError without onnx or onnxscript).
    """
    graph = _GraderGraph(predictor).eval()
    size = predictor.image_size
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    dimensions = {0: torch.export.Dim("batch", min=1, max=1 << 20)}
    if any_size:
        graph = _AnySizeGraph(graph, predictor).eval()
        example = torch.zeros((2, size + 7, size + 3, 3), dtype=torch.uint8)
        dimensions |= {
            1: torch.export.Dim("height", min=1, max=1 << 15),
            2: torch.export.Dim("width", min=1, max=1 << 15),
        }
    # torch.onnx reports progress on stdout and warns about optional packages: keep them quiet
    quiet = _quiet_loggers("torch.onnx", "onnxscript", "onnx_ir")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), quiet:
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            opset_version=OPSET,
            input_names=["images"],
            output_names=_output_names(predictor),
            dynamic_shapes=(dimensions,),
            verbose=False,
        )
    proto = program.model_proto
    _drop_stack_traces(proto)
    info = metadata(predictor, source=predictor.source, model_card=predictor.model_card, any_size=any_size)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    proto.producer_name, proto.producer_version = "imgrade", __version__
    return proto.SerializeToString()


def serving_grader(predictor: TorchEngine, threads: int | None = None, spinning: bool | None = None) -> Engine:
    """``predictor`` exported to ONNX in memory and run by ONNX Runtime, checked against it as
    ``write_onnx`` checks a file; ``predictor`` itself should anything fail.

    What ``imgrade serve`` grades a run with on a CPU (``TorchEngine.for_serving``). Nothing is
    written. A failure (no onnx, onnxscript or onnxruntime, a backbone the exporter cannot follow,
    a graph that disagrees) costs only speed: one INFO line says why, and grading goes on with the
    eager network.

    Args:
        predictor: a grader on the CPU.
        threads, spinning: the ONNX Runtime session's (see ``OnnxEngine.from_file``).
    """
    name = f"{predictor.source or 'the run'} (exported in memory)"
    try:
        grader = OnnxEngine.from_bytes(onnx_bytes(predictor), threads=threads, spinning=spinning, name=name)
        _check_parity(predictor, grader)
    except Exception as e:  # any failure only costs speed: say so in one line and grade with PyTorch
        logger.info(f"grading with eager PyTorch: the in-memory ONNX export failed ({_first_line(e, 160)})")
        return predictor
    return grader


def _first_line(error: BaseException, limit: int) -> str:
    """``Type: first line of the message``, at most ``limit`` characters of the message."""
    first = (str(error).strip().splitlines() or [""])[0][:limit]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _drop_stack_traces(proto) -> None:
    """Remove the exporter's per-node Python stack traces: they hold the source paths of this machine."""

    def clean(nodes) -> None:
        for node in nodes:
            keep = [(p.key, p.value) for p in node.metadata_props if p.key != STACK_TRACE]
            if len(keep) != len(node.metadata_props):
                del node.metadata_props[:]
                for key, value in keep:
                    entry = node.metadata_props.add()
                    entry.key, entry.value = key, value
            for attribute in node.attribute:
                for graph in [attribute.g, *attribute.graphs]:
                    clean(graph.node)

    clean(proto.graph.node)
    for function in proto.functions:
        clean(function.node)


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """Raise loggers ``names`` to ERROR for the block: torch.onnx logs a warning per missing optional
    package, and the passes of onnxscript and onnx_ir an INFO line each, which a program logging at
    INFO would show."""
    quieted = [logging.getLogger(name) for name in names]
    levels = [each.level for each in quieted]
    for each in quieted:
        each.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for each, level in zip(quieted, levels):
            each.setLevel(level)


def _check_parity(predictor: TorchEngine, grader: OnnxEngine) -> dict:
    """Run both back ends on the same random images; raise when they disagree, or when the graph's
    grades and sets are not those the engine decides from the graph's own scores."""
    rng = np.random.default_rng(0)
    size = predictor.image_size
    images = rng.integers(0, 256, size=(64, size, size, 3), dtype=np.uint8)
    expected = predictor.outputs(images)
    got = grader.outputs(images)
    score_diff = float(np.abs(expected.scores - got.scores).max())
    same_native = expected.native is None or bool(np.array_equal(expected.native, got.native))
    same_decision = True
    if got.grades is not None:
        undecided = dataclasses.replace(got, grades=None, sets=None)
        same_decision = bool(np.array_equal(got.grades, grader.grades(undecided)))
        sets = grader.sets(undecided)
        same_decision &= (sets is None) == (got.sets is None) and (sets is None or bool(np.array_equal(sets, got.sets)))
    if not score_diff <= PARITY_ATOL or not same_native or not same_decision:
        raise ImgradeError(
            f"the exported graph disagrees with PyTorch (largest score difference {score_diff:.2e}, "
            f"native grades {'equal' if same_native else 'differ'}, "
            f"decisions {'equal' if same_decision else 'differ'}): nothing written; please report it"
        )
    return {"max_score_diff": score_diff}


def _check_resize_parity(predictor: TorchEngine, grader: OnnxEngine) -> float:
    """An any-size graph on random photos of a few shapes (shrunk, enlarged, wide, tall) against
    PyTorch on the same photos resized by imgrade's decoder; raise when a score or grade differs."""
    from imgrade.data.resize import Resize

    rng = np.random.default_rng(1)
    size = predictor.image_size
    resize = Resize(size, predictor.resize_mode)
    worst = 0.0
    for height, width in ((3 * size + 5, 2 * size + 1), (size // 2 + 1, size + 9), (size + 1, 4 * size)):
        photos = rng.integers(0, 256, size=(4, height, width, 3), dtype=np.uint8)
        expected = predictor.outputs(np.stack([resize(photo) for photo in photos]))
        got = dict(zip(grader._outputs, grader.session.run(None, {grader._input: photos})))
        worst = max(worst, float(np.abs(expected.scores - got["score"]).max()))
        same = expected.native is None or bool(np.array_equal(expected.native, got["native"]))
        if not worst <= PARITY_ATOL or not same:
            raise ImgradeError(
                f"the exported graph's own resize disagrees with imgrade's on {height}x{width} photos "
                f"(largest score difference {worst:.2e}): nothing written; please report it, or export without --any-size"
            )
    return worst
