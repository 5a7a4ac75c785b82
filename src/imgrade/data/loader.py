"""One entry point for every supported image set: detect the format, read it, validate it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from imgrade.config import DataConfig
from imgrade.core.errors import DataError
from imgrade.core.io import not_regular_file
from imgrade.data import csv_manifest, cucumber9, folders
from imgrade.data.cache import DecodeOptions
from imgrade.data.images import one_line, stored_size
from imgrade.data.imageset import ImageSet
from imgrade.data.resize import Resize


class Reader(NamedTuple):
    """How one data format is recognised at a path and read into an ImageSet."""

    detect: Callable[[Path], bool]
    read: Callable[[DataConfig, list[str] | None], ImageSet]
    """Reads ``cfg.path`` with the grade order given (None: the set's own)."""
    description: str
    """The format as the error messages name it."""


def _read_cucumber9(cfg: DataConfig, grades: list[str] | None) -> ImageSet:
    order = grades if grades is not None else cucumber9.DEFAULT_GRADE_ORDER
    imageset = cucumber9.read_cucumber9(cfg.path, grade_order=tuple(order), view=cfg.view)
    if imageset.image_size != (cfg.image_size, cfg.image_size):
        imageset = _resize(imageset, resize_of(cfg))
    return imageset


def _read_folders(cfg: DataConfig, grades: list[str] | None) -> ImageSet:
    decode = DecodeOptions.from_config(cfg.workers, cfg.cache)
    return folders.read_class_folders(cfg.path, resize_of(cfg), grade_order=grades, decode=decode)


def _is_csv(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".csv"


def _read_csv(cfg: DataConfig, grades: list[str] | None) -> ImageSet:
    decode = DecodeOptions.from_config(cfg.workers, cfg.cache)
    continuous = {"auto": None, "ordinal": False, "continuous": True}[cfg.target]
    return csv_manifest.read_csv_manifest(
        cfg.path,
        resize_of(cfg),
        grade_order=grades,
        target_column=cfg.target_column,
        continuous=continuous,
        decode=decode,
    )


READERS = {
    "cucumber9": Reader(cucumber9.is_cucumber9, _read_cucumber9, "a CUCUMBER-9 folder or .tar.gz"),
    "folders": Reader(folders.is_class_folders, _read_folders, "a folder of class folders"),
    "csv": Reader(_is_csv, _read_csv, "a CSV manifest (path,target[,split])"),
}
"""Every data format by name, in the order they are tried on a path."""


def _or_list(items: list[str]) -> str:
    """Items as a sentence lists them.

    >>> _or_list(["a folder", "a file", "a manifest"])
    'a folder, a file, or a manifest'
    """
    return ", ".join(items[:-1]) + f", or {items[-1]}"


FORMATS = _or_list([reader.description for reader in READERS.values()])
"""The formats, as an error message lists them."""


def detect_format(path: str | Path) -> str:
    """The name of ``path``'s format in ``READERS``; DataError naming the path otherwise."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {path} does not exist: pass {FORMATS} with --data")
    for name, reader in READERS.items():
        if reader.detect(path):
            return name
    if path.is_dir():
        raise DataError(f"{path} holds no batches.meta and no class folders with images: pass {FORMATS}")
    if not path.is_file():  # a FIFO, a device, a socket (links followed)
        raise not_regular_file(one_line(str(path)), path.stat().st_mode, path)
    raise DataError(f"{path} is not a supported data file: pass {FORMATS}")


def load_dataset(cfg: DataConfig, grades: list[str] | None = None) -> ImageSet:
    """Read the set named by ``cfg.path`` at ``cfg.image_size``, resized as ``cfg.resize`` says.

    Args:
        cfg: the data settings.
        grades: the grade order to map onto (a trained run's grades, when evaluating on new
            data); defaults to ``cfg.grades`` and then the set's own order.
    """
    if cfg.path is None:
        raise DataError("no data given: pass --data with " + FORMATS)
    grades = grades if grades is not None else cfg.grades
    imageset = READERS[detect_format(cfg.path)].read(cfg, grades)
    if len(imageset) == 0:
        raise DataError(f"{cfg.path} holds no usable images: check the path and the grade names")
    return imageset


def source_sizes(cfg: DataConfig, imageset: ImageSet) -> np.ndarray:
    """(N, 2) int: the width and height of each of ``imageset``'s images as stored (upright), before
    ``load_dataset`` resized it.

    Folder and CSV images are measured from their files' headers (nothing is decoded).
    CUCUMBER-9 stores square images of one size, read again here to learn it.
    """
    kind = detect_format(cfg.path)
    if kind == "cucumber9":
        order = imageset.grade_names or cucumber9.DEFAULT_GRADE_ORDER
        side = cucumber9.read_cucumber9(cfg.path, grade_order=tuple(order), view=cfg.view).image_size[0]
        return np.full((len(imageset), 2), side, dtype=np.int64)
    # ids are paths relative to the class folders' root, or as the CSV gives them (relative to its folder)
    root = Path(cfg.path) if kind == "folders" else Path(cfg.path).parent
    return np.asarray([stored_size(root / name) for name in imageset.ids], dtype=np.int64).reshape(-1, 2)


def resize_of(cfg: DataConfig) -> Resize:
    """How ``cfg`` turns a photo into the network's square input (``--image-size``, ``--resize``)."""
    return Resize(cfg.image_size, cfg.resize)


def _resize(imageset: ImageSet, resize: Resize) -> ImageSet:
    imageset.images = np.stack([resize(im) for im in imageset.images])
    return imageset
