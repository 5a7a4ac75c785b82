"""Grade an exported ``.onnx`` file with OpenVINO: in bf16 on CPUs with bf16 matrix units.

ONNX Runtime's CPU provider has no bf16 convolutions, so on a Xeon with AMX (or a CPU with
AVX512-BF16) it grades in fp32 and leaves most of the chip idle. OpenVINO reads the same file and,
asked for bf16 inference precision, runs the network's convolutions and dense layers in bf16 where
the CPU computes bf16 natively; elsewhere it computes in fp32 whatever it is asked
(:attr:`OpenVinoEngine.precision` says which it does). Everything around the network (the uint8
input, the head's decoding, the cut points and grade sets in the graph) is the file's own, so only
the network's arithmetic changes.

The file's metadata is read and checked by ONNX Runtime exactly as ``OnnxEngine`` checks it; that
session is kept, in one thread, as the fp32 reference :func:`imgrade.runtime.bf16_check.check_bf16`
compares against. This module never imports torch.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from imgrade.core.allocator import tcmalloc_loaded
from imgrade.core.cpu import cpu_has_bf16
from imgrade.core.errors import CheckpointError, ConfigError
from imgrade.core.threads import auto_threads
from imgrade.runtime.grading import CPU_BATCH, Outputs
from imgrade.runtime.onnx_engine import OnnxEngine

PRECISIONS = ("auto", "bf16", "fp32")
"""What a caller may ask OpenVINO for: auto is bf16 where the CPU computes it natively, else fp32."""
INSTALL = "pip install 'imgrade[openvino]'"
BESIDE_TCMALLOC = (
    "OpenVINO aborts in a process with tcmalloc preloaded, as this one is: run it without tcmalloc in "
    "LD_PRELOAD (the imgrade command leaves it out where it may grade with OpenVINO), or grade with --runtime onnx"
)

_OUTPUT_TYPES = {"score": np.float32, "probabilities": np.float32, "native": np.int64, "grade": np.int64}


def openvino_available() -> bool:
    """Whether OpenVINO can be imported and run here (the ``openvino`` extra; no tcmalloc, see ``BESIDE_TCMALLOC``)."""
    if tcmalloc_loaded():
        return False
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVinoEngine(OnnxEngine):
    """An exported grader run by OpenVINO on the CPU. Build it with :meth:`from_file` or :meth:`from_onnx`."""

    runtime = "openvino"

    def __init__(self, reference: OnnxEngine, compiled, precision: str):
        super().__init__(reference.session, reference.meta, reference.name)
        self.compiled = compiled
        if self.precision != "int8":  # an int8 file's weights stay int8, whatever the activations run in
            self.precision = precision
        self._ports = {name: _port(compiled, name) for name in self._outputs}

    @classmethod
    def from_file(  # type: ignore[override]
        cls, path: str | os.PathLike, threads: int | None = None, precision: str = "auto"
    ) -> OpenVinoEngine:
        """Load an ``.onnx`` file written by ``imgrade export``.

        Args:
            path: the .onnx file.
            threads: OpenVINO's inference threads (None: chosen as ONNX Runtime's are, see
                ``imgrade.core.threads.auto_threads``).
            precision: "auto" (bf16 where the CPU computes it natively), "bf16" or "fp32".

        Raises:
            CheckpointError: the file is missing or not a grader imgrade wrote, or OpenVINO cannot compile it.
            ConfigError: OpenVINO is not installed, or an unknown precision.
        """
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist: give the .onnx file written by `imgrade export`")
        return cls.from_onnx(OnnxEngine.from_file(path, threads=1, spinning=False), str(path), threads, precision)

    @classmethod
    def from_onnx(
        cls, reference: OnnxEngine, model: str | bytes, threads: int | None = None, precision: str = "auto"
    ) -> OpenVinoEngine:
        """The file ``reference`` was loaded from (``model``: its path or bytes), compiled by OpenVINO."""
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown OpenVINO precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        try:
            import openvino as ov
        except ImportError as e:
            raise ConfigError(
                f"--runtime openvino needs OpenVINO ({e}): {INSTALL}, or grade with --runtime onnx"
            ) from None
        if tcmalloc_loaded():
            raise ConfigError(BESIDE_TCMALLOC)
        wanted = "bf16" if precision == "bf16" or (precision == "auto" and cpu_has_bf16()) else "f32"
        config = {
            "INFERENCE_PRECISION_HINT": wanted,
            "INFERENCE_NUM_THREADS": int(threads) if threads else auto_threads().threads,
            "PERFORMANCE_HINT": "LATENCY",  # one stream on every thread: a batch as soon as possible
        }
        try:
            core = _core(ov)
            compiled = core.compile_model(core.read_model(model), "CPU", config)
            ran = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        except Exception as e:  # OpenVINO raises its own RuntimeError subtypes
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise CheckpointError(
                f"OpenVINO cannot compile {reference.name} ({first}): grade it with --runtime onnx"
            ) from None
        return cls(reference, compiled, _precision_name(ran))

    def outputs(self, images: np.ndarray, batch_size: int | None = None) -> Outputs:
        """Run the graph on uint8 images (N, S, S, 3), ``batch_size`` (default ``CPU_BATCH``) at a time."""
        batch_size = batch_size or CPU_BATCH
        images = self.checked(images)
        request = self.compiled.create_infer_request()  # one per call: callers may grade from several threads
        chunks = []
        try:
            for i in range(0, len(images), batch_size):
                result = request.infer({0: np.ascontiguousarray(images[i : i + batch_size])})
                # copies: the request reuses its output buffers for the next batch
                chunks.append({name: np.array(result[port]) for name, port in self._ports.items()})
        except Exception as e:  # a graph that compiles but cannot grade these images
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise CheckpointError(
                f"{self.name} failed to grade the images in OpenVINO ({first}): grade it with --runtime onnx"
            ) from None
        joined = {key: np.concatenate([c[key] for c in chunks]) for key in self._ports}
        typed = {key: value.astype(_OUTPUT_TYPES.get(key, bool)) for key, value in joined.items()}
        return Outputs(
            typed["score"],
            typed.get("probabilities"),
            typed.get("native"),
            typed.get("grade"),
            typed.get("grade_set"),
        )


@functools.cache
def _core(ov):
    """The process's one OpenVINO Core: it loads the CPU plugin once, and outlives every compiled model
    (a model whose Core is gone may crash when it is freed)."""
    return ov.Core()


def _port(compiled, name: str):
    """The compiled model's output named ``name`` (OpenVINO may give an output several names)."""
    for port in compiled.outputs:
        if name in port.get_names():
            return port
    raise CheckpointError(f"OpenVINO lost the output {name!r} of the graph: grade it with --runtime onnx")


def _precision_name(hint: str) -> str:
    """ "bf16" or "fp32" from OpenVINO's INFERENCE_PRECISION_HINT as text (``str(ov.Type.bf16)`` is
    ``<Type: 'bfloat16'>``; older releases said ``bf16``).

    >>> _precision_name("<type: 'bfloat16'>"), _precision_name("bf16"), _precision_name("<type: 'float32'>")
    ('bf16', 'bf16', 'fp32')
    """
    return "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32"
