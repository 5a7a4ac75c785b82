"""CUCUMBER-9 (workpiles, CC BY 4.0): read and write the published batch files, safely.

The files imitate CIFAR-10's "python version" with three twists a CIFAR loader gets wrong:
``data`` holds ONE COLOUR PLANE PER ROW (3 rows per cucumber in prototype 1; 9 in prototype 2:
above R,G,B, below R,G,B, side R,G,B), ``labels`` index ``label_names`` of batches.meta (whose
order differs between prototypes and is not the grade order), and prototype 2 spells the bent
grades BD and BC where prototype 1 says BL and BM. So labels are mapped to grades BY NAME, and the
prototype is read from the rows per cucumber (``num_vis`` says 3072 in both).

The files are Python 2 pickles, which can run code when loaded: they are read with
:func:`imgrade.data.safe_pickle.safe_load_pickle`, which accepts only the numpy globals that
rebuild a uint8 array and refuses anything else.
"""

from __future__ import annotations

import lzma
import math
import re
import tarfile
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from imgrade.core.errors import ConfigError, DataError
from imgrade.core.io import open_regular_file, read_regular_file
from imgrade.data.imageset import ImageSet
from imgrade.data.safe_pickle import as_text, error_line, key_names, safe_load_pickle

DEFAULT_GRADE_ORDER: tuple[str, ...] = ("2L", "L", "M", "S", "2S", "BL", "BM", "BS", "C")
GRADE_ALIASES: dict[str, str] = {"BD": "BL", "BC": "BM"}
VIEWS = ("above", "below", "side")
OTHER = "OTHER"
FOLDER_NAMES = ("cucumber-9-python", "cucumber-9-p2-python")
META_NAME = "batches.meta"
MAX_MEMBER_BYTES = 256 << 20
"""Batch files and archive members bigger than this are refused unread; the largest published batch is 13 MB."""


_BATCH_NAME = re.compile(r"(?:data_batch_(\d+)|test_batch)")
_PROTOTYPE_OF_PLANES = {3: 1, 9: 2}  # colour planes per cucumber -> prototype


def _member_name(member: PurePosixPath) -> str:
    """An archive member's name for messages, on one line: a crafted archive can put line breaks in it."""
    return " ".join(str(member).split())


# ---------------------------------------------------------------------------------------------
# Finding the files


def _meta_folders(folder: Path) -> list[Path]:
    if _is_entry(folder / META_NAME):
        return [folder]
    return [folder / name for name in FOLDER_NAMES if _is_entry(folder / name / META_NAME)]


def _is_entry(path: Path) -> bool:
    """Whether ``path`` is there and is not a folder: a FIFO or a device counts, for the reader to refuse in one line."""
    return path.exists() and not path.is_dir()


def _batch_order(name: str) -> tuple[int, int]:
    match = _BATCH_NAME.fullmatch(name)
    assert match is not None
    return (0, int(match.group(1))) if match.group(1) else (1, 0)


def is_cucumber9(path) -> bool:
    """Whether ``path`` is a CUCUMBER-9 folder (batches.meta in it or in cucumber-9-python/ or
    cucumber-9-p2-python/) or a .tar.gz/.tgz archive with a batches.meta member."""
    path = Path(path)
    if path.is_dir():
        return bool(_meta_folders(path))
    if not (path.is_file() and path.name.endswith((".tar.gz", ".tgz"))):
        return False
    try:
        with tarfile.open(path, "r:*") as tar:
            return any(m.isfile() and PurePosixPath(m.name).name == META_NAME for m in tar)
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError):
        return False


# (batch name, name for messages, function returning the file's bytes)
_BatchFile = tuple[str, str, Callable[[], bytes]]


def _folder_files(folder: Path) -> tuple[str, bytes, list[_BatchFile]]:
    folders = _meta_folders(folder)
    if not folders:
        raise DataError(
            f"no {META_NAME} in {folder} (nor in {' or '.join(FOLDER_NAMES)} inside it): pass the "
            "extracted CUCUMBER-9 folder that holds batches.meta and data_batch_1, or the .tar.gz archive"
        )
    if len(folders) > 1:
        raise DataError(f"{folder} holds both {' and '.join(FOLDER_NAMES)}: pass one of them")
    (folder,) = folders
    batches = sorted(
        (p for p in folder.iterdir() if _BATCH_NAME.fullmatch(p.name) and _is_entry(p)),
        key=lambda p: _batch_order(p.name),
    )
    meta_path = folder / META_NAME
    return str(meta_path), _read_file(meta_path), [(p.name, str(p), partial(_read_file, p)) for p in batches]


def _read_file(path: Path) -> bytes:
    """A batch file's bytes: a regular file of at most MAX_MEMBER_BYTES, never a FIFO or a device."""
    name = " ".join(str(path).split())
    try:
        return read_regular_file(path, name, max_bytes=MAX_MEMBER_BYTES)
    except OSError as e:
        raise DataError(f"{name} cannot be read ({error_line(e)}): check the file and its permissions") from None


def _archive_files(archive: Path) -> tuple[str, bytes, list[_BatchFile]]:
    # one pass over the compressed stream, in memory: never extract anything to disk
    contents: dict[str, bytes] = {}
    try:
        with (
            open_regular_file(archive, " ".join(str(archive).split()), max_bytes=None) as file,
            tarfile.open(fileobj=file, mode="r:*") as tar,
        ):
            for member in tar:
                name = PurePosixPath(member.name)
                if member.isfile() and (name.name == META_NAME or _BATCH_NAME.fullmatch(name.name)):
                    if member.size > MAX_MEMBER_BYTES:
                        raise DataError(
                            f"{archive} member {_member_name(name)} unpacks to {member.size:,} bytes, over the "
                            f"{MAX_MEMBER_BYTES:,} limit (a guard against decompression bombs): download the archive again"
                        )
                    contents[str(name)] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise DataError(
            f"{archive} is not a readable .tar.gz archive or is truncated ({error_line(e)}); "
            "download the archive again, or pass the extracted folder"
        ) from None
    metas = sorted(PurePosixPath(name) for name in contents if PurePosixPath(name).name == META_NAME)
    if not metas:
        raise DataError(
            f"{archive} has no {META_NAME} member: it is not a CUCUMBER-9 archive; download "
            "cucumber-9-python.tar.gz or cucumber-9-p2-python.tar.gz again"
        )
    if len(metas) > 1:
        listed = ", ".join(map(_member_name, metas))
        raise DataError(f"{archive} holds {len(metas)} batches.meta files ({listed}): pass an archive of one set")
    meta = metas[0]
    members = (PurePosixPath(name) for name in contents)
    batches = sorted(
        (p for p in members if p.parent == meta.parent and p.name != META_NAME), key=lambda p: _batch_order(p.name)
    )
    files = [(p.name, f"{archive}:{_member_name(p)}", (lambda key=str(p): contents[key])) for p in batches]
    return f"{archive}:{_member_name(meta)}", contents[str(meta)], files


# ---------------------------------------------------------------------------------------------
# Reading


def _grade_lookup(label_names: list[str], grade_order, keep_other: bool, meta_name: str) -> np.ndarray:
    """Grade index in ``grade_order`` for each label index, -1 for OTHER when it is dropped.

    >>> _grade_lookup(["OTHER", "2L", "BD", "BC"], DEFAULT_GRADE_ORDER, False, "batches.meta")
    array([-1,  0,  5,  6])
    """
    canonical_order = [GRADE_ALIASES.get(name, name) for name in grade_order]
    if not canonical_order or len(set(canonical_order)) != len(canonical_order):
        raise ConfigError(
            f"grade order {list(grade_order)} is empty or names a grade twice: pass each grade once with --grades"
        )
    lookup = []
    for name in label_names:
        grade = GRADE_ALIASES.get(name, name)
        if grade == OTHER and not keep_other:
            lookup.append(-1)
        elif grade in canonical_order:
            lookup.append(canonical_order.index(grade))
        elif grade == OTHER:
            raise DataError(
                f"{meta_name} has OTHER images and keep_other is on, but the grade order {list(grade_order)} "
                "has no OTHER: add OTHER to --grades (e.g. last), or drop those images"
            )
        else:
            raise DataError(
                f"{meta_name} names grade {name!r}, which is not in the grade order {list(grade_order)}: "
                f"pass the order of all its grades with --grades, e.g. --grades {','.join([*grade_order, name])}"
            )
    return np.asarray(lookup, dtype=np.int64)


def _decode_batch(raw: dict, name: str, num_labels: int, meta_name: str) -> tuple[np.ndarray, np.ndarray]:
    """The batch's colour planes (N, planes per cucumber, side, side) and its label indexes (N,)."""
    for key in ("data", "labels"):
        if key not in raw:
            raise DataError(
                f"{name} has no {key!r} entry (it has {key_names(raw)}): it is not a CUCUMBER-9 batch; "
                "download the archive again"
            )
    data = raw["data"]
    try:
        labels = np.asarray(raw["labels"])
    except (ValueError, TypeError):  # a ragged list
        labels = np.asarray(None)
    if labels.size == 0:
        labels = labels.astype(np.int64)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"labels in {name} are not a list of integers ({labels.dtype}, shape {labels.shape}); "
            "download the archive again"
        )
    if not isinstance(data, np.ndarray) or data.ndim != 2:
        seen = f"shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(
            f"data in {name} is {seen}, not a 2-D uint8 array (one colour plane per row); download the archive again"
        )
    if data.dtype != np.uint8:
        if data.dtype.kind not in "iu" or (data.size and (data.min() < 0 or data.max() > 255)):
            raise DataError(f"data in {name} is {data.dtype}, not uint8 pixels; download the archive again")
        data = data.astype(np.uint8)
    rows, length = data.shape
    num_images = len(labels)
    if rows % 3:
        raise DataError(
            f"data in {name} has {rows} rows, not a multiple of 3: CUCUMBER-9 stores one colour plane "
            "(R, G or B) per row; the file is damaged, download the archive again"
        )
    if rows not in (3 * num_images, 9 * num_images):
        raise DataError(
            f"data in {name} has {rows} rows for {num_images} labels: expected {3 * num_images} (3 colour planes "
            f"per cucumber, prototype 1) or {9 * num_images} (9, prototype 2); download the archive again"
        )
    side = math.isqrt(length)
    if side == 0 or side * side != length:
        raise DataError(
            f"rows in {name} hold {length} values, not a square image (32x32 = 1024): it is not a CUCUMBER-9 batch"
        )
    if num_images and (labels.min() < 0 or labels.max() >= num_labels):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DataError(
            f"labels in {name} use index {bad} but {meta_name} names only {num_labels} grades: the batch and "
            "batches.meta come from different sets; download the archive again"
        )
    planes = data.reshape(num_images, rows // max(num_images, 1), side, side)
    return planes, labels.astype(np.int64)


def read_cucumber9(path, grade_order=DEFAULT_GRADE_ORDER, view: str = "above", keep_other: bool = False) -> ImageSet:
    """Read CUCUMBER-9 prototype 1 or 2 from the extracted folder or the .tar.gz archive.

    Args:
        path: the folder holding batches.meta (or its parent), or the .tar.gz archive (read in
            memory, never extracted).
        grade_order: grade names in rank order; labels are mapped onto it by name (BD = BL,
            BC = BM). The returned targets are indexes into it.
        view: "above", "below", "side" (prototype 2; prototype 1 has only "above") or "all":
            three images per cucumber, ids suffixed ":above" etc., one group id per cucumber.
        keep_other: keep prototype 2's OTHER pictures (then OTHER must be in ``grade_order``);
            by default they are dropped and counted in ``dropped``.

    Returns:
        An ImageSet with uint8 (N, H, W, 3) RGB images, ids like ``data_batch_1:17`` (the index
        within the batch file), ``split`` "test" for test_batch images and "" for the others
        (None when there is no test_batch, as in prototype 2), ``dropped`` in images (e.g.
        ``{"OTHER": 12}``, three per cucumber with view "all"), and ``groups`` only for "all".
        ``source`` names the prototype and the path, e.g. "CUCUMBER-9 prototype 1 (folder ...)", or
        "synthetic cucumbers in CUCUMBER-9 prototype 1 format (folder ...)" for a generated set.

    Raises:
        DataError: a missing or damaged file, labels that do not match batches.meta, a grade
            missing from ``grade_order``, or a view prototype 1 does not have.
        ConfigError: an unknown view or a grade order that repeats a grade.

    >>> import tempfile
    >>> from imgrade.data.cucumber9_writer import write_cucumber9
    >>> folder = write_cucumber9(tempfile.mkdtemp() + "/cucumber-9-python",
    ...     np.zeros((4, 32, 32, 3), np.uint8), np.array([0, 1, 5, 1]),
    ...     ["2L", "BM", "BL", "M", "S", "L", "2S", "BS", "C"], num_batches=2)
    >>> images = read_cucumber9(folder)
    >>> images.targets, images.ids[2], images.image_size
    (array([0., 6., 1., 6.], dtype=float32), 'data_batch_2:0', (32, 32))
    """
    if view not in (*VIEWS, "all"):
        raise ConfigError(f"view {view!r} is not one of {', '.join(VIEWS)}, all: pass --view above")
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"{path} does not exist: pass the extracted CUCUMBER-9 folder (cucumber-9-python) or the .tar.gz archive"
        )
    if path.is_dir():
        kind, (meta_name, meta_bytes, files) = "folder", _folder_files(path)
    elif path.name == META_NAME:
        kind, (meta_name, meta_bytes, files) = "folder", _folder_files(path.parent)
    else:
        kind, (meta_name, meta_bytes, files) = "archive", _archive_files(path)
    meta = safe_load_pickle(meta_bytes, meta_name)
    synthetic = meta.get("synthetic") is True  # written by imgrade's generator; the published files lack the key
    names = meta.get("label_names")
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, (str, bytes)) for name in names):
        raise DataError(
            f"{meta_name} has no label_names list of grade names (it has {key_names(meta)}): it is not a CUCUMBER-9 "
            "batches.meta; download the archive again"
        )
    label_names = [str(as_text(name)) for name in meta["label_names"]]
    grade_of_label = _grade_lookup(label_names, grade_order, keep_other, meta_name)
    if not files:
        raise DataError(f"no data_batch_<k> or test_batch beside {meta_name}: download the archive again")

    images, targets, ids, is_test, groups = [], [], [], [], []
    num_dropped = num_groups = 0
    shape = first_name = None
    views = range(len(VIEWS)) if view == "all" else [VIEWS.index(view)]
    for batch_name, name, load in files:
        planes, labels = _decode_batch(safe_load_pickle(load(), name), name, len(label_names), meta_name)
        if len(labels) == 0:
            continue
        if shape is None:
            shape, first_name = planes.shape[1:], name
            if shape[0] == 3 and view != "above":
                raise DataError(
                    f"{path} is CUCUMBER-9 prototype 1 (3 colour planes per cucumber in {name}), which has "
                    f"only the 'above' view, not {view!r}: use --view above"
                )
        elif planes.shape[1:] != shape:
            raise DataError(
                f"{name} has {planes.shape[1]} planes of {planes.shape[2]}x{planes.shape[3]} per cucumber but "
                f"{first_name} has {shape[0]} of {shape[1]}x{shape[2]}: the files come from different sets"
            )
        grades = grade_of_label[labels]
        keep = np.flatnonzero(grades >= 0)
        num_dropped += (len(labels) - len(keep)) * len(views)
        # (kept, views, H, W, 3): planes 3v..3v+2 are view v's R, G, B
        kept = np.stack([planes[keep, 3 * v : 3 * v + 3].transpose(0, 2, 3, 1) for v in views], axis=1)
        images.append(kept.reshape(-1, *kept.shape[2:]))
        targets.append(np.repeat(grades[keep], len(views)))
        suffixes = [f":{VIEWS[v]}" for v in views] if view == "all" else [""]
        ids += [f"{batch_name}:{i}{suffix}" for i in keep for suffix in suffixes]
        is_test.append(np.full(len(keep) * len(views), batch_name == "test_batch"))
        groups.append(np.repeat(np.arange(num_groups, num_groups + len(keep)), len(views)))
        num_groups += len(keep)
    if shape is None:
        raise DataError(f"the batches beside {meta_name} hold no images: download the archive again")

    has_test = any(name == "test_batch" for name, _, _ in files)
    prototype = f"CUCUMBER-9 prototype {_PROTOTYPE_OF_PLANES[shape[0]]}"
    all_test = np.concatenate(is_test)
    return ImageSet(
        images=np.ascontiguousarray(np.concatenate(images)),
        targets=np.concatenate(targets).astype(np.float32),
        grade_names=list(grade_order),
        ids=ids,
        source=f"synthetic cucumbers in {prototype} format ({kind} {path})"
        if synthetic
        else f"{prototype} ({kind} {path})",
        # "<U5" is wide enough for later "train" assignments
        split=np.where(all_test, "test", "").astype("<U5") if has_test else None,
        dropped={OTHER: int(num_dropped)} if num_dropped else {},
        groups=np.concatenate(groups).astype(np.int64) if view == "all" else None,
    )
