"""Photos without grades: the pool ``train --unlabeled`` learns from and ``imgrade suggest`` ranks.

A pool is given as one of:

- a folder: its image files, recursively (the same listing as ``imgrade predict``);
- a CSV file with a header naming a ``path`` column (other columns are ignored, so a CSV
  manifest, the index ``serve --collect`` keeps, or a manifest ``suggest`` wrote all work);
- a text list: one path per line, blank lines and lines starting with ``#`` skipped;
- one image file.

Paths in a CSV or a list are relative to its folder (absolute paths work too). The photos are
checked, decoded and cached exactly like a labelled folder's (:func:`imgrade.data.cache.decode_images`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgrade.core.errors import DataError
from imgrade.core.io import not_regular_file, open_regular_file
from imgrade.data.cache import DecodeOptions, decode_images
from imgrade.data.images import IMAGE_EXTENSIONS, list_images, one_line
from imgrade.data.resize import Resize

LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
"""A file with one of these suffixes is read as a list of paths, one per line."""


@dataclass
class PhotoPool:
    """Photos without grades, decoded to the network's input size."""

    images: np.ndarray
    """(N, S, S, 3) uint8, possibly memory-mapped from the decode cache."""
    ids: list[str]
    """Each photo as the pool names it: its path relative to the folder, or as the CSV or list wrote it."""
    paths: list[Path]
    """Each photo's file."""
    source: str
    """The pool in words, for logs: "folder photos/", "CSV collected.csv", ..."""

    def __len__(self) -> int:
        return len(self.ids)

    def without(self, keep: np.ndarray) -> PhotoPool:
        """The pool limited to the rows where the boolean mask ``keep`` is True."""
        rows = np.flatnonzero(keep)
        return PhotoPool(
            np.asarray(self.images)[rows], [self.ids[i] for i in rows], [self.paths[i] for i in rows], self.source
        )


def list_pool(path: str | os.PathLike) -> tuple[list[Path], list[str], str]:
    """The files of the pool at ``path``, the names the pool gives them, and the pool in words.

    Raises:
        DataError: ``path`` is missing or not a folder, CSV, list or image; a CSV without a
            ``path`` column; a listed photo that is missing or not a regular file (naming the
            row); a pool without photos.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"unlabelled photos {one_line(str(path))} do not exist: pass a folder of photos, a CSV with a path "
            "column, or a text file listing one photo per line"
        )
    if path.is_dir():
        files = list_images(path, regular_only=True)
        return files, [file.relative_to(path).as_posix() for file in files], f"folder {path}"
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return list_images(path, regular_only=True), [path.name], f"photo {path}"
    if suffix == ".csv":
        named = _csv_paths(path)
        kind = "CSV"
    elif suffix in LIST_SUFFIXES:
        named = _list_paths(path)
        kind = "list"
    else:
        raise DataError(
            f"{one_line(str(path))} is not a folder, a .csv or a .txt list of photos: pass one of those "
            "as the unlabelled photos"
        )
    if not named:
        raise DataError(f"{path} names no photos: add one photo per row")
    files = [_checked_file(path, row, text) for row, text in named]
    return files, [text for _, text in named], f"{kind} {path}"


def read_pool(path: str | os.PathLike, resize: Resize | int, decode: DecodeOptions | None = None) -> PhotoPool:
    """List and decode the pool at ``path`` (see :func:`list_pool`) at ``resize``.

    Raises:
        DataError: as :func:`list_pool`, or naming the first photo that cannot be decoded.
    """
    files, ids, source = list_pool(path)
    return PhotoPool(decode_images(files, resize, decode), ids, files, source)


def pixel_digests(images: np.ndarray) -> list[bytes]:
    """A digest of each image's pixels: equal pixels, equal digest.

    >>> a = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    >>> d = pixel_digests(a)
    >>> d[0] == d[1], len(d[0])
    (True, 16)
    """
    return [hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest() for image in images]


def drop_labelled(pool: PhotoPool, labelled: np.ndarray) -> tuple[PhotoPool, int]:
    """``pool`` without the photos whose pixels equal a labelled image's (the same photo given
    twice would teach its own label back); returns the pool and how many were dropped."""
    known = set(pixel_digests(labelled))
    keep = np.asarray([digest not in known for digest in pixel_digests(pool.images)], dtype=bool)
    dropped = int((~keep).sum())
    return (pool.without(keep) if dropped else pool), dropped


def _csv_paths(csv_path: Path) -> list[tuple[int, str]]:
    """(row number, path) for each non-blank row of a CSV with a ``path`` column; rows count from
    1 at the header, as a spreadsheet does."""
    try:
        with (
            open_regular_file(csv_path, one_line(str(csv_path))) as raw,
            io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f,
        ):
            reader = csv.reader(f)
            header = next(reader, None)
            columns = {name.strip().lower(): i for i, name in reversed(list(enumerate(header or [])))}
            if "path" not in columns:
                seen = ", ".join(repr(name) for name in header) if header else "none"
                raise DataError(
                    f"{csv_path} has no path column in its header row (columns seen: {seen}): "
                    "the first row must name a path column"
                )
            at = columns["path"]
            rows = []
            for cells in reader:
                if any(cell.strip() for cell in cells):
                    rows.append((reader.line_num, cells[at].strip() if at < len(cells) else ""))
            return rows
    except UnicodeDecodeError as error:
        raise DataError(f"{csv_path} is not UTF-8 text ({error}): save the CSV as UTF-8") from error
    except csv.Error as error:
        raise DataError(f"{csv_path} is not a valid CSV ({error}): save it as comma-separated text") from error
    except OSError as error:
        raise DataError(f"{csv_path} cannot be read ({error.strerror}): pass a file you can read") from error


def _list_paths(list_path: Path) -> list[tuple[int, str]]:
    """(line number, path) for each line of a list that is neither blank nor a ``#`` comment."""
    try:
        with open_regular_file(list_path, one_line(str(list_path))) as raw:
            text = raw.read().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{list_path} is not UTF-8 text ({error}): save the list as UTF-8") from error
    except OSError as error:
        raise DataError(f"{list_path} cannot be read ({error.strerror}): pass a file you can read") from error
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)]
    return [(number, line) for number, line in lines if line and not line.startswith("#")]


def _checked_file(listing: Path, row: int, text: str) -> Path:
    """The photo a row of ``listing`` names, which must be a regular image file."""
    where = f"{listing} row {row}"
    if not text:
        raise DataError(f"{where}: the path is empty: give the photo's file, relative to {listing.parent}")
    path = Path(text) if Path(text).is_absolute() else listing.parent / text
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        raise DataError(
            f"{where}: photo {one_line(text)} does not exist (looked for {one_line(str(path))}): "
            f"paths are relative to {listing.parent}"
        ) from None
    if not stat.S_ISREG(mode):
        raise DataError(f"{where}: {not_regular_file(f'photo {one_line(text)}', mode, path)}")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DataError(f"{where}: {one_line(text)} is not an image file name: list only photos")
    return path
