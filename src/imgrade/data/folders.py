"""Class folders: one folder per grade (a CSV manifest is read by data/csv_manifest.py).

root/                      root/
  grades.txt (optional)      grades.txt (optional)
  2L/ a.jpg b.jpg            train/ 2L/ ... L/ ...
  L/  c.png                  val/   2L/ ... L/ ...
  ...                        test/  2L/ ... L/ ...
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from imgrade.core.errors import DataError
from imgrade.core.io import read_regular_file
from imgrade.data.cache import DecodeOptions, decode_images
from imgrade.data.cucumber9 import DEFAULT_GRADE_ORDER as CUCUMBER9_GRADES
from imgrade.data.images import IMAGE_EXTENSIONS, list_images, natural_sort_key, one_line
from imgrade.data.imageset import SPLIT_NAMES, ImageSet
from imgrade.data.resize import Resize

GRADES_FILE = "grades.txt"
"""Integer targets spanning more grades than this are refused as ordinal (one name per grade)."""


def is_class_folders(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder whose subfolders hold images (train/val/test ones included)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return any(_holds_images(folder) for folder in _subfolders(path))


def read_grades_file(path: str | os.PathLike) -> list[str]:
    """The grade names in a grades.txt: one per line, best (first) grade first.

    Blank lines and lines starting with ``#`` are ignored; names are stripped of spaces.

    Raises:
        DataError: the file is missing, unreadable, not a regular file, names no grade, or names one twice.
    """
    path = Path(path)
    try:
        # never a FIFO or a device; -sig: Windows editors start with a BOM
        text = read_regular_file(path, one_line(str(path))).decode("utf-8-sig")
    except FileNotFoundError as error:
        raise DataError(f"{path} does not exist: write one grade name per line, best grade first") from error
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path} cannot be read as UTF-8 text ({error}): save it as plain UTF-8 text") from error
    names: list[str] = []
    first_line: dict[str, int] = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if name in first_line:
            raise DataError(
                f"{path} names grade {name!r} twice (lines {first_line[name]} and {line_number}): "
                "keep one line per grade"
            )
        first_line[name] = line_number
        names.append(name)
    if not names:
        raise DataError(f"{path} names no grades: write one grade name per line, best grade first")
    return names


def infer_grade_order(names: list[str]) -> list[str]:
    """A grade order for folder names when none is given: CUCUMBER-9's if it fits, else natural sort.

    Natural sort is only a guess (alphabetical order rarely ranks grades): users should write a
    grades.txt, best grade first.

    >>> infer_grade_order(["S", "2L", "M"])
    ['2L', 'M', 'S']
    >>> infer_grade_order(["grade10", "grade2", "grade1"])
    ['grade1', 'grade2', 'grade10']
    """
    if names and set(names) <= set(CUCUMBER9_GRADES):
        return [grade for grade in CUCUMBER9_GRADES if grade in names]
    return sorted(set(names), key=natural_sort_key)


def resolve_grade_order(root: str | os.PathLike, grade_order: list[str] | None = None) -> tuple[list[str], str]:
    """The grade order for class folders at ``root`` and where it came from.

    Returns:
        (grade names best first, origin) where origin is "given", "grades.txt", "CUCUMBER-9" or
        "natural sort"; "natural sort" means the order is a guess the user should fix by adding
        ``root/grades.txt``.
    """
    root = Path(root)
    if grade_order is not None:
        return list(grade_order), "given"
    if (root / GRADES_FILE).exists() and not (root / GRADES_FILE).is_dir():  # a FIFO too: refused as it is read
        return read_grades_file(root / GRADES_FILE), GRADES_FILE
    names = sorted({folder.name for _, folder in _grade_folders(root)})
    order = infer_grade_order(names)
    return order, "CUCUMBER-9" if set(names) <= set(CUCUMBER9_GRADES) else "natural sort"


def read_class_folders(
    root: str | os.PathLike,
    resize: Resize | int,
    grade_order: list[str] | None = None,
    decode: DecodeOptions | None = None,
) -> ImageSet:
    """Read a folder with one subfolder of images per grade (optionally under train/val/test).

    The grade order is ``grade_order`` if given, else ``root/grades.txt``, else the CUCUMBER-9
    order when every folder is a CUCUMBER-9 grade, else the natural sort of the folder names
    (a guess: see ``resolve_grade_order``). A grade with no folder has 0 images. With train/,
    val/ or test/ subfolders (train/ required) each holds the grade folders and sets the split.
    Images are ordered by split, then grade, then natural path order; ids are paths relative to
    ``root``. ``decode`` sets the decoding workers and cache (default: this process, no cache).

    Raises:
        DataError: a grade folder not in the order, a folder with no images, an image outside a
            grade folder, an image name that is not a regular file (a FIFO, a device, a socket), a
            corrupt image (naming the file), a bad grades.txt.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder: pass a folder with one subfolder of images per grade")
    order, origin = resolve_grade_order(root, grade_order)
    index = {name: i for i, name in enumerate(order)}
    paths: list[Path] = []
    targets: list[int] = []
    splits: list[str] = []
    for split, folder in _grade_folders(root):
        if folder.name not in index:
            fix = f"add it to {root / GRADES_FILE}" if origin == GRADES_FILE else "add it to --grades"
            raise DataError(
                f"grade folder {folder} is not in the grade order {order} (from {origin}): {fix}, or remove the folder"
            )
        files = list_images(folder, regular_only=True)  # a FIFO or device link fails here, before decoding
        paths += files
        targets += [index[folder.name]] * len(files)
        splits += [split or ""] * len(files)
    # split, then grade, then the natural file order list_images gave (sort is stable)
    split_rank = {"": 0, **{name: i for i, name in enumerate(SPLIT_NAMES)}}
    order_of = sorted(range(len(paths)), key=lambda i: (split_rank[splits[i]], targets[i]))
    paths = [paths[i] for i in order_of]
    return ImageSet(
        images=decode_images(paths, resize, decode),
        targets=np.asarray([targets[i] for i in order_of], dtype=np.float32),
        grade_names=order,
        ids=[path.relative_to(root).as_posix() for path in paths],
        source=f"class folders {root}",
        split=np.asarray([splits[i] for i in order_of]) if any(splits) else None,
    )


def _subfolders(path: Path) -> list[Path]:
    return sorted(
        (child for child in path.iterdir() if child.is_dir() and not child.name.startswith(".")),
        key=lambda child: natural_sort_key(child.name),
    )


def _image_files_in(path: Path) -> list[Path]:
    """Image files directly in ``path`` (not below)."""
    return [
        child
        for child in path.iterdir()
        if child.is_file() and not child.name.startswith(".") and child.suffix.lower() in IMAGE_EXTENSIONS
    ]


def _holds_images(path: Path) -> bool:
    for _folder, subfolders, files in os.walk(path):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        if any(not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS for name in files):
            return True
    return False


def _grade_folders(root: Path) -> list[tuple[str | None, Path]]:
    """(split or None, grade folder) for the layout at ``root``; DataError for a mixed layout."""
    split_folders = [root / name for name in SPLIT_NAMES if (root / name).is_dir()]
    if not split_folders:
        parents: list[tuple[str | None, Path]] = [(None, root)]
    else:
        if not (root / "train").is_dir():
            raise DataError(
                f"{root} has {', '.join(f.name + '/' for f in split_folders)} but no train/: "
                "add train/ with one folder per grade, or move the grade folders up into the root"
            )
        others = [f for f in _subfolders(root) if f.name not in SPLIT_NAMES and _holds_images(f)]
        if others:
            raise DataError(
                f"{root} mixes train/val/test with other image folders ({', '.join(f.name for f in others)}): "
                "move every grade folder inside train/, val/ or test/ (the name must be val, not valid)"
            )
        parents = [(f.name, f) for f in split_folders]
    folders: list[tuple[str | None, Path]] = []
    for split, parent in parents:
        stray = _image_files_in(parent)
        if stray:
            raise DataError(
                f"{stray[0]} is not inside a grade folder: move the images in {parent} into "
                f"{parent}/<grade>/ folders, one per grade"
            )
        grade_folders = _subfolders(parent)
        if not grade_folders:
            raise DataError(f"{parent} has no grade folders: add one subfolder of images per grade")
        folders += [(split, folder) for folder in grade_folders]
    return folders
