"""Grade with an exported ``.onnx`` file and ONNX Runtime alone: no PyTorch is imported.

The file carries the grade names, the input size and resize mode and the calibration in its
``imgrade`` metadata (see ``onnx_export.py``); this module reads them back and runs the graph in batches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from imgrade.calibration.decision import Calibration
from imgrade.config import RESIZE_MODES
from imgrade.core.errors import CheckpointError, DataError
from imgrade.core.registry import task_names
from imgrade.core.threads import auto_threads
from imgrade.data.resize import DEFAULT_MODE
from imgrade.runtime.grading import CPU_BATCH, Engine, Outputs

METADATA_KEY = "imgrade"
"""The ONNX metadata entry holding imgrade's JSON (written by ``onnx_export.py``)."""
METADATA_FORMAT = 1
"""Version of that JSON's layout; other versions are refused."""


class OnnxEngine(Engine):
    """A grader backed by an ONNX Runtime session. Build it with :meth:`from_file`."""

    runtime = "onnx"

    def __init__(self, session, meta: dict, name: str):
        self.session = session
        self.name = name
        self.meta = meta
        self.task = meta["task"]
        self.grade_names = list(meta["grade_names"]) if meta["grade_names"] is not None else None
        self.image_size = int(meta["image_size"])
        self.resize_mode = resize_mode(meta)
        self.calibration = Calibration.from_dict(meta.get("calibration"))
        self.version = str(meta.get("trained_with") or meta.get("imgrade_version") or "unknown")
        self.tta = bool(meta.get("tta"))
        """Whether the graph grades each image as the average of its test-time views (``export --tta``)."""
        self.members = int(meta.get("ensemble") or 1)
        self.model_card = meta.get("model_card")
        self.precision = "int8" if meta.get("precision") == "int8" else "fp32"
        self._outputs = [o.name for o in session.get_outputs()]
        self._input = session.get_inputs()[0].name

    @classmethod
    def from_file(cls, path: str | os.PathLike, threads: int | None = None, spinning: bool | None = None) -> OnnxEngine:
        """Load an ``.onnx`` file written by ``imgrade export``.

        Args:
            path: the .onnx file.
            threads: ONNX Runtime's intra-op threads, the calling thread included (None: chosen as a
                training chooses, the usable cores less those other work keeps busy; see
                ``imgrade.core.threads.auto_threads``).
            spinning: whether the session's idle threads spin for a while waiting for work, which
                answers the next small call sooner but keeps the cores busy (None: ONNX Runtime's
                default, which spins).

        Raises:
            CheckpointError: the file is missing, is not ONNX, lacks imgrade's metadata, or has inputs or
                outputs other than those `imgrade export` writes.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist: give the .onnx file written by `imgrade export`")
        return cls._load(str(path), str(path), threads, spinning)

    @classmethod
    def from_bytes(
        cls, payload: bytes, threads: int | None = None, spinning: bool | None = None, name: str = "<memory>"
    ) -> OnnxEngine:
        """Load a serialized ONNX model (what ``export`` checks before writing the file, or what
        ``serve`` grades a run with); ``threads`` and ``spinning`` as for :meth:`from_file`."""
        return cls._load(payload, name, threads, spinning)

    @classmethod
    def _load(cls, model, name: str, threads: int | None, spinning: bool | None) -> OnnxEngine:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: no warnings on stderr for every session
        options.intra_op_num_threads = int(threads) if threads else auto_threads().threads
        if spinning is not None:
            # the inter-op pool only exists in ORT_PARALLEL mode; set both so that neither spins
            for pool in ("intra_op", "inter_op"):
                options.add_session_config_entry(f"session.{pool}.allow_spinning", "1" if spinning else "0")
        try:
            session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise CheckpointError(
                f"{name} is not a readable ONNX model ({first}): export it again with `imgrade export RUN --out FILE.onnx`"
            ) from None
        return cls(session, _read_metadata(session, name), name)

    def outputs(self, images: np.ndarray, batch_size: int | None = None) -> Outputs:
        """Run the graph on uint8 images (N, S, S, 3), ``batch_size`` (default ``CPU_BATCH``) at a time."""
        batch_size = batch_size or CPU_BATCH  # the session runs on the CPU execution provider
        images = self.checked(images)
        try:
            chunks = [
                dict(
                    zip(
                        self._outputs,
                        self.session.run(None, {self._input: np.ascontiguousarray(images[i : i + batch_size])}),
                    )
                )
                for i in range(0, len(images), batch_size)
            ]
        except Exception as e:  # onnxruntime's own types: a graph that loads but cannot grade these images
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise CheckpointError(
                f"{self.name} failed to grade the images ({first}): export the run again with `imgrade export RUN --out FILE.onnx`"
            ) from None
        joined = {key: np.concatenate([c[key] for c in chunks]) for key in self._outputs}
        return Outputs(
            joined["score"].astype(np.float32),
            joined["probabilities"].astype(np.float32) if "probabilities" in joined else None,
            joined["native"].astype(np.int64) if "native" in joined else None,
            # files exported since the graph decides: its grades and sets (else the engine decides)
            joined["grade"].astype(np.int64) if "grade" in joined else None,
            joined["grade_set"].astype(bool) if "grade_set" in joined else None,
        )

    def checked(self, images: np.ndarray) -> np.ndarray:
        """``images`` as an array, if it is what the graph takes: uint8 (N, S, S, 3), N > 0.

        Raises:
            DataError: another type or shape.
        """
        images = np.asarray(images)
        size = self.image_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise DataError(
                f"the {'OpenVINO' if self.runtime == 'openvino' else 'ONNX'} grader takes uint8 images of shape (N, {size}, {size}, 3), got {images.dtype} {images.shape}"
            )
        assert len(images) > 0, "callers check for an empty set first"
        return images


def resize_mode(meta: dict) -> str:
    """The resize mode the metadata's input states; squash for files written before there were modes.

    >>> resize_mode({"input": {"resize_mode": "pad"}}), resize_mode({"input": {}})
    ('pad', 'squash')
    """
    found = meta.get("input")
    return found.get("resize_mode", DEFAULT_MODE) if isinstance(found, dict) else DEFAULT_MODE


def grade_names_problem(names) -> str | None:
    """What is wrong with the grade names of a file's metadata, or None: a list of at least two
    distinct names, none empty or only spaces (a grade named twice could never be told apart).

    >>> grade_names_problem(["A", "B"]) is None
    True
    >>> grade_names_problem(["A", "B", "A"]), grade_names_problem(["A", " "]), grade_names_problem(["A"])
    ("'A' is named twice", 'grade 2 has an empty name', 'fewer than 2 grades')
    """
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "not a list of names"
    if len(names) < 2:
        return "fewer than 2 grades"
    empty = [i for i, n in enumerate(names, start=1) if not n.strip()]
    if empty:
        return f"grade {empty[0]} has an empty name"
    twice = [n for i, n in enumerate(names) if n in names[:i]]
    if twice:
        return f"{twice[0]!r} is named twice"
    return None


def _read_metadata(session, name: str) -> dict:
    """The ``imgrade`` metadata, checked: a clear error for any ONNX file imgrade did not write."""
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    fix = "export the run with `imgrade export RUN --out FILE.onnx`"
    if raw is None:
        raise CheckpointError(
            f"{name} is an ONNX model but not an imgrade grader (no '{METADATA_KEY}' metadata): {fix}"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{name} has unreadable imgrade metadata: {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(
            f"{name} has imgrade metadata format {found!r}, this imgrade reads {METADATA_FORMAT}: {fix}"
        )
    problems = []
    if meta.get("task") not in task_names():
        problems.append(f"task {meta.get('task')!r}")
    names = meta.get("grade_names")
    if names is not None:
        problem = grade_names_problem(names)
        if problem is not None:
            problems.append(f"grade_names ({problem})")
    size = meta.get("image_size")
    if not isinstance(size, int) or size < 1:
        problems.append("image_size")
    if resize_mode(meta) not in RESIZE_MODES:
        problems.append(f"input resize_mode {resize_mode(meta)!r} (imgrade reads {', '.join(RESIZE_MODES)})")
    # A graph of another architecture can carry copied metadata: its inputs and outputs must be imgrade's.
    inputs = session.get_inputs()
    shape = list(inputs[0].shape)[1:] if inputs else None
    any_size = isinstance(meta.get("input"), dict) and meta["input"].get("any_size") is True
    if any_size and shape is not None and len(shape) == 3 and all(isinstance(d, str) for d in shape[:2]):
        shape = [size, size, shape[2]]  # (export --any-size) it resizes photos of any size itself
    if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or shape != [size, size, 3]:
        seen = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        problems.append(f"input {seen} (imgrade feeds one tensor(uint8) [batch, {size}, {size}, 3])")
    outputs = {o.name: o for o in session.get_outputs()}
    kinds = {
        "score": ("tensor(float)", 1),
        "probabilities": ("tensor(float)", 2),
        "native": ("tensor(int64)", 1),
        "grade": ("tensor(int64)", 1),
        "grade_set": ("tensor(bool)", 2),
    }
    needed = ["score"] if names is None else ["score", "native"]
    if any(n not in outputs for n in needed) or any(
        (o.type, len(o.shape or ())) != kinds[n] for n, o in outputs.items() if n in kinds
    ):
        seen = ", ".join(f"{n} {o.type} {o.shape}" for n, o in outputs.items())
        problems.append(
            f"outputs {seen} (imgrade reads "
            + ", ".join(f"{n} {kinds[n][0]} of rank {kinds[n][1]}" for n in needed)
            + ")"
        )
    if meta.get("model_card") is not None and not isinstance(meta["model_card"], str):
        problems.append("model_card")
    try:
        Calibration.from_dict(meta.get("calibration"))
    except (TypeError, ValueError):  # CheckpointError is a ValueError
        problems.append("calibration")
    if problems:
        raise CheckpointError(f"{name} is not a grader this imgrade can run: bad {'; '.join(problems)}: {fix}")
    return meta
