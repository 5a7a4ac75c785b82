"""The Python API: ``Grader.load("model.onnx" or "runs/p1").grade(items)`` -> :class:`Grade` records.

Items are what a program has at hand: paths of image files, Pillow images, the bytes of an image
file, or arrays of pixels of any size and mode. Each becomes pixels exactly as ``imgrade predict``
and ``imgrade serve`` decode a photo (``imgrade.data.images``), so all three give the same grades.
With an ``.onnx`` file nothing here imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image

from imgrade.core.errors import CheckpointError, DataError
from imgrade.data.images import Resize, array_pixels, decode_image, image_pixels, load_image
from imgrade.runtime import load_grader
from imgrade.runtime.grading import Engine, Grade

__all__ = ["Grade", "Grader", "Item"]

Item = str | os.PathLike | bytes | Image.Image | np.ndarray
"""One thing to grade: an image file's path, a Pillow image, an image file's bytes, or pixels
((H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA; uint8, or floats in [0, 1])."""

MODEL_SUFFIXES = (".onnx", ".pt")
"""The model files a grader loads; any other file is refused before a runtime is imported."""


class Grader:
    """A trained model that grades photos. Build it with :meth:`load`.

    >>> grader = Grader.load("model.onnx")  # doctest: +SKIP
    >>> grader.grade("photo.jpg")  # doctest: +SKIP
    Grade(source='photo.jpg', score=2.13, name='M', index=2, grade_set=['L', 'M'], probabilities={...})
    """

    def __init__(self, backend: Engine, model: str):
        self.backend = backend
        """The runtime that runs the network (``imgrade.runtime.load_grader``): uint8 arrays of
        ``image_size`` in, records out; its ``resize`` says how a photo becomes such an array."""
        self.model = model
        """The model file or run folder it was loaded from."""

    @classmethod
    def load(
        cls, model: str | os.PathLike, *, device: str = "auto", tta: bool | None = None, runtime: str = "auto"
    ) -> Grader:
        """Load an ``.onnx`` file written by ``imgrade export`` (ONNX Runtime, no torch), or a run
        folder or ``.pt`` checkpoint written by ``imgrade train`` (needs PyTorch).

        Args:
            model: the file or folder.
            device: where a run's network runs: "auto" (a GPU when there is one), "cpu", "cuda", ...
                An .onnx file runs on the CPU.
            tta: grade each photo as the average of a few views of it; None: as the model was
                calibrated (an .onnx file does so when it was exported with ``--tta``).
            runtime: "auto", "torch", "onnx" or "openvino" (an .onnx file in OpenVINO: bf16 on a CPU
                with bf16 units); auto picks as ``imgrade.runtime.load_grader`` says.

        Raises:
            CheckpointError: ``model`` is missing or not a model imgrade wrote.
            ConfigError: a run without PyTorch installed, a ``tta`` the model cannot do, or a
                runtime that cannot read ``model`` or is not installed.
        """
        path = Path(model)
        if path.is_file() and path.suffix.lower() not in MODEL_SUFFIXES:
            raise CheckpointError(
                f"{path} is not a model file: pass an .onnx file written by `imgrade export`, "
                "or a run folder (or its .pt checkpoint) written by `imgrade train`"
            )
        return cls(load_grader(path, runtime=runtime, device=device, tta=tta), str(model))

    @property
    def grades(self) -> list[str] | None:
        """The grade names in order (None for a continuous target)."""
        return list(self.backend.grade_names) if self.backend.grade_names is not None else None

    @property
    def image_size(self) -> int:
        """The side in pixels every photo is resized to before the network sees it."""
        return self.backend.image_size

    @property
    def resize_mode(self) -> str:
        """How a photo that is not square is made square, as the model was trained: squash, crop or pad."""
        return self.backend.resize_mode

    def describe(self) -> dict[str, Any]:
        """The model card ``GET /v1/model`` serves: grades, decision rule, calibration, input."""
        return self.backend.describe()

    @overload
    def grade(self, items: list | tuple, *, batch_size: int | None = None) -> list[Grade]: ...
    @overload
    def grade(self, items: Item, *, batch_size: int | None = None) -> Grade: ...

    def grade(self, items, *, batch_size=None):
        """Grade one item, or a list of them.

        Args:
            items: one :data:`Item`, or a list or tuple of them (any mix).
            batch_size: images per forward pass (default: 32 on a CPU, 256 on a GPU).

        Returns:
            One :class:`Grade` for one item; a list of them, in order, for a list.

        Raises:
            DataError: naming the first item that is missing, not an image, or of another type.
        """
        many = isinstance(items, list | tuple)
        batch = list(items) if many else [items]
        if not batch:
            return []
        sources = [_source(item, i) for i, item in enumerate(batch)]
        resize = self.backend.resize
        images = np.stack([_pixels(item, source, resize) for item, source in zip(batch, sources)])
        results = self.backend.results(sources, self.backend.outputs(images, batch_size=batch_size))
        return results if many else results[0]

    def __repr__(self) -> str:
        return f"Grader({self.model!r}, runtime={self.backend.runtime!r}, grades={self.grades})"


def _source(item: Any, index: int) -> str:
    """How a :class:`Grade` names its item: a path as given, a Pillow image's file, else ``item N``."""
    if isinstance(item, str | os.PathLike):
        return os.fspath(item)
    filename = getattr(item, "filename", None) if isinstance(item, Image.Image) else None
    return str(filename) if filename else f"item {index}"


def _pixels(item: Any, source: str, resize: Resize) -> np.ndarray:
    """(S, S, 3) uint8 for one item (S = ``resize.size``), decoded as ``imgrade predict`` decodes a file."""
    if isinstance(item, str | os.PathLike):
        return load_image(item, resize)
    if isinstance(item, bytes | bytearray | memoryview):
        return decode_image(bytes(item), f"{source} (bytes)", resize)
    if isinstance(item, Image.Image):
        return image_pixels(item, source, resize)
    if isinstance(item, np.ndarray):
        if item.ndim == 4:
            raise DataError(
                f"{source} is an array of shape {item.shape}, a batch: pass list(array) to grade each image"
            )
        return array_pixels(item, source, resize)
    raise DataError(
        f"{source} has the type {type(item).__name__}: pass an image file's path, a Pillow image, "
        "an image file's bytes or a numpy array of pixels"
    )
