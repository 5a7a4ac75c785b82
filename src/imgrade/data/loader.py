"""One entry point for every supported image set: detect the format, read it, validate it."""

from __future__ import annotations

from pathlib import Path

from imgrade.config import DataConfig
from imgrade.core.errors import DataError
from imgrade.data import csv_manifest, cucumber9, folders
from imgrade.data.cache import DecodeOptions
from imgrade.data.images import resize_square
from imgrade.data.imageset import ImageSet

FORMATS = "a CUCUMBER-9 folder or .tar.gz, a folder of class folders, or a CSV manifest (path,target[,split])"


def detect_format(path: str | Path) -> str:
    """'cucumber9', 'folders' or 'csv' for ``path``; DataError naming the path otherwise."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {path} does not exist: pass {FORMATS} with --data")
    if path.is_file() and path.suffix.lower() == ".csv":
        return "csv"
    if cucumber9.is_cucumber9(path):
        return "cucumber9"
    if path.is_dir() and folders.is_class_folders(path):
        return "folders"
    if path.is_dir():
        raise DataError(f"{path} holds no batches.meta and no class folders with images: pass {FORMATS}")
    raise DataError(f"{path} is not a supported data file: pass {FORMATS}")


def load_dataset(cfg: DataConfig, grades: list[str] | None = None) -> ImageSet:
    """Read the set named by ``cfg.path`` at ``cfg.image_size``.

    Args:
        cfg: the data settings.
        grades: the grade order to map onto (a trained run's grades, when evaluating on new
            data); defaults to ``cfg.grades`` and then the set's own order.
    """
    if cfg.path is None:
        raise DataError("no data given: pass --data with " + FORMATS)
    grades = grades if grades is not None else cfg.grades
    kind = detect_format(cfg.path)
    if kind == "cucumber9":
        order = grades if grades is not None else cucumber9.DEFAULT_GRADE_ORDER
        imageset = cucumber9.read_cucumber9(cfg.path, grade_order=tuple(order), view=cfg.view)
        if imageset.image_size != (cfg.image_size, cfg.image_size):
            imageset = _resize(imageset, cfg.image_size)
    elif kind == "folders":
        decode = DecodeOptions.from_config(cfg.workers, cfg.cache)
        imageset = folders.read_class_folders(cfg.path, cfg.image_size, grade_order=grades, decode=decode)
    else:
        decode = DecodeOptions.from_config(cfg.workers, cfg.cache)
        continuous = {"auto": None, "ordinal": False, "continuous": True}[cfg.target]
        imageset = csv_manifest.read_csv_manifest(
            cfg.path,
            cfg.image_size,
            grade_order=grades,
            target_column=cfg.target_column,
            continuous=continuous,
            decode=decode,
        )
    if len(imageset) == 0:
        raise DataError(f"{cfg.path} holds no usable images: check the path and the grade names")
    return imageset


def _resize(imageset: ImageSet, size: int) -> ImageSet:
    import numpy as np

    imageset.images = np.stack([resize_square(im, size) for im in imageset.images])
    return imageset
